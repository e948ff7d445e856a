--[[
caller-budgets: the budgets of whoever is asking (per client IP, per tenant,
per country prefix), checked together and spent together or not at all
(src/store/README.md, "Caller budgets"). They live under the tenant's hash
tag, apart from destinations, so a Send runs this script and then `issue`;
a Send refused by `issue` has still spent its caller budgets, as an attempt.

KEYS[i]     budget i           <prefix>:{t:<tenant>}:b:<name>:<subject>   (i = 1..n)

ARGV[1]     JSON object, read by name (includes/args.lua):
  mode      str   "spend" | "peek"
  budgets   list  one [count, window ms] per key, in KEYS order

Returns
  spend: {'ok'} | {'refused', i, retry after ms}   (i: the first budget with nothing left; nothing spent)
  peek:  {remaining_1, reset after ms_1, retry after ms_1, ..., remaining_n, ...}
]]

--- @include "args"
--- @include "clock"
--- @include "gcra"

local A, bad = script_args('caller-budgets', { mode = 'str', budgets = 'list' })
if not A then return bad end
local n = #KEYS
if A.mode ~= 'spend' and A.mode ~= 'peek' then return redis.error_reply('ARGS caller-budgets: mode is not spend or peek') end
if #A.budgets ~= n then return redis.error_reply('ARGS caller-budgets: budgets does not match KEYS') end
for i = 1, n do
  local b = A.budgets[i]
  if type(b) ~= 'table' or not ARG_KINDS.pos(b[1]) or not ARG_KINDS.pos(b[2]) then
    return redis.error_reply('ARGS caller-budgets: budgets[' .. i .. '] is not [count, window ms]')
  end
end

local now = now_ms()
local stored = redis.call('MGET', unpack(KEYS))

if A.mode == 'peek' then
  local out = {}
  for i = 1, n do
    local left, reset, retry = gcra_state(stored[i], now, A.budgets[i][1], A.budgets[i][2])
    out[#out + 1] = left
    out[#out + 1] = reset
    out[#out + 1] = retry
  end
  return out
end

local tats = {}
for i = 1, n do
  local allowed, tat, retry = gcra_spend(stored[i], now, A.budgets[i][1], A.budgets[i][2])
  if not allowed then return {'refused', i, retry} end
  tats[i] = tat
end
for i = 1, n do
  -- A budget key is worthless once its tat has passed: it expires then.
  redis.call('SET', KEYS[i], tats[i], 'PXAT', math.ceil(tats[i]))
end
return {'ok'}
