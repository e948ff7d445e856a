--[[
prefix-verified: after the fact, for the prefixes one code was counted against
(src/store/README.md, "Prefix guard"): it was verified, which may lift a
suspension the prefix has verified its way out of. (A send taken back:
take-back.lua.)

KEYS[i]   prefix i           <prefix>:{t:<tenant>}:pg:<digits>:<digest>   (coarsest first)

ARGV[1]   JSON object, read by name (includes/args.lua):
  rule      list  [min sends, min verified percent, window ms, buckets, cool-off ms]

Returns the transitions, flattened: {i, 'released', 'VERIFIED', sent, verified, ...}
]]

--- @include "args"
--- @include "clock"
--- @include "prefix-guard"

local A, bad = script_args('prefix-verified', { rule = 'list' })
if not A then return bad end
if not pg_rule_ok(A.rule) then return redis.error_reply('ARGS prefix-verified: rule is not [min sends, percent, window ms, buckets, cool-off ms]') end

local rule, now, out = A.rule, now_ms(), {}
local b = pg_bucket(now, rule)
for i = 1, #KEYS do
  local st = pg_read(i, KEYS[i], now, rule)
  st.verified = st.verified + 1
  if st.held > 0 and pg_healthy(st, rule) then pg_release(st, 'VERIFIED', out) end
  pg_save(st, now, rule, nil, b)
end
return pg_flatten({}, out)
