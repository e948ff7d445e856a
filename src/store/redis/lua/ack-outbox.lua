--[[
ack-outbox: entries Kafka has taken leave a shard's outbox: acknowledged in
the relays' consumer group and deleted, in one step. Sent as two commands, a
connection lost between them left an entry acknowledged but still in the
stream, never read again and, as the oldest entry, read by the backlog watch
as an event waiting for ever (the lag alert firing for an event Kafka has).

KEYS[1]   outbox stream      <prefix>:{<shard>}:outbox

ARGV[1]   JSON object, read by name (includes/args.lua):
  group     str   the relays' consumer group
  ids       list  entry ids

Returns the number of entries deleted. A missing group is XACK's own NOGROUP error.
]]

--- @include "args"

local A, bad = script_args('ack-outbox', { group = 'str', ids = 'list' })
if not A then return bad end
if #A.ids == 0 then return redis.error_reply('ARGS ack-outbox: ids is empty') end
for i = 1, #A.ids do
  if type(A.ids[i]) ~= 'string' then return redis.error_reply('ARGS ack-outbox: ids[' .. i .. '] is not a string') end
end

redis.call('XACK', KEYS[1], A.group, unpack(A.ids))
return redis.call('XDEL', KEYS[1], unpack(A.ids))
