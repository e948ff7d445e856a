--[[
describe: what a verification id leads to, without touching it.

KEYS[1]   destination hash   <prefix>:{<shard>}:d:<tenant>:<handle>

ARGV[1]   JSON object, read by name (includes/args.lua):
  id            str   verification id
  destination   bool  also return the sealed destination (a Resend opens a number: its country's budget,
                      the phone rules in force, the prefixes a prefix-guard event names)

Returns {purpose, channel, context, prefix refs, test (0|1)} (then the sealed destination, base64, when asked),
or nil when the id is unknown at this destination.
]]

--- @include "args"
--- @include "fields"
--- @include "base64"

local A, bad = script_args('describe', { id = 'str', destination = 'bool' })
if not A then return bad end

local p = redis.call('HGET', KEYS[1], id_field(A.id))
if not p then return false end
local f = redis.call('HMGET', KEYS[1], p .. ':c', p .. ':cx', p .. ':pg', p .. ':td', p .. ':id')
-- The purpose's current verification must be the one asked about.
if not f[5] or code_id(f[5]) ~= A.id or not f[1] then return false end
local out = {p, counters_read(f[1]).ch, f[2] or '', f[3] or '', f[4] and 1 or 0}
if A.destination then
  local sb = redis.call('HMGET', KEYS[1], 'sb', 'sb2')
  out[6] = sealed_text(sb[1], sb[2])
end
return out
