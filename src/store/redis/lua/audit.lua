--[[
audit: append one audit event that goes with no state change (a caller
refused before any verification was touched) to a shard's outbox.

KEYS[1]   outbox stream      <prefix>:{<shard>}:outbox

ARGV[1]   JSON object, read by name (includes/args.lua):
  fields    map  the entry's fields (src/store/README.md, "Outbox entries"); `ts` is added here

Returns the stream entry id.
]]

--- @include "args"
--- @include "clock"

local A, bad = script_args('audit', { fields = 'map' })
if not A then return bad end

local fields = {'ts', now_ms()}
for name, value in pairs(A.fields) do
  if name ~= 'ts' then
    fields[#fields + 1] = name
    fields[#fields + 1] = value
  end
end
return redis.call('XADD', KEYS[1], '*', unpack(fields))
