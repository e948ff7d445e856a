--[[
describe: what a verification id leads to, without touching it.

KEYS[1]   destination hash   <prefix>:{<shard>}:d:<tenant>:<handle>

ARGV[1]   JSON object, read by name (includes/args.lua):
  id            str   verification id
  resend        bool  for a Resend: also the sealed destination (the service opens a number: its country's budget,
                      the phone rules in force, the prefixes a prefix-guard event names) and what resend.lua
                      would refuse now from the verification's own state, so that a Resend it refuses spends no
                      caller budget (resend.lua decides again, and is what counts)

Returns {purpose, channel, context, prefix refs, test (0|1)}, then for a Resend {sealed destination (base64),
refusal ('' | 'finished' | 'DESTINATION_LOCKED' | 'RESEND_COOLDOWN' | 'MAX_RESENDS'), retry after ms},
or nil when the id is unknown at this destination.
]]

--- @include "args"
--- @include "clock"
--- @include "fields"
--- @include "base64"

local A, bad = script_args('describe', { id = 'str', resend = 'bool' })
if not A then return bad end

local p = redis.call('HGET', KEYS[1], id_field(A.id))
if not p then return false end
local f = redis.call('HMGET', KEYS[1], p .. ':c', p .. ':cx', p .. ':pg', p .. ':td', p .. ':id')
-- The purpose's current verification must be the one asked about.
if not f[5] or code_id(f[5]) ~= A.id or not f[1] then return false end
local c = counters_read(f[1])
local out = {p, c.ch, f[2] or '', f[3] or '', f[4] and 1 or 0}
if A.resend then
  local r = redis.call('HMGET', KEYS[1], 'sb', 'sb2', p .. ':st', 'lk', p .. ':lk')
  out[6] = sealed_text(r[1], r[2])
  -- resend.lua's checks of the verification's own state, in its order (its send budget is left to it).
  local now = now_ms()
  local lk = math.max(tonumber(r[4]) or 0, tonumber(r[5]) or 0)
  local refusal, retry = '', 0
  if (r[3] or '') ~= '' or now >= c.e then refusal = 'finished'
  elseif lk > now then refusal, retry = 'DESTINATION_LOCKED', lk - now
  elseif now < c.ra then refusal, retry = 'RESEND_COOLDOWN', c.ra - now
  elseif c.r >= c.mr then refusal, retry = 'MAX_RESENDS', c.e - now
  end
  out[7], out[8] = refusal, retry
end
return out
