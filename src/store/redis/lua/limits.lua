--[[
limits: every limit that applies to a Send at one destination; spends and
changes nothing (src/store/README.md, "Limits").

KEYS[1]   destination hash   <prefix>:{<shard>}:d:<tenant>:<handle>

ARGV[1]   JSON object, read by name (includes/args.lua):
  purpose             str
  sends_count         pos  send budget per destination, across purposes (state `ls`)
  sends_window_ms     pos
  purpose_sends       budget [] or [count, window ms]: the purpose's own send budget (`<p>:ls`)
  failures_count      pos  failure budget per destination, across purposes (`lf`, lock `lk`)
  failures_window_ms  pos
  purpose_failures    budget [] or [count, window ms]: the purpose's own failure budget (`<p>:lf`, lock `<p>:lk`)
  daily_failures      budget [] or [count, window ms]: the long-window failure budget (`ld`, lock `lk`)

Returns {send remaining, send reset after ms, send retry after ms,
         cooldown remaining (0|1), cooldown retry after ms,
         lock remaining, lock reset after ms, lock retry after ms,
         send limit, lock limit}
  The lock is the binding one of the global failure budget and the long-window one; where the purpose
  has a budget of its own, each of send and lock is the binding one of the two
  (fewest remaining, on a tie the smaller limit; its limit) with the larger reset and retry of both.
]]

--- @include "args"
--- @include "clock"
--- @include "gcra"
--- @include "fields"

local A, bad = script_args('limits', {
  purpose = 'str', sends_count = 'pos', sends_window_ms = 'pos', purpose_sends = 'budget',
  failures_count = 'pos', failures_window_ms = 'pos', purpose_failures = 'budget', daily_failures = 'budget' })
if not A then return bad end

local p = A.purpose
local v = redis.call('HMGET', KEYS[1], 'ls', 'lf', 'lk', p .. ':st', p .. ':c', p .. ':ls', p .. ':lf', p .. ':lk', 'ld')
local c = counters_read(v[5])
local now = now_ms()

-- {remaining, reset after, retry after, limit}: the binding one of a global state and the purpose's own.
local function binding(global, own)
  if not own then return global end
  local pick = global
  if own[1] < global[1] or (own[1] == global[1] and own[4] < global[4]) then pick = own end
  return {pick[1], math.max(global[2], own[2]), math.max(global[3], own[3]), pick[4]}
end

local function send_state(stored, count, window)
  local left, reset, retry = gcra_state(stored, now, count, window)
  return {left, reset, retry, count}
end
local send = send_state(v[1], A.sends_count, A.sends_window_ms)
if A.purpose_sends[1] then send = binding(send, send_state(v[6], A.purpose_sends[1], A.purpose_sends[2])) end

-- The cooldown applies only while the purpose's verification is live.
local cooldown = 0
-- (A missing `st` is '', live; a missing `c` means there is no verification.)
if (v[4] or '') == '' and c and now < c.e then cooldown = math.max(0, c.ra - now) end

local function lock_state(stored, lock, count, window)
  local left, reset = gcra_state(stored, now, count, window)
  local locked_for = math.max(0, (tonumber(lock) or 0) - now)
  if locked_for > 0 then left = 0 end
  return {left, math.max(reset, locked_for), locked_for, count}
end
local lock = lock_state(v[2], v[3], A.failures_count, A.failures_window_ms)
if A.daily_failures[1] then lock = binding(lock, lock_state(v[9], v[3], A.daily_failures[1], A.daily_failures[2])) end
if A.purpose_failures[1] then lock = binding(lock, lock_state(v[7], v[8], A.purpose_failures[1], A.purpose_failures[2])) end

return {send[1], send[2], send[3],
  cooldown == 0 and 1 or 0, cooldown,
  lock[1], lock[2], lock[3],
  send[4], lock[4]}
