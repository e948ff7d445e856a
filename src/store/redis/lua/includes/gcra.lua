-- GCRA budgets (README "Budgets"): `count` events per `window` ms, state is
-- the theoretical arrival time `tat` as stored (ms; fractional, because
-- window / count rarely divides; Redis stores Lua numbers with 17 digits, so
-- it round-trips exactly). GCRA_EPS absorbs the rounding of that division so
-- a budget of `count` allows exactly `count`. memory/gcra.ts is the twin.
local GCRA_EPS = 1e-6

local function gcra_tat(stored, now)
  local tat = tonumber(stored)
  if tat == nil or tat < now then return now end
  return tat
end

-- A script's budgets argument: n entries of [count, window ms]. An error reply naming the script, else nil.
-- (Scripts that call it include "args" first.)
local function gcra_budgets_error(script, budgets, n)
  if #budgets ~= n then return redis.error_reply('ARGS ' .. script .. ': budgets does not match KEYS') end
  for i = 1, n do
    local b = budgets[i]
    if type(b) ~= 'table' or not ARG_KINDS.pos(b[1]) or not ARG_KINDS.pos(b[2]) then
      return redis.error_reply('ARGS ' .. script .. ': budgets[' .. i .. '] is not [count, window ms]')
    end
  end
  return nil
end

-- Spend one. Returns allowed, the tat to store (nil when refused), retry after ms.
local function gcra_spend(stored, now, count, window)
  local next_tat = gcra_tat(stored, now) + window / count
  if next_tat - now <= window + GCRA_EPS then return true, next_tat, 0 end
  return false, nil, math.ceil(next_tat - now - window)
end

-- Give one back (a spend whose call then delivered nothing). Returns the tat to store, nil when the
-- budget is whole again (its key can go).
local function gcra_give_back(stored, now, count, window)
  local tat = tonumber(stored)
  if tat == nil or tat - window / count <= now then return nil end
  return tat - window / count
end

-- Spend nothing. Returns remaining, reset after ms, retry after ms.
local function gcra_state(stored, now, count, window)
  local interval = window / count
  local used = gcra_tat(stored, now) - now
  local remaining = math.floor((window - used) / interval + GCRA_EPS)
  remaining = math.max(0, math.min(count, remaining))
  local retry = 0
  if used + interval > window + GCRA_EPS then retry = math.ceil(used + interval - window) end
  return remaining, math.ceil(used), retry
end

-- The send budgets of a destination (README "Budgets"): the global one (state `stored`, `count` per
-- `window`) and, when `own` is a budget ({count, window ms}; {} for none), the purpose's own (state
-- `own_stored`). A GCRA state is only meaningful at one rate, so each keeps its own. All or nothing:
-- returns allowed, the two tats to store (the second nil without `own`), and when refused nothing to
-- store and the larger retry of the refusing ones.
local function gcra_spend_both(stored, count, window, own_stored, own, now)
  local ok, tat, retry = gcra_spend(stored, now, count, window)
  local own_ok, own_tat, own_retry = true, nil, 0
  if own[1] then own_ok, own_tat, own_retry = gcra_spend(own_stored, now, own[1], own[2]) end
  if ok and own_ok then return true, tat, own_tat, 0 end
  return false, nil, nil, math.max(retry, own_retry)
end
