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
--- @include "fields"

local dest, vid = KEYS[1], ARGV[2]

local p = redis.call('HGET', dest, id_field(vid))
if not p then return 0 end

local v = redis.call('HMGET', dest, p .. ':st', p .. ':c', 'dd', 'md')
local c = counters_read(v[2])
local now = now_ms()
-- A later resend's code is not voided by an older delivery's failure.
if (v[1] or '') ~= '' or now >= c.e or c.r ~= tonumber(ARGV[3]) then return 0 end

redis.call('HSET', dest, p .. ':st', 'f')
emit({ stream = KEYS[2], vid = vid, tn = ARGV[1], p = p, ch = c.ch, md = v[4], dd = digest_text(v[3], vid),
  ts = now, tr = ARGV[5], cl = ARGV[6] }, 'delivery_failed', 'reason', ARGV[4])
return 1
