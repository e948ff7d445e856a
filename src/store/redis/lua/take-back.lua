--[[
take-back: a Send or Resend that caller-budgets spent for, then issue / resend refused or
replayed (nothing delivered): what it took from shared budgets goes back, and its prefix
counts with it (src/store/README.md, "Caller budgets" and "Prefix guard").

KEYS[i]     budget i   <prefix>:{t:<tenant>}:b:<name>:<subject>   (i = 1..n: the ones to give back)
KEYS[n+j]   prefix j   <prefix>:{t:<tenant>}:pg:<digits>:<digest>  (j = 1..prefixes, coarsest first)

ARGV[1]   JSON object, read by name (includes/args.lua):
  budgets    list  [count, window ms] for each budget key
  prefixes   int   prefix-guard keys after the budgets (0: none)
  rule       list  with prefixes: [min sends, min verified percent, window ms, buckets, cool-off ms]; else []

Returns the transitions, flattened: {j, 'released', 'NOT_SENT', sent, verified, ...}
]]

--- @include "args"
--- @include "clock"
--- @include "gcra"
--- @include "prefix-guard"

local A, bad = script_args('take-back', { budgets = 'list', prefixes = 'int', rule = 'list' })
if not A then return bad end
local n = #KEYS - A.prefixes
if n < 0 then return redis.error_reply('ARGS take-back: prefixes are more than KEYS') end
local budgets_bad = gcra_budgets_error('take-back', A.budgets, n)
if budgets_bad then return budgets_bad end
if A.prefixes > 0 and not pg_rule_ok(A.rule) then
  return redis.error_reply('ARGS take-back: rule is not [min sends, percent, window ms, buckets, cool-off ms]')
end

local now, out = now_ms(), {}
for i = 1, n do
  local tat = gcra_give_back(redis.call('GET', KEYS[i]), now, A.budgets[i][1], A.budgets[i][2])
  if tat == nil then
    redis.call('DEL', KEYS[i])
  else
    redis.call('SET', KEYS[i], tat, 'PXAT', math.ceil(tat))
  end
end

local rule = A.rule
if A.prefixes > 0 then
  local b = pg_bucket(now, rule)
  for j = 1, A.prefixes do
    local key = KEYS[n + j]
    -- Only this bucket's count is taken back: a send counted in an older bucket stays (rarely, one too many).
    if (tonumber(redis.call('HGET', key, 's' .. b)) or 0) > 0 then redis.call('HINCRBY', key, 's' .. b, -1) end
    -- A suspension stands only while the counts that made it do: concurrent Sends each counted before
    -- issue refused all but one (a cooldown, a replay) suspended a whole block for one code (probe 26).
    local st = pg_read(j, key, now, rule)
    if st.held > now and not pg_collapsed(st, rule) then
      pg_release(st, 'NOT_SENT', out)
      pg_save(st, now, rule, nil, nil)
    end
  end
end
return pg_flatten({}, out)
