--[[
delivery-report: a notifier reported the delivery of resend number `rc` of a verification
(src/events/status-consumer.ts; the status's MAC is already checked).
  failed:    if that is still the live code, void it, so Verify answers DELIVERY_FAILED.
  delivered: audited once (`delivered`, with the verification's purpose, channel and masked
             destination): a repeat of the report (an at-least-once notifier, or a signed status
             copied back onto the topic) and a report of an older resend are not news.
A report about a verification gone, or no longer its purpose's current one, changes nothing.

KEYS[1]   destination hash   <prefix>:{<shard>}:d:<tenant>:<handle>
KEYS[2]   outbox stream      <prefix>:{<shard>}:outbox

ARGV[1]   JSON object, read by name (includes/args.lua):
  outcome        str  "failed" | "delivered"
  tenant         str
  id             str  verification id
  resend_count   int  the resend count the delivery carried
  reason         str  failed: the notifier's reason; delivered: its adapter
  trace_id       str
  client_id      str

State: `<p>:dl` = the highest resend count reported delivered (issue clears it).
Returns 1 when a live code was voided (failed) or the delivery audited (delivered), else 0.
]]

--- @include "args"
--- @include "clock"
--- @include "outbox"
--- @include "fields"

local A, bad = script_args('delivery-report', {
  outcome = 'str', tenant = 'str', id = 'str', resend_count = 'int', reason = 'str', trace_id = 'str', client_id = 'str' })
if not A then return bad end
if A.outcome ~= 'failed' and A.outcome ~= 'delivered' then return redis.error_reply('ARGS delivery-report: outcome is not failed or delivered') end

local dest, vid = KEYS[1], A.id

local p = redis.call('HGET', dest, id_field(vid))
if not p then return 0 end

local v = redis.call('HMGET', dest, p .. ':st', p .. ':c', 'dd', 'md', p .. ':id', p .. ':dl')
-- The purpose's current verification must be the one named.
if not v[5] or code_id(v[5]) ~= vid or not v[2] then return 0 end
local c = counters_read(v[2])
local now = now_ms()
local ev = { stream = KEYS[2], vid = vid, tn = A.tenant, p = p, ch = c.ch, md = v[4], dd = digest_of(dest, v[3]),
  ts = now, tr = A.trace_id, cl = A.client_id }

if A.outcome == 'delivered' then
  local last = tonumber(v[6])
  if A.resend_count > c.r or (last and last >= A.resend_count) then return 0 end
  redis.call('HSET', dest, p .. ':dl', A.resend_count)
  emit(ev, 'delivered', 'reason', A.reason)
  return 1
end

-- A later resend's code is not voided by an older delivery's failure.
if (v[1] or '') ~= '' or now >= c.e or c.r ~= A.resend_count then return 0 end
redis.call('HSET', dest, p .. ':st', 'f')
emit(ev, 'delivery_failed', 'reason', A.reason)
return 1
