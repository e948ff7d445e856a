--[[
mark-delivery-failed: a notifier could not deliver resend number `rc`; if that
is still the live code, void it so Verify answers DELIVERY_FAILED.

KEYS[1]   destination hash   <prefix>:{<shard>}:d:<tenant>:<handle>
KEYS[2]   outbox stream      <prefix>:{<shard>}:outbox

ARGV[1]   tenant
ARGV[2]   verification id
ARGV[3]   resend count the failed delivery carried
ARGV[4]   reason
ARGV[5]   trace id
ARGV[6]   client id

Returns 1 when a live code was voided, else 0.
]]

--- @include "clock"
--- @include "outbox"

local dest, vid = KEYS[1], ARGV[2]

local p = redis.call('HGET', dest, 'id:' .. vid)
if not p then return 0 end

local v = redis.call('HMGET', dest, p .. ':st', p .. ':e', p .. ':r', p .. ':ch', 'dd', 'md')
local now = now_ms()
-- A later resend's code is not voided by an older delivery's failure.
if (v[1] or '') ~= '' or now >= tonumber(v[2]) or tonumber(v[3]) ~= tonumber(ARGV[3]) then return 0 end

redis.call('HSET', dest, p .. ':st', 'f')
emit({ stream = KEYS[2], vid = vid, tn = ARGV[1], p = p, ch = v[4], md = v[6], dd = v[5],
  ts = now, tr = ARGV[5], cl = ARGV[6] }, 'delivery_failed', 'reason', ARGV[4])
return 1
