--[[
issue: Send. Replace the purpose's verification at one destination and queue
its delivery (src/store/README.md, "Issue (Send)").

KEYS[1]   destination hash   <prefix>:{<shard>}:d:<tenant>:<handle>
KEYS[2]   outbox stream      <prefix>:{<shard>}:outbox

ARGV[1]   tenant
ARGV[2]   purpose
ARGV[3]   new verification id
ARGV[4]   channel number
ARGV[5]   destination digest (starts with the id's 12-character handle)
ARGV[6]   masked destination
ARGV[7]   sealed destination (base64; kept as raw bytes)
ARGV[8]   code digest
ARGV[9]   key id of the code digest
ARGV[10]  code length
ARGV[11]  sealed code (base64; goes into the delivery event only)
ARGV[12]  locale
ARGV[13]  metadata JSON ("" when none)
ARGV[14]  idempotency key ("" when none)
ARGV[15]  ttl ms
ARGV[16]  max attempts
ARGV[17]  resend cooldown ms
ARGV[18]  max resends
ARGV[19]  send budget count
ARGV[20]  send budget window ms
ARGV[21]  trace id
ARGV[22]  client id
ARGV[23]  context bound into the code ("" when none), kept for Resend

Returns
  {'issued' | 'replayed', verification id, channel, masked destination,
   expires at ms, resend available at ms, max attempts, attempts remaining,
   resends remaining, code length}
  {'refused', 'DESTINATION_LOCKED' | 'RESEND_COOLDOWN' | 'SEND_LIMIT_DESTINATION', retry after ms}
]]

--- @include "clock"
--- @include "gcra"
--- @include "expiry"
--- @include "outbox"
--- @include "base64"
--- @include "fields"

local dest = KEYS[1]
local p, vid, ch, md, ik = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[6], ARGV[14]
-- The hash keeps the destination digest without the handle (fields.lua), so they must agree.
if id_handle(ARGV[5]) ~= id_handle(vid) then
  return redis.error_reply('issue: the destination digest does not start with the id\'s handle')
end
local m, mr, n = tonumber(ARGV[16]), tonumber(ARGV[18]), tonumber(ARGV[10])
local now = now_ms()

local cur = redis.call('HMGET', dest, p .. ':id', p .. ':st', p .. ':c', p .. ':ik', 'md', 'lk', 'ls')
-- `<p>:id` holds the current id without its handle (the new id's: same destination), then the code digest.
-- One without `<p>:c` was written before this layout: no verification (its fields expire with the key).
local cc = counters_read(cur[3])
local cur_id = cc and cur[1] and code_id(cur[1], id_handle(vid))
-- An empty field is not stored: a missing `st` is '' (live).
local live = cur_id and (cur[2] or '') == '' and now < cc.e

-- 1. A repeated Send answers with the verification it created; nothing changes.
if live and ik ~= '' and cur[4] == ik then
  return {'replayed', cur_id, cc.ch, cur[5], cc.e, cc.ra, cc.m, cc.m - cc.a, cc.mr - cc.r, cc.n}
end

local ev = { stream = KEYS[2], vid = cur_id or '', tn = ARGV[1], p = p, ch = ch, md = md,
  dd = ARGV[5], ts = now, tr = ARGV[21], cl = ARGV[22] }

-- 2-4. Refusals, cheapest first; only the send budget spends anything.
local lk = tonumber(cur[6]) or 0
if lk > now then return refuse(ev, 'DESTINATION_LOCKED', lk - now) end
if live and now < cc.ra then return refuse(ev, 'RESEND_COOLDOWN', cc.ra - now) end
local allowed, ls, retry = gcra_spend(cur[7], now, tonumber(ARGV[19]), tonumber(ARGV[20]))
if not allowed then return refuse(ev, 'SEND_LIMIT_DESTINATION', retry) end

-- 5. Overwrite the purpose's fields; the old id's reverse lookup goes, so its code dies here.
local ttl = tonumber(ARGV[15])
local e, ra = now + ttl, now + tonumber(ARGV[17])
-- The sealed destination is kept as raw bytes (base64.lua), so the hash stays a listpack.
local sealed, gone = sealed_fields(ARGV[7])
local set = {'dd', digest_value(ARGV[5]), 'md', md, 'ls', ls, id_field(vid), p,
  p .. ':id', code_value(vid, ARGV[8]), p .. ':k', ARGV[9],
  p .. ':c', counters_text({ a = 0, m = m, r = 0, mr = mr, n = n, ch = ch, e = e, ra = ra })}
for i = 1, #sealed do set[#set + 1] = sealed[i] end
-- Empty fields are not stored (a reader takes a missing one as ''), so the older
-- verification's go; `st` is always '' (live) here.
gone[#gone + 1] = p .. ':st'
gone[#gone + 1] = p .. ':vk'
gone[#gone + 1] = p .. ':vt'
for _, f in ipairs({{':ik', ik}, {':lc', ARGV[12]}, {':mt', ARGV[13]}, {':cx', ARGV[23]}}) do
  if f[2] == '' then
    gone[#gone + 1] = p .. f[1]
  else
    set[#set + 1] = p .. f[1]
    set[#set + 1] = f[2]
  end
end
if cur_id then gone[#gone + 1] = id_field(cur_id) end
redis.call('HDEL', dest, unpack(gone))
redis.call('HSET', dest, unpack(set))
-- Kept a ttl past expiry, so a late Verify answers EXPIRED rather than NOT_FOUND.
extend_expiry(dest, math.max(e + ttl, ls))

-- 6. Delivery first: the relay publishes in stream order.
ev.vid = vid
emit(ev, 'delivery', 'sd', ARGV[7], 'sc', ARGV[11], 'lc', ARGV[12], 'mt', ARGV[13], 'exp', e, 'rc', 0)
emit(ev, 'sent')
return {'issued', vid, ch, md, e, ra, m, m, mr, n}
