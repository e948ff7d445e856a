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
  (fewest remaining, on a tie the smaller limit; its limit) with the larger retry of both, and as reset
  the time until every one of them has that limit left again (or is whole, if smaller): the answer's
  "remaining back to limit". A long-window budget's full refill is not that time (probe 57: a one-hour
  lock read as eight hours).
  While the purpose's live verification has an idempotency key and MAX_REPLACED_SENDS replaced ones
  still answer theirs (includes/kept-answers.lua), a Send waits (issue.lua step 4): send has 0 remaining
  and retries no sooner than the first of those, or the live verification, expires (probe 71: "allowed"
  was answered, and the Send refused).
]]

--- @include "args"
--- @include "clock"
--- @include "gcra"
--- @include "fields"
--- @include "kept-answers"

local A, bad = script_args('limits', {
  purpose = 'str', sends_count = 'pos', sends_window_ms = 'pos', purpose_sends = 'budget',
  failures_count = 'pos', failures_window_ms = 'pos', purpose_failures = 'budget', daily_failures = 'budget' })
if not A then return bad end

local p = A.purpose
local v = redis.call('HMGET', KEYS[1], 'ls', 'lf', 'lk', p .. ':st', p .. ':c', p .. ':ls', p .. ':lf', p .. ':lk', 'ld', p .. ':id', p .. ':ik')
local c = counters_read(v[5])
local now = now_ms()

-- A budget's state: {remaining, reset after, retry after, limit, used ms, window ms, locked for ms}.
-- How long until it has `n` left again (at most its count: then it is whole), a lock's time included.
local function back_to(s, n)
  n = math.min(n, s[4])
  return math.max(0, math.ceil(s[5] - s[6] + n * s[6] / s[4] - GCRA_EPS), s[7])
end

-- The binding one of a list of states (fewest remaining, on a tie the smaller limit): its remaining and
-- limit, the latest retry, and the time until every one has that limit left.
local function binding(states)
  local pick = states[1]
  for i = 2, #states do
    local s = states[i]
    if s[1] < pick[1] or (s[1] == pick[1] and s[4] < pick[4]) then pick = s end
  end
  local reset, retry = 0, 0
  for i = 1, #states do
    reset = math.max(reset, back_to(states[i], pick[4]))
    retry = math.max(retry, states[i][3])
  end
  return {pick[1], reset, retry, pick[4]}
end

local function send_state(stored, count, window)
  local left, reset, retry = gcra_state(stored, now, count, window)
  return {left, reset, retry, count, reset, window, 0}
end
local sends = {send_state(v[1], A.sends_count, A.sends_window_ms)}
if A.purpose_sends[1] then sends[2] = send_state(v[6], A.purpose_sends[1], A.purpose_sends[2]) end
local send = binding(sends)
if c and v[10] and v[11] and now < c.e then
  local _, answering = kept_answers(KEYS[1], now)
  if #answering >= MAX_REPLACED_SENDS then
    local wait = math.min(c.e, unpack(answering)) - now
    send = {0, math.max(send[2], wait), math.max(send[3], wait), send[4]}
  end
end

-- The cooldown applies only while the purpose's verification is live.
local cooldown = 0
-- (A missing `st` is '', live; a missing `c` means there is no verification.)
if (v[4] or '') == '' and c and now < c.e then cooldown = math.max(0, c.ra - now) end

local function lock_state(stored, lock, count, window)
  local left, reset = gcra_state(stored, now, count, window)
  local locked_for = math.max(0, (tonumber(lock) or 0) - now)
  if locked_for > 0 then left = 0 end
  return {left, math.max(reset, locked_for), locked_for, count, reset, window, locked_for}
end
local locks = {lock_state(v[2], v[3], A.failures_count, A.failures_window_ms)}
if A.daily_failures[1] then locks[#locks + 1] = lock_state(v[9], v[3], A.daily_failures[1], A.daily_failures[2]) end
if A.purpose_failures[1] then locks[#locks + 1] = lock_state(v[7], v[8], A.purpose_failures[1], A.purpose_failures[2]) end
local lock = binding(locks)

return {send[1], send[2], send[3],
  cooldown == 0 and 1 or 0, cooldown,
  lock[1], lock[2], lock[3],
  send[4], lock[4]}
