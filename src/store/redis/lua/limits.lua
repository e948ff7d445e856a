--[[
limits: every limit that applies to a Send at one destination; spends and
changes nothing (src/store/README.md, "Limits").

KEYS[1]   destination hash   <prefix>:{<shard>}:d:<tenant>:<handle>

ARGV[1]   JSON object, read by name (includes/args.lua):
  purpose             str
  sends_count         pos  send budget per destination
  sends_window_ms     pos
  failures_count      pos  failure budget per destination
  failures_window_ms  pos

Returns {send remaining, send reset after ms, send retry after ms,
         cooldown remaining (0|1), cooldown retry after ms,
         lock remaining, lock reset after ms, lock retry after ms}
]]

--- @include "args"
--- @include "clock"
--- @include "gcra"
--- @include "fields"

local A, bad = script_args('limits', {
  purpose = 'str', sends_count = 'pos', sends_window_ms = 'pos', failures_count = 'pos', failures_window_ms = 'pos' })
if not A then return bad end

local p = A.purpose
local v = redis.call('HMGET', KEYS[1], 'ls', 'lf', 'lk', p .. ':st', p .. ':c')
local c = counters_read(v[5])
local now = now_ms()

local send_left, send_reset, send_retry = gcra_state(v[1], now, A.sends_count, A.sends_window_ms)

-- The cooldown applies only while the purpose's verification is live.
local cooldown = 0
-- (A missing `st` is '', live; a missing `c` means there is no verification.)
if (v[4] or '') == '' and c and now < c.e then cooldown = math.max(0, c.ra - now) end

local fail_left, fail_reset = gcra_state(v[2], now, A.failures_count, A.failures_window_ms)
local locked_for = math.max(0, (tonumber(v[3]) or 0) - now)
if locked_for > 0 then fail_left = 0 end

return {send_left, send_reset, send_retry,
  cooldown == 0 and 1 or 0, cooldown,
  fail_left, math.max(fail_reset, locked_for), locked_for}
