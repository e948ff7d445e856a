--[[
prefix-outcome: after the fact, for the prefixes one code was counted against
(src/store/README.md, "Prefix guard"): a verification, which may lift a
suspension the prefix has verified its way out of, or a send taken back
(counted by caller-budgets, then refused or replayed by issue / resend).

KEYS[i]   prefix i           <prefix>:{t:<tenant>}:pg:<digits>:<digest>   (coarsest first)

ARGV[1]   JSON object, read by name (includes/args.lua):
  outcome   str   "verified" | "unsent"
  rule      list  [min sends, min verified percent, window ms, buckets, cool-off ms]

Returns the transitions, flattened: {i, 'released', 'VERIFIED' | 'NOT_SENT', sent, verified, ...}
('NOT_SENT': with the send taken back, the counts no longer show the collapse that suspended it)
]]

--- @include "args"
--- @include "clock"
--- @include "prefix-guard"

local A, bad = script_args('prefix-outcome', { outcome = 'str', rule = 'list' })
if not A then return bad end
if A.outcome ~= 'verified' and A.outcome ~= 'unsent' then return redis.error_reply('ARGS prefix-outcome: outcome is not verified or unsent') end
if not pg_rule_ok(A.rule) then return redis.error_reply('ARGS prefix-outcome: rule is not [min sends, percent, window ms, buckets, cool-off ms]') end

local rule, now, out = A.rule, now_ms(), {}
local b = pg_bucket(now, rule)
for i = 1, #KEYS do
  if A.outcome == 'unsent' then
    -- Only this bucket's count is taken back: a send counted in an older bucket stays (rarely, one too many).
    if (tonumber(redis.call('HGET', KEYS[i], 's' .. b)) or 0) > 0 then redis.call('HINCRBY', KEYS[i], 's' .. b, -1) end
    -- A suspension stands only while the counts that made it do: concurrent Sends each counted before
    -- issue refused all but one (a cooldown, a replay) suspended a whole block for one code (probe 26).
    local st = pg_read(i, KEYS[i], now, rule)
    if st.held > now and not pg_collapsed(st, rule) then
      pg_release(st, 'NOT_SENT', out)
      pg_save(st, now, rule, nil, nil)
    end
  else
    local st = pg_read(i, KEYS[i], now, rule)
    st.verified = st.verified + 1
    if st.held > 0 and pg_healthy(st, rule) then pg_release(st, 'VERIFIED', out) end
    pg_save(st, now, rule, nil, b)
  end
end
return pg_flatten({}, out)
