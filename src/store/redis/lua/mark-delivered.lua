--[[
mark-delivered: a notifier delivered resend number `rc` of a verification. Audited once
(`delivered`, with the verification's purpose, channel and masked destination): a repeat
of the report (an at-least-once notifier, or a signed status copied back onto the topic)
and a report of an older resend are not news, nor one about a verification gone.

KEYS[1]   destination hash   <prefix>:{<shard>}:d:<tenant>:<handle>
KEYS[2]   outbox stream      <prefix>:{<shard>}:outbox

ARGV[1]   JSON object, read by name (includes/args.lua):
  tenant         str
  id             str  verification id
  resend_count   int  the resend count the delivery carried
  reason         str  the notifier's adapter
  trace_id       str
  client_id      str

State: `<p>:dl` = the highest resend count reported delivered (issue clears it).
Returns 1 when audited, else 0.
]]

--- @include "args"
--- @include "clock"
--- @include "outbox"
--- @include "fields"

local A, bad = script_args('mark-delivered', {
  tenant = 'str', id = 'str', resend_count = 'int', reason = 'str', trace_id = 'str', client_id = 'str' })
if not A then return bad end

local dest, vid = KEYS[1], A.id

local p = redis.call('HGET', dest, id_field(vid))
if not p then return 0 end

local v = redis.call('HMGET', dest, p .. ':id', p .. ':c', 'dd', 'md', p .. ':dl')
-- The purpose's current verification must be the one named.
if not v[1] or code_id(v[1]) ~= vid or not v[2] then return 0 end
local c = counters_read(v[2])
local last = tonumber(v[5])
if A.resend_count > c.r or (last and last >= A.resend_count) then return 0 end

redis.call('HSET', dest, p .. ':dl', A.resend_count)
emit({ stream = KEYS[2], vid = vid, tn = A.tenant, p = p, ch = c.ch, md = v[4], dd = digest_of(dest, v[3]),
  ts = now_ms(), tr = A.trace_id, cl = A.client_id }, 'delivered', 'reason', A.reason)
return 1
