--[[
find: the live (not finished, not expired) verification id of one purpose at
one destination. Reads only; a script so "expired" uses the store's clock.

KEYS[1]   destination hash   <prefix>:{<shard>}:d:<tenant>:<handle>

ARGV[1]   purpose

Returns the verification id, or nil.
]]

--- @include "clock"

local p = ARGV[1]
local v = redis.call('HMGET', KEYS[1], p .. ':id', p .. ':st', p .. ':e')
if not v[1] or v[2] ~= '' or now_ms() >= tonumber(v[3]) then return false end
return v[1]
