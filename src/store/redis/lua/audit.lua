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
--- @include "outbox"

local A, bad = script_args('audit', { fields = 'map' })
if not A then return bad end

local e = {}
for name, value in pairs(A.fields) do e[name] = value end
e.ts = now_ms()
return outbox_add(KEYS[1], e)
