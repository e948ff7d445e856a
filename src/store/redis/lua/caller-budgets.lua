--[[
caller-budgets: the budgets of whoever is asking (per client IP, per tenant,
per country prefix), checked together and spent together or not at all
(src/store/README.md, "Caller budgets"). They live under the tenant's hash
tag, apart from destinations, so a Send runs this script and then `issue`;
a Send refused by `issue` has still spent its caller budgets, as an attempt.

KEYS[i]     budget i           <prefix>:{t:<tenant>}:b:<name>:<subject>   (i = 1..n)

ARGV[1]     "spend" | "peek"
ARGV[2i]    budget i count
ARGV[2i+1]  budget i window ms

Returns
  spend: {'ok'} | {'refused', i, retry after ms}   (i: the first budget with nothing left; nothing spent)
  peek:  {remaining_1, reset after ms_1, retry after ms_1, ..., remaining_n, ...}
]]

--- @include "clock"
--- @include "gcra"

local now = now_ms()
local n = #KEYS
local stored = redis.call('MGET', unpack(KEYS))

if ARGV[1] == 'peek' then
  local out = {}
  for i = 1, n do
    local left, reset, retry = gcra_state(stored[i], now, tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1]))
    out[#out + 1] = left
    out[#out + 1] = reset
    out[#out + 1] = retry
  end
  return out
end

local tats = {}
for i = 1, n do
  local allowed, tat, retry = gcra_spend(stored[i], now, tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1]))
  if not allowed then return {'refused', i, retry} end
  tats[i] = tat
end
for i = 1, n do
  -- A budget key is worthless once its tat has passed: it expires then.
  redis.call('SET', KEYS[i], tats[i], 'PXAT', math.ceil(tats[i]))
end
return {'ok'}
