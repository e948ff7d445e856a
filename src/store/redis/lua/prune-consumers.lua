--[[
prune-consumers: removes relay consumers that hold nothing from a shard's
outbox group. Every relay that reads a shard becomes a consumer of its group
(named host-pid-random), and Redis keeps a consumer until it is deleted: without
this, every restart, scale-in and crash left one more for ever (memory, XINFO,
every claim's scan).

XGROUP DELCONSUMER drops the consumer's pending entries with it: entries read
and not yet acknowledged would stay in the stream, never read again (">" is
past them) and never claimed (no longer pending). So a consumer is deleted
only while it has no pending entries, checked and deleted in this one atomic
step: a read that hands it entries runs before (it is kept) or after (the read
creates it again). A dead relay's pending entries keep its consumer until
another relay claims them (XAUTOCLAIM after claimIdleMs); then it goes too.

KEYS[1]   outbox stream      <prefix>:{<shard>}:outbox

ARGV[1]   JSON object, read by name (includes/args.lua):
  group     str   the relays' consumer group
  consumer  str   the calling relay
  leaving   bool  true: the calling relay stops; it goes too when it holds nothing
  idle_ms   pos   other consumers go when idle (XINFO CONSUMERS `idle`) at least this long and holding nothing

Returns the number of consumers deleted. A missing stream or group has no
consumers: 0.
]]

--- @include "args"

local A, bad = script_args('prune-consumers', { group = 'str', consumer = 'str', leaving = 'bool', idle_ms = 'pos' })
if not A then return bad end

if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], A.group)
if type(consumers) == 'table' and consumers.err then
  if string.sub(consumers.err, 1, 7) == 'NOGROUP' then return 0 end
  return redis.error_reply(consumers.err)
end

local deleted = 0
for _, flat in ipairs(consumers) do
  -- name, pending, idle (and inactive from Redis 7.2), as name/value pairs
  local c = {}
  for i = 1, #flat, 2 do c[flat[i]] = flat[i + 1] end
  local gone
  if c.name == A.consumer then gone = A.leaving else gone = c.idle >= A.idle_ms end
  if gone and c.pending == 0 then
    -- DELCONSUMER answers how many pending entries it dropped: none, checked just above.
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], A.group, c.name)
    deleted = deleted + 1
  end
end
return deleted
