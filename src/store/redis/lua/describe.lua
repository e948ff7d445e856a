--[[
describe: what a verification id leads to, without touching it.

KEYS[1]   destination hash   <prefix>:{<shard>}:d:<tenant>:<handle>

ARGV[1]   JSON object, read by name (includes/args.lua):
  id            str   verification id
  resend        bool  for a Resend: also the sealed destination (the service opens a number: its country's budget,
                      the phone rules in force, the prefixes a prefix-guard event names) and what resend.lua
                      would refuse now, so that a Resend it refuses spends no caller budget (resend.lua decides
                      again, and is what counts)
  sends         budget for a Resend, the destination's send budget (state `ls`) as resend.lua is given it; else []
  purpose_sends map   for a Resend, the purposes with a send budget of their own (state `<p>:ls`): purpose ->
                      "<count>,<window ms>"; else {}

Returns {purpose, channel, context, prefix refs, test (0|1)}, then for a Resend {sealed destination (base64),
refusal ('' | 'finished' | 'DESTINATION_LOCKED' | 'RESEND_COOLDOWN' | 'MAX_RESENDS' | 'SEND_LIMIT_DESTINATION'),
retry after ms},
or nil when the id is unknown at this destination.
]]

--- @include "args"
--- @include "clock"
--- @include "gcra"
--- @include "fields"
--- @include "base64"

local A, bad = script_args('describe', { id = 'str', resend = 'bool', sends = 'budget', purpose_sends = 'map' })
if not A then return bad end

local p = redis.call('HGET', KEYS[1], id_field(A.id))
if not p then return false end
local f = redis.call('HMGET', KEYS[1], p .. ':c', p .. ':cx', p .. ':pg', p .. ':td', p .. ':id')
-- The purpose's current verification must be the one asked about.
if not f[5] or code_id(f[5]) ~= A.id or not f[1] then return false end
local c = counters_read(f[1])
local out = {p, c.ch, f[2] or '', f[3] or '', f[4] and 1 or 0}
if A.resend then
  local r = redis.call('HMGET', KEYS[1], 'sb', 'sb2', p .. ':st', 'lk', p .. ':lk', 'ls', p .. ':ls')
  out[6] = sealed_text(r[1], r[2])
  -- resend.lua's checks, in its order; the send budgets read, not spent.
  local now = now_ms()
  local own = {}
  local os = A.purpose_sends[p]
  if os then
    local count, window = string.match(os, '^(%d+),(%d+)$')
    own = { tonumber(count), tonumber(window) }
  end
  local lk = math.max(tonumber(r[4]) or 0, tonumber(r[5]) or 0)
  local refusal, retry = '', 0
  if (r[3] or '') ~= '' or now >= c.e then refusal = 'finished'
  elseif lk > now then refusal, retry = 'DESTINATION_LOCKED', lk - now
  elseif now < c.ra then refusal, retry = 'RESEND_COOLDOWN', c.ra - now
  elseif c.r >= c.mr then refusal, retry = 'MAX_RESENDS', c.e - now
  elseif A.sends[1] then
    local allowed, _, _, wait = gcra_spend_both(r[6], A.sends[1], A.sends[2], r[7], own, now)
    if not allowed then refusal, retry = 'SEND_LIMIT_DESTINATION', wait end
  end
  out[7], out[8] = refusal, retry
end
return out
