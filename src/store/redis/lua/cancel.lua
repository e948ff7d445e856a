--[[
cancel: end a pending verification (src/store/README.md, "Cancel"). Its code
never verifies after this, Resend finds it finished, and notifiers are told to
drop a delivery they have not made (`delivery_canceled`, then audit `canceled`).
Canceling a canceled verification changes nothing and writes no event.

KEYS[1]   destination hash   <prefix>:{<shard>}:d:<tenant>:<handle>
KEYS[2]   outbox stream      <prefix>:{<shard>}:outbox

ARGV[1]   JSON object, read by name (includes/args.lua):
  tenant      str
  id          str  verification id
  trace_id    str
  client_id   str

Returns
  {'canceled', <state tuple of includes/state.lua>}   canceled now
  {'canceled_before', <state tuple>}                   canceled by an earlier call (nothing changed)
  {'finished', <state tuple>}                          verified, locked by its own attempts, expired
                                                       or delivery failed (held by the destination's or
                                                       the purpose's lock, it is canceled)
  {'not_found'}
]]

--- @include "args"
--- @include "clock"
--- @include "outbox"
--- @include "fields"
--- @include "state"

local A, bad = script_args('cancel', { tenant = 'str', id = 'str', trace_id = 'str', client_id = 'str' })
if not A then return bad end

local dest, vid = KEYS[1], A.id
local p = redis.call('HGET', dest, id_field(vid))
if not p then return {'not_found'} end

local v = redis.call('HMGET', dest, p .. ':st', p .. ':c', 'dd', 'md', p .. ':id')
-- The purpose's current verification must be the one asked about.
if not v[5] or code_id(v[5]) ~= vid or not v[2] then return {'not_found'} end
local st, c = v[1] or '', counters_read(v[2])
local now = now_ms()
local function answer(kind)
  local reply = state_reply(dest, p, now)
  table.insert(reply, 1, kind)
  return reply
end
if st == 'c' then return answer('canceled_before') end
-- Finished: verified, delivery failed, expired, or locked by its own attempts. A verification held
-- only by a lock with an end (the destination's `lk`, the purpose's `<p>:lk`) is not: GetVerification
-- shows it LOCKED, but once the lock ends its code verifies again, so it is canceled like a pending one
-- (probe 89: refused as finished, its code then verified after the lock).
if st ~= '' or now >= c.e or c.a >= c.m then return answer('finished') end

redis.call('HSET', dest, p .. ':st', 'c', p .. ':ct', now)
-- Only a Resend would need them.
redis.call('HDEL', dest, p .. ':lc', p .. ':mt')

local ev = { stream = KEYS[2], vid = vid, tn = A.tenant, p = p, ch = c.ch, md = v[4], dd = digest_of(dest, v[3]),
  ts = now, tr = A.trace_id, cl = A.client_id }
emit(ev, 'delivery_canceled')
emit(ev, 'canceled')
return answer('canceled')
