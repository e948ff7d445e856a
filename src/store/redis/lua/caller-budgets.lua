--[[
caller-budgets: the budgets of whoever is asking (per client IP, per tenant,
per country prefix), checked together and spent together or not at all
(src/store/README.md, "Caller budgets"), and the call's idempotency key bound
with them (README "Idempotency keys"). They live under the tenant's hash
tag, apart from destinations, so a Send runs this script and then `issue`;
a Send refused by `issue` has still spent its caller budgets, as an attempt.
A Send or Resend to a phone also brings the number's prefix-guard hashes
(README "Prefix guard"), checked after the budgets and counted with them.
The key is bound only when the budgets allow the call: a refused call writes
nothing, so refusals cannot fill Redis with keys.

KEYS[i]     budget i           <prefix>:{t:<tenant>}:b:<name>:<subject>   (i = 1..n)
KEYS[n+j]   prefix j           <prefix>:{t:<tenant>}:pg:<digits>:<digest>   (j = 1..prefixes, coarsest first)
KEYS[last]  with a claim: the idempotency record   <prefix>:{t:<tenant>}:ik:<method>:<key digest>

ARGV[1]     JSON object, read by name (includes/args.lua):
  mode       str   "spend" | "peek"
  budgets    list  one [count, window ms] per budget key, in KEYS order
  prefixes   int   prefix-guard keys after the budgets (0: none)
  rule       list  with prefixes: [min sends, min verified percent, window ms, buckets, cool-off ms]; else []
  claim      map   spend only: parameter name -> keyed digest of its value, for the idempotency record
                   (the last key); {} for a call without a key
  retain_ms  int   with a claim: how long the record is kept after its first use; else 0

Returns
  spend: {'reused', name, ...}                           (the key was first used with other parameters: the
                                                          names that differ, sorted; nothing spent or written)
         {'ok', 0, 0, transitions...}                    (the key, if any, is bound now or was already)
         {'refused', i, retry after ms, transitions...}   (i: the first budget with nothing left, 0: the prefix
                                                          guard; nothing spent, counted or bound)
         {'repeat', i, retry after ms, transitions...}    (refused as above, but the key is already bound to these
                                                          same parameters: a retry of a call that got through, whose
                                                          answer may have been lost; only a replay of that call may
                                                          be answered, by the script that keeps it)
         transitions: {prefix j, 'suspended' | 'released', reason, sent, verified} flattened
  peek:  {remaining_1, reset after ms_1, retry after ms_1, ..., remaining_n, ...}, then with prefixes the
         guard's {remaining, reset after ms, retry after ms}
]]

--- @include "args"
--- @include "clock"
--- @include "gcra"
--- @include "prefix-guard"

local A, bad = script_args('caller-budgets', {
  mode = 'str', budgets = 'list', prefixes = 'int', rule = 'list', claim = 'map', retain_ms = 'int',
})
if not A then return bad end
local claiming = next(A.claim) ~= nil
if claiming and (A.mode ~= 'spend' or A.retain_ms < 1) then
  return redis.error_reply('ARGS caller-budgets: a claim needs mode spend and retain_ms')
end
local n = #KEYS - A.prefixes - (claiming and 1 or 0)
if n < 0 then return redis.error_reply('ARGS caller-budgets: prefixes (and the claim) are more than KEYS') end
if A.prefixes > 0 and not pg_rule_ok(A.rule) then
  return redis.error_reply('ARGS caller-budgets: rule is not [min sends, percent, window ms, buckets, cool-off ms]')
end
if A.mode ~= 'spend' and A.mode ~= 'peek' then return redis.error_reply('ARGS caller-budgets: mode is not spend or peek') end
local budgets_bad = gcra_budgets_error('caller-budgets', A.budgets, n)
if budgets_bad then return budgets_bad end

local now = now_ms()
local stored = {}
if n > 0 then stored = redis.call('MGET', unpack(KEYS, 1, n)) end
local rule, prefixes = A.rule, {}
for j = 1, A.prefixes do prefixes[j] = pg_read(j, KEYS[n + j], now, rule) end

if A.mode == 'peek' then
  local out = {}
  for i = 1, n do
    local left, reset, retry = gcra_state(stored[i], now, A.budgets[i][1], A.budgets[i][2])
    out[#out + 1] = left
    out[#out + 1] = reset
    out[#out + 1] = retry
  end
  if A.prefixes > 0 then
    local left, reset, retry = pg_state(prefixes, now, rule)
    out[#out + 1] = left
    out[#out + 1] = reset
    out[#out + 1] = retry
  end
  return out
end

-- The idempotency key first: a key first used with other parameters is the
-- caller's mistake to fix, answered before any budget is spent or refused.
local claim_key = claiming and KEYS[#KEYS] or nil
local bind = false
if claiming then
  local was = redis.call('HGETALL', claim_key)
  if #was == 0 then
    bind = true
  else
    local bound, differ = {}, {}
    for i = 1, #was, 2 do bound[was[i]] = was[i + 1] end
    for name, value in pairs(A.claim) do
      if bound[name] ~= value then differ[#differ + 1] = name end
    end
    for name in pairs(bound) do
      if A.claim[name] == nil then differ[#differ + 1] = name end
    end
    if #differ > 0 then
      table.sort(differ)
      local out = {'reused'}
      for i = 1, #differ do out[#out + 1] = differ[i] end
      return out
    end
  end
end

-- A refusal of a retry (the key bound to these same parameters) says so: the
-- first call may have got through and lost its answer on the way back.
local refused = (claiming and not bind) and 'repeat' or 'refused'

local tats = {}
for i = 1, n do
  local allowed, tat, retry = gcra_spend(stored[i], now, A.budgets[i][1], A.budgets[i][2])
  if not allowed then return {refused, i, retry} end
  tats[i] = tat
end
-- The prefix guard last: its refusal spends no budget and counts no send (releases it found stay).
local transitions = {}
if A.prefixes > 0 then
  local allowed, retry = pg_decide(prefixes, now, rule, transitions)
  if not allowed then
    for _, st in ipairs(prefixes) do pg_save(st, now, rule, nil, nil) end
    return pg_flatten({refused, 0, retry}, transitions)
  end
end
for i = 1, n do
  -- A budget key is worthless once its tat has passed: it expires then.
  redis.call('SET', KEYS[i], tats[i], 'PXAT', math.ceil(tats[i]))
end
if A.prefixes > 0 then pg_count_sent(prefixes, now, rule, transitions) end
if bind then
  local set = {}
  for name, value in pairs(A.claim) do
    set[#set + 1] = name
    set[#set + 1] = value
  end
  redis.call('HSET', claim_key, unpack(set))
  redis.call('PEXPIRE', claim_key, A.retain_ms)
end
return pg_flatten({'ok', 0, 0}, transitions)
