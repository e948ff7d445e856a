--[[
read-outbox: the relay's read of a shard's outbox, each entry handed back as
one JSON object of its fields. The stream keeps the layout every release
writes and reads (src/store/README.md, "Outbox entries"): flat name/value
fields. Read raw, each field came back as two RESP strings for node-redis to
decode one by one, twenty-odd per entry, the relay's largest cost after
Kafka; read through here, two per entry.

KEYS[1]   outbox stream      <prefix>:{<shard>}:outbox

ARGV[1]   JSON object, read by name (includes/args.lua):
  group     str  the relays' consumer group
  consumer  str  this relay
  count     pos  at most this many entries
  from      str  '>' (entries no relay has read) or '0' (this consumer's own pending ones)

Returns {id, fields JSON, id, fields JSON, ...}; '' for the fields of an entry
deleted while pending ('0' only): nothing to deliver. A missing stream or
group is XREADGROUP's own NOGROUP error.
]]

--- @include "args"

local A, bad = script_args('read-outbox', { group = 'str', consumer = 'str', count = 'pos', from = 'str' })
if not A then return bad end
if A.from ~= '>' and A.from ~= '0' then return redis.error_reply("ARGS read-outbox: from is not '>' or '0'") end

local reply = redis.call('XREADGROUP', 'GROUP', A.group, A.consumer, 'COUNT', A.count, 'STREAMS', KEYS[1], A.from)
local out = {}
if not reply then return out end
for _, entry in ipairs(reply[1][2]) do
  local flat = entry[2]
  local fields = ''
  if flat then
    local e = {}
    for i = 1, #flat, 2 do e[flat[i]] = flat[i + 1] end
    fields = cjson.encode(e)
  end
  out[#out + 1] = entry[1]
  out[#out + 1] = fields
end
return out
