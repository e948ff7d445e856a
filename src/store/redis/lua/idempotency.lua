--[[
idempotency: bind an idempotency key to the request that first used it
(src/store/README.md, "Idempotency keys"). The key's record lives under the
tenant's hash tag, so a key reused for another destination or purpose (whose
state lives under other hash tags) is still seen. Only keyed digests are
stored: of the key (in the key name) and of each request parameter.

KEYS[1]   idempotency record   <prefix>:{t:<tenant>}:ik:<method>:<key digest>

ARGV[1]   JSON object, read by name (includes/args.lua):
  fields      map  parameter name -> keyed digest of its value
  retain_ms   pos  how long the record is kept after its first use

Returns {'new'} (the record is written) | {'same'} | {'reused', name, ...} (the parameters that differ, sorted)
]]

--- @include "args"

local A, bad = script_args('idempotency', { fields = 'map', retain_ms = 'pos' })
if not A then return bad end

local stored = redis.call('HGETALL', KEYS[1])
if #stored == 0 then
  local set = {}
  for name, value in pairs(A.fields) do
    set[#set + 1] = name
    set[#set + 1] = value
  end
  if #set == 0 then return redis.error_reply('ARGS idempotency: fields is empty') end
  redis.call('HSET', KEYS[1], unpack(set))
  redis.call('PEXPIRE', KEYS[1], A.retain_ms)
  return {'new'}
end

local was = {}
for i = 1, #stored, 2 do was[stored[i]] = stored[i + 1] end
local differ = {}
for name, value in pairs(A.fields) do
  if was[name] ~= value then differ[#differ + 1] = name end
end
for name in pairs(was) do
  if A.fields[name] == nil then differ[#differ + 1] = name end
end
if #differ == 0 then return {'same'} end
table.sort(differ)
local out = {'reused'}
for i = 1, #differ do out[#out + 1] = differ[i] end
return out
