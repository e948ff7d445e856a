--[[
resend: a new code for the same verification; attempts carry over
(src/store/README.md, "Resend").

KEYS[1]   destination hash   <prefix>:{<shard>}:d:<tenant>:<handle>
KEYS[2]   outbox stream      <prefix>:{<shard>}:outbox

ARGV[1]   JSON object, read by name (includes/args.lua):
  tenant            str
  id                str  verification id
  channel           int  channel number (0 keeps the verification's channel)
  code_digest       str  the new code's digest
  key_id            str  key id of the new code digest
  sealed_code       str  (base64; goes into the delivery event only)
  ttl_ms            pos
  cooldown_ms       int  resend cooldown
  sends_count       pos  send budget per destination, across purposes (state `ls`)
  sends_window_ms   pos
  purpose_sends     budget [] or [count, window ms]: the verification's purpose's own send budget
                           (state `<p>:ls`), only when its policy sets one; a resend must fit both
  trace_id          str
  client_id         str
  deliver           bool false for a test destination's verification: no delivery event
  audit_refusal     bool false: a refusal is answered but not audited (the outbox backlog is past half its bound)

Returns
  {'resent', verification id, channel, masked destination, expires at ms,
   resend available at ms, max attempts, attempts remaining, resends remaining, code length}
  {'not_found'} | {'finished'}
  {'refused', 'DESTINATION_LOCKED' | 'RESEND_COOLDOWN' | 'MAX_RESENDS' | 'SEND_LIMIT_DESTINATION', retry after ms}
]]

--- @include "args"
--- @include "clock"
--- @include "gcra"
--- @include "expiry"
--- @include "outbox"
--- @include "base64"
--- @include "fields"
--- @include "kept-answers"

local A, bad = script_args('resend', {
  tenant = 'str', id = 'str', channel = 'int', code_digest = 'str', key_id = 'str', sealed_code = 'str',
  ttl_ms = 'pos', cooldown_ms = 'int', sends_count = 'pos', sends_window_ms = 'pos', purpose_sends = 'budget',
  trace_id = 'str', client_id = 'str', deliver = 'bool', audit_refusal = 'bool' })
if not A then return bad end

local dest, vid = KEYS[1], A.id

local p = redis.call('HGET', dest, id_field(vid))
if not p then return {'not_found'} end

local v = redis.call('HMGET', dest, p .. ':st', p .. ':c', p .. ':lc', p .. ':mt', 'lk', 'ls', 'dd', 'md',
  'sb', 'sb2', p .. ':id', p .. ':ls', p .. ':lk')
-- The purpose's current verification must be the one asked about.
if not v[11] or code_id(v[11]) ~= vid or not v[2] then return {'not_found'} end
local c = counters_read(v[2])
local e, ra, r, mr = c.e, c.ra, c.r, c.mr
local now = now_ms()
-- Empty fields are not stored: a missing `st` is '' (live), a missing `lc` / `mt` is ''.
if (v[1] or '') ~= '' or now >= e then return {'finished'} end

local ev = { stream = KEYS[2], vid = vid, tn = A.tenant, p = p, ch = c.ch, md = v[8],
  dd = digest_of(dest, v[7]), ts = now, tr = A.trace_id, cl = A.client_id, audit = A.audit_refusal }

-- The destination's lock (every purpose's) or the purpose's own.
local lk = math.max(tonumber(v[5]) or 0, tonumber(v[13]) or 0)
if lk > now then return refuse(ev, 'DESTINATION_LOCKED', lk - now) end
if now < ra then return refuse(ev, 'RESEND_COOLDOWN', ra - now) end
if r >= mr then return refuse(ev, 'MAX_RESENDS', e - now) end
local allowed, ls, pls, retry = gcra_spend_both(v[6], A.sends_count, A.sends_window_ms, v[12], A.purpose_sends, now)
if not allowed then return refuse(ev, 'SEND_LIMIT_DESTINATION', retry) end

-- The new digest replaces the old one, so the previous code dies here.
local ch = A.channel
if ch == 0 then ch = ev.ch end
r = r + 1
local ttl = A.ttl_ms
e, ra = now + ttl, now + A.cooldown_ms
c.r, c.ch, c.e, c.ra = r, ch, e, ra
local set = {'ls', ls, p .. ':id', code_value(vid, A.code_digest), p .. ':k', A.key_id, p .. ':c', counters_text(c)}
if pls then
  set[#set + 1] = p .. ':ls'
  set[#set + 1] = pls
end
-- Its Verifies' kept answers (all INVALID_CODE: it is pending) last until its expiry, which just moved:
-- else a keyed Verify repeated after the old expiry counted a second attempt (probe 89). A pending
-- verification's are at most its attempts, and a Resend is rare beside a Verify: one look at the hash.
local all = redis.call('HGETALL', dest)
for i = 1, #all, 2 do
  local field = all[i]
  if #field == KEPT_DIGEST_LENGTH + 2 and string.sub(field, 1, 2) == 'r:' then
    local left, kept_e, kept_id = string.match(all[i + 1], '^i(%d+),(%w+),%w+,(.+)$')
    if kept_id == vid and now < tonumber(kept_e, 36) then
      set[#set + 1] = field
      set[#set + 1] = 'i' .. left .. ',' .. base36(e) .. ',0,' .. vid
    end
  end
end
redis.call('HSET', dest, unpack(set))
extend_expiry(dest, math.max(e + ttl, ls, pls or 0))

ev.ch = ch
if A.deliver then
  emit(ev, 'delivery', 'sd', sealed_text(v[9], v[10]), 'sc', A.sealed_code, 'lc', v[3] or '', 'mt', v[4] or '', 'exp', e, 'rc', r)
end
emit(ev, 'resent', 'rc', r)
return {'resent', vid, ch, v[8], e, ra, c.m, c.m - c.a, mr - r, c.n}
