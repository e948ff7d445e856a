--[[
audit: append one audit event that goes with no state change (a caller
refused before any verification was touched) to a shard's outbox.

KEYS[1]   outbox stream      <prefix>:{<shard>}:outbox

ARGV[1..] field, value, ... (src/store/README.md, "Outbox entries"); `ts` is added here

Returns the stream entry id.
]]

--- @include "clock"

local fields = {'ts', now_ms()}
for i = 1, #ARGV do fields[#fields + 1] = ARGV[i] end
return redis.call('XADD', KEYS[1], '*', unpack(fields))
