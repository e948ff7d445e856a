--[[
find: the current verification id of one purpose at one destination, live or
finished (so Verify by destination can answer EXPIRED, TOO_MANY_ATTEMPTS or
DELIVERY_FAILED rather than NOT_FOUND). A consumed one is gone. Reads only.

KEYS[1]   destination hash   <prefix>:{<shard>}:d:<tenant>:<handle>

ARGV[1]   JSON object, read by name (includes/args.lua):
  purpose   str

Returns the verification id, or nil.
]]

--- @include "args"
--- @include "fields"

local A, bad = script_args('find', { purpose = 'str' })
if not A then return bad end

local v = redis.call('HGET', KEYS[1], A.purpose .. ':id')
if not v then return false end
return code_id(v)
