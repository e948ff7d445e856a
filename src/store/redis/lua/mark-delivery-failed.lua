--[[
mark-delivery-failed: a notifier could not deliver resend number `rc`; if that
is still the live code, void it so Verify answers DELIVERY_FAILED.

KEYS[1]   destination hash   <prefix>:{<shard>}:d:<tenant>:<handle>
KEYS[2]   outbox stream      <prefix>:{<shard>}:outbox

ARGV[1]   JSON object, read by name (includes/args.lua):
  tenant         str
  id             str  verification id
  resend_count   int  the resend count the failed delivery carried
  reason         str
  trace_id       str
  client_id      str

Returns 1 when a live code was voided, else 0.
]]

--- @include "args"
--- @include "clock"
--- @include "outbox"
--- @include "fields"

local A, bad = script_args('mark-delivery-failed', {
  tenant = 'str', id = 'str', resend_count = 'int', reason = 'str', trace_id = 'str', client_id = 'str' })
if not A then return bad end

local dest, vid = KEYS[1], A.id

local p = redis.call('HGET', dest, id_field(vid))
if not p then return 0 end

local v = redis.call('HMGET', dest, p .. ':st', p .. ':c', 'dd', 'md', p .. ':id')
-- The purpose's current verification must be the one named.
if not v[5] or code_id(v[5]) ~= vid or not v[2] then return 0 end
local c = counters_read(v[2])
local now = now_ms()
-- A later resend's code is not voided by an older delivery's failure.
if (v[1] or '') ~= '' or now >= c.e or c.r ~= A.resend_count then return 0 end

redis.call('HSET', dest, p .. ':st', 'f')
emit({ stream = KEYS[2], vid = vid, tn = A.tenant, p = p, ch = c.ch, md = v[4], dd = digest_of(dest, v[3]),
  ts = now, tr = A.trace_id, cl = A.client_id }, 'delivery_failed', 'reason', A.reason)
return 1
