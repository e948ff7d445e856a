--[[
limits: every limit that applies to a Send at one destination; spends and
changes nothing (src/store/README.md, "Limits").

KEYS[1]   destination hash   <prefix>:{<shard>}:d:<tenant>:<handle>

ARGV[1]   purpose
ARGV[2]   send budget count
ARGV[3]   send budget window ms
ARGV[4]   failure budget count
ARGV[5]   failure budget window ms

Returns {send remaining, send reset after ms, send retry after ms,
         cooldown remaining (0|1), cooldown retry after ms,
         lock remaining, lock reset after ms, lock retry after ms}
]]

--- @include "clock"
--- @include "gcra"
--- @include "fields"

local p = ARGV[1]
local v = redis.call('HMGET', KEYS[1], 'ls', 'lf', 'lk', p .. ':st', p .. ':c')
local c = counters_read(v[5])
local now = now_ms()

local send_left, send_reset, send_retry = gcra_state(v[1], now, tonumber(ARGV[2]), tonumber(ARGV[3]))

-- The cooldown applies only while the purpose's verification is live.
local cooldown = 0
-- (A missing `st` is '', live; a missing `c` means there is no verification.)
if (v[4] or '') == '' and c and now < c.e then cooldown = math.max(0, c.ra - now) end

local fail_left, fail_reset = gcra_state(v[2], now, tonumber(ARGV[4]), tonumber(ARGV[5]))
local locked_for = math.max(0, (tonumber(v[3]) or 0) - now)
if locked_for > 0 then fail_left = 0 end

return {send_left, send_reset, send_retry,
  cooldown == 0 and 1 or 0, cooldown,
  fail_left, math.max(fail_reset, locked_for), locked_for}
