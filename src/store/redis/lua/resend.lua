--[[
resend: a new code for the same verification; attempts carry over
(src/store/README.md, "Resend").

KEYS[1]   destination hash   <prefix>:{<shard>}:d:<tenant>:<handle>
KEYS[2]   outbox stream      <prefix>:{<shard>}:outbox

ARGV[1]   tenant
ARGV[2]   verification id
ARGV[3]   channel number (0 keeps the verification's channel)
ARGV[4]   new code digest
ARGV[5]   key id of the new code digest
ARGV[6]   sealed code (base64; goes into the delivery event only)
ARGV[7]   ttl ms
ARGV[8]   resend cooldown ms
ARGV[9]   send budget count
ARGV[10]  send budget window ms
ARGV[11]  trace id
ARGV[12]  client id

Returns
  {'resent', verification id, channel, masked destination, expires at ms,
   resend available at ms, max attempts, attempts remaining, resends remaining, code length}
  {'not_found'} | {'finished'}
  {'refused', 'DESTINATION_LOCKED' | 'RESEND_COOLDOWN' | 'MAX_RESENDS' | 'SEND_LIMIT_DESTINATION', retry after ms}
]]

--- @include "clock"
--- @include "gcra"
--- @include "expiry"
--- @include "outbox"
--- @include "base64"
--- @include "fields"

local dest, vid = KEYS[1], ARGV[2]

local p = redis.call('HGET', dest, id_field(vid))
if not p then return {'not_found'} end

local v = redis.call('HMGET', dest, p .. ':st', p .. ':c', p .. ':lc', p .. ':mt', 'lk', 'ls', 'dd', 'md',
  'sb', 'sb2', 'sd')
local c = counters_read(v[2])
local e, ra, r, mr = c.e, c.ra, c.r, c.mr
local now = now_ms()
-- Empty fields are not stored: a missing `st` is '' (live), a missing `lc` / `mt` is ''.
if (v[1] or '') ~= '' or now >= e then return {'finished'} end

local ev = { stream = KEYS[2], vid = vid, tn = ARGV[1], p = p, ch = c.ch, md = v[8],
  dd = digest_text(v[7], vid), ts = now, tr = ARGV[11], cl = ARGV[12] }

local lk = tonumber(v[5]) or 0
if lk > now then return refuse(ev, 'DESTINATION_LOCKED', lk - now) end
if now < ra then return refuse(ev, 'RESEND_COOLDOWN', ra - now) end
if r >= mr then return refuse(ev, 'MAX_RESENDS', e - now) end
local allowed, ls, retry = gcra_spend(v[6], now, tonumber(ARGV[9]), tonumber(ARGV[10]))
if not allowed then return refuse(ev, 'SEND_LIMIT_DESTINATION', retry) end

-- The new digest replaces the old one, so the previous code dies here.
local ch = tonumber(ARGV[3])
if ch == 0 then ch = ev.ch end
r = r + 1
local ttl = tonumber(ARGV[7])
e, ra = now + ttl, now + tonumber(ARGV[8])
c.r, c.ch, c.e, c.ra = r, ch, e, ra
redis.call('HSET', dest, 'ls', ls, p .. ':id', code_value(vid, ARGV[4]), p .. ':k', ARGV[5], p .. ':c', counters_text(c))
extend_expiry(dest, math.max(e + ttl, ls))

ev.ch = ch
emit(ev, 'delivery', 'sd', sealed_text(v[9], v[10], v[11]), 'sc', ARGV[6], 'lc', v[3] or '', 'mt', v[4] or '', 'exp', e, 'rc', r)
emit(ev, 'resent', 'rc', r)
return {'resent', vid, ch, v[8], e, ra, c.m, c.m - c.a, mr - r, c.n}
