--[[
issue: Send. Replace the purpose's verification at one destination and queue
its delivery (src/store/README.md, "Issue (Send)"). A replaced verification's
key keeps answering it until its expiry (a kept answer, step 1).

KEYS[1]   destination hash   <prefix>:{<shard>}:d:<tenant>:<handle>
KEYS[2]   outbox stream      <prefix>:{<shard>}:outbox

ARGV[1]   JSON object, read by name (includes/args.lua):
  tenant            str
  purpose           str
  id                str  the new verification id
  channel           pos  channel number
  digest            str  destination digest (its first 12 characters are the handle the key ends with)
  masked            str  masked destination
  sealed_dest       str  sealed destination (canonical base64; kept as raw bytes)
  code_digest       str
  key_id            str  key id of the code digest
  code_length       pos
  sealed_code       str  (base64; goes into the delivery event only)
  locale            str
  metadata          str  metadata JSON ("" when none)
  idempotency_key   str  keyed digest of the Send's idempotency key, 22 characters ("" when none)
  fingerprint       str  keyed digest of the Send's parameters, 22 characters ("" when no key)
  ttl_ms            pos
  max_attempts      pos
  cooldown_ms       int  resend cooldown
  max_resends       int
  failures_count    pos  the purpose's failure budget per destination (its own, else the global), kept for Verify
  failures_window_ms pos
  sends_count       pos  send budget per destination, across purposes (state `ls`)
  sends_window_ms   pos
  purpose_sends     budget [] or [count, window ms]: the purpose's own send budget at the destination
                           (state `<p>:ls`), only when its policy sets one; a send must fit both
  trace_id          str
  client_id         str
  context           str  bound into the code ("" when none), kept for Resend
  prefix_refs       str  the number's guarded prefixes ("" when none), kept as `<p>:pg` for Verify and Resend
  deliver           bool false for a test destination: no delivery event, `<p>:td` set, `sent` with reason TEST_DESTINATION
  replay_only       bool the caller budgets refused this retry (caller-budgets' 'repeat'): only step 1 may answer
  audit_refusal     bool false: a refusal is answered but not audited (the outbox backlog is past half its bound)

Returns
  {'conflict'}   the idempotency key created an unexpired verification (the current one, or one a newer
                 Send replaced) with other parameters
  {'issued' | 'replayed', verification id, channel, masked destination,
   expires at ms, resend available at ms, max attempts, attempts remaining,
   resends remaining, code length}
  {'refused', 'DESTINATION_LOCKED' | 'RESEND_COOLDOWN' | 'SEND_LIMIT_DESTINATION', retry after ms}
                 (SEND_LIMIT_DESTINATION also when the Send would replace a keyed verification while
                 MAX_REPLACED_SENDS replaced ones still answer their keys: retry when the first expires)
  {'not_replayed'}   replay_only, and the key's verification is not there to answer: nothing changed
]]

--- @include "args"
--- @include "clock"
--- @include "gcra"
--- @include "expiry"
--- @include "outbox"
--- @include "base64"
--- @include "fields"
--- @include "kept-answers"

local A, bad = script_args('issue', {
  tenant = 'str', purpose = 'str', id = 'str', channel = 'pos', digest = 'str', masked = 'str',
  sealed_dest = 'str', code_digest = 'str', key_id = 'str', code_length = 'pos', sealed_code = 'str',
  locale = 'str', metadata = 'str', idempotency_key = 'str', fingerprint = 'str', ttl_ms = 'pos',
  max_attempts = 'pos', cooldown_ms = 'int', max_resends = 'int', failures_count = 'pos',
  failures_window_ms = 'pos', sends_count = 'pos', sends_window_ms = 'pos', purpose_sends = 'budget',
  trace_id = 'str', client_id = 'str', context = 'str', prefix_refs = 'str', deliver = 'bool', replay_only = 'bool', audit_refusal = 'bool' })
if not A then return bad end

local dest = KEYS[1]
local p, vid, ch, md, ik = A.purpose, A.id, A.channel, A.masked, A.idempotency_key
-- The key ends with the destination's handle: a digest of another destination would mix two.
if string.sub(A.digest, 1, 12) ~= string.sub(dest, -12) then
  return redis.error_reply('ARGS issue: digest is not the destination\'s the key names')
end
-- The sealed destination is kept as raw bytes (base64.lua), so the hash stays a listpack.
local sealed = sealed_fields(A.sealed_dest)
if not sealed then return redis.error_reply('ARGS issue: sealed_dest is not canonical base64') end
-- The key names a kept answer (`r:<key>`, includes/kept-answers.lua): a digest of fixed length.
if ik ~= '' and not (#ik == KEPT_DIGEST_LENGTH and #A.fingerprint == KEPT_DIGEST_LENGTH
    and not string.find(ik .. A.fingerprint, '[^%w_-]')) then
  return redis.error_reply('ARGS issue: idempotency_key and fingerprint are not 22-character digests')
end
local m, mr, n = A.max_attempts, A.max_resends, A.code_length
local now = now_ms()

local read = {p .. ':id', p .. ':st', p .. ':c', p .. ':ik', 'md', 'lk', 'ls', p .. ':if', p .. ':ls', p .. ':lk'}
if ik ~= '' then
  read[#read + 1] = 'r:' .. ik
  read[#read + 1] = 'rp:' .. ik
end
local cur = redis.call('HMGET', dest, unpack(read))
-- `<p>:id` holds the current id, then the code digest.
local cc = counters_read(cur[3])
local cur_id = cc and cur[1] and code_id(cur[1])
-- An empty field is not stored: a missing `st` is '' (live).
local live = cur_id and (cur[2] or '') == '' and now < cc.e

-- 1. A repeated Send answers with the verification it created, until its expiry, whatever became of
-- it since (verified, locked, canceled): the key names that one request, so nothing changes and
-- nothing is sent again, also when a newer Send has replaced it since. The same key with other
-- parameters is another request: refused, never answered with this one.
if cur_id and now < cc.e and ik ~= '' and cur[4] == ik then
  if cur[8] ~= A.fingerprint then return {'conflict'} end
  -- A finished one (verified, locked, canceled, failed) has no Resend left to offer a time for.
  local resends_left = (cur[2] or '') == '' and cc.mr - cc.r or 0
  return {'replayed', cur_id, cc.ch, cur[5], cc.e, cc.ra, cc.m, cc.m - cc.a, resends_left, cc.n}
end
-- Replaced since: the answer step 5 kept for its key then, as it was then; the newer verification,
-- whose code the user holds, is left alone (a new issue here would void it).
if ik ~= '' and cur[11] then
  local e, kept_id = string.match(cur[11], '^s(%w+),(.+)$')
  local fp, ra, kch, kn, km, left = string.match(cur[12] or '',
    '^([^,]*),(%w+),(%d+),(%d+),(%d+),(%d+),(%d+)$')
  if e and fp and now < tonumber(e, 36) then
    if fp ~= A.fingerprint then return {'conflict'} end
    -- No Resend is left: a replaced verification is gone (its other numbers as they were).
    return {'replayed', kept_id, tonumber(kch), cur[5], tonumber(e, 36), tonumber(ra, 36), tonumber(km),
      tonumber(left), 0, tonumber(kn)}
  end
end
if A.replay_only then return {'not_replayed'} end

local ev = { stream = KEYS[2], vid = cur_id or '', tn = A.tenant, p = p, ch = ch, md = md,
  dd = A.digest, ts = now, tr = A.trace_id, cl = A.client_id, audit = A.audit_refusal }

-- 2-4. Refusals, cheapest first; only the send budgets spend anything. The destination's lock
-- (every purpose's) or the purpose's own (its failure budget, verify.lua).
local lk = math.max(tonumber(cur[6]) or 0, tonumber(cur[10]) or 0)
if lk > now then return refuse(ev, 'DESTINATION_LOCKED', lk - now) end
if live and now < cc.ra then return refuse(ev, 'RESEND_COOLDOWN', cc.ra - now) end
-- The verification this Send replaces keeps answering its key (step 1) until it expires; never
-- forgotten early, so at the bound the Send waits, as for a send budget (nothing spent).
local replaced_key = cur_id and now < cc.e and cur[4]
local expired_answers = {}
if replaced_key then
  local answering
  expired_answers, answering = kept_answers(dest, now)
  if #answering >= MAX_REPLACED_SENDS then
    -- Until the first of them expires, or the one this Send would replace does (then it keeps no
    -- answer): a long-ttl purpose's kept answers told a login Send to wait a day (probe 86).
    return refuse(ev, 'SEND_LIMIT_DESTINATION', math.min(cc.e, unpack(answering)) - now)
  end
end
local allowed, ls, pls, retry = gcra_spend_both(cur[7], A.sends_count, A.sends_window_ms, cur[9], A.purpose_sends, now)
if not allowed then return refuse(ev, 'SEND_LIMIT_DESTINATION', retry) end

-- 5. Overwrite the purpose's fields; the old id's reverse lookup goes, so its code dies here.
local ttl = A.ttl_ms
local e, ra = now + ttl, now + A.cooldown_ms
local set = {'dd', dd_value(A.digest), 'md', md, 'ls', ls, id_field(vid), p,
  p .. ':id', code_value(vid, A.code_digest), p .. ':k', A.key_id,
  p .. ':c', counters_text({ a = 0, m = m, r = 0, mr = mr, n = n, ch = ch, e = e, ra = ra,
    fc = A.failures_count, fw = A.failures_window_ms, t = now })}
for i = 1, #sealed do set[#set + 1] = sealed[i] end
-- Only a purpose with a send budget of its own has the field (none in the default configuration).
if pls then
  set[#set + 1] = p .. ':ls'
  set[#set + 1] = pls
end
-- Empty fields are not stored (a reader takes a missing one as ''), so the older
-- verification's go; `st` is always '' (live) here. A short sealed destination has no `sb2`.
local gone = {p .. ':st', p .. ':vk', p .. ':vt', p .. ':ct', p .. ':dl'}
if #sealed == 2 then gone[#gone + 1] = 'sb2' end
local fp = ik ~= '' and A.fingerprint or ''
-- The replaced verification's answer for its key (includes/kept-answers.lua), as it is now.
if replaced_key then
  set[#set + 1] = 'r:' .. replaced_key
  set[#set + 1] = 's' .. base36(cc.e) .. ',' .. cur_id
  set[#set + 1] = 'rp:' .. replaced_key
  set[#set + 1] = table.concat({cur[8] or '', base36(cc.ra), cc.ch, cc.n, cc.m, cc.m - cc.a, cc.mr - cc.r}, ',')
end
for _, f in ipairs({{':ik', ik}, {':if', fp}, {':lc', A.locale}, {':mt', A.metadata}, {':cx', A.context},
    {':pg', A.prefix_refs}, {':td', A.deliver and '' or '1'}}) do
  if f[2] == '' then
    gone[#gone + 1] = p .. f[1]
  else
    set[#set + 1] = p .. f[1]
    set[#set + 1] = f[2]
  end
end
if cur_id then gone[#gone + 1] = id_field(cur_id) end
for _, f in ipairs(expired_answers) do gone[#gone + 1] = f end
-- Written before the deletes: in a slot being migrated, a hash a delete has emptied is no longer this
-- node's, and the write after it would stop the script half-way (probe 77). A field written is not deleted.
redis.call('HSET', dest, unpack(set))
local written = {}
for i = 1, #set, 2 do written[set[i]] = true end
local deleting = {}
for _, f in ipairs(gone) do
  if not written[f] then deleting[#deleting + 1] = f end
end
if #deleting > 0 then redis.call('HDEL', dest, unpack(deleting)) end
-- Kept a ttl past expiry, so a late Verify answers EXPIRED rather than NOT_FOUND.
extend_expiry(dest, math.max(e + ttl, ls, pls or 0))

-- 6. Delivery first: the relay publishes in stream order. A test destination gets none.
ev.vid = vid
if A.deliver then
  emit(ev, 'delivery', 'sd', A.sealed_dest, 'sc', A.sealed_code, 'lc', A.locale, 'mt', A.metadata, 'exp', e, 'rc', 0)
  emit(ev, 'sent')
else
  emit(ev, 'sent', 'reason', 'TEST_DESTINATION')
end
return {'issued', vid, ch, md, e, ra, m, m, mr, n}
