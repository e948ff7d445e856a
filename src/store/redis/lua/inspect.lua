--[[
inspect: a verification's state for GetVerification, changing nothing
(src/store/README.md, "Inspect"). No attempt is counted and no event written.

KEYS[1]   destination hash   <prefix>:{<shard>}:d:<tenant>:<handle>

ARGV[1]   JSON object, read by name (includes/args.lua):
  id        str  verification id

Returns the state tuple of includes/state.lua, or nil when the id is unknown
at this destination (ids live only in their own tenant's hash).
]]

--- @include "args"
--- @include "clock"
--- @include "fields"
--- @include "state"

local A, bad = script_args('inspect', { id = 'str' })
if not A then return bad end

local p = redis.call('HGET', KEYS[1], id_field(A.id))
if not p then return false end
-- The purpose's current verification must be the one asked about.
local cur = redis.call('HGET', KEYS[1], p .. ':id')
if not cur or code_id(cur) ~= A.id then return false end
return state_reply(KEYS[1], p, now_ms())
