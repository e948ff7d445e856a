--[[
verify: count one attempt at a verification, then compare; consume on
success, lock at the limit (src/store/README.md, "Verify"). The hot path:
one HGET + one HMGET, then one write and one XADD.

KEYS[1]   destination hash   <prefix>:{<shard>}:d:<tenant>:<handle>
KEYS[2]   outbox stream      <prefix>:{<shard>}:outbox

ARGV[1]   JSON object, read by name (includes/args.lua):
  tenant              str
  id                  str  verification id
  idempotency_key     str  keyed digest of the Verify's idempotency key ("" when none)
  replay              str  keyed digest of that key with the request's target, code and context ("" when none):
                           the answer of a call that counted an attempt is kept under it (step 0)
  trace_id            str
  client_id           str
  candidates          map  key id -> code digest under that key
  failures_count      pos  the failure budget per destination, across purposes (state `lf`; using it up sets `lk`)
  failures_window_ms  pos  (a purpose's own budget, kept in `<p>:c` at Send, is spent as well: `<p>:lf`, `<p>:lk`)
  daily_failures      budget [] or [count, window ms]: the long-window failure budget per destination, spent
                           with the first (state `ld`; using it up sets `lk` for its window)
  replay_only         bool the caller budgets refused this retry (caller-budgets' 'repeat'): only step 0 may answer

Returns
  {'VERIFIED', attempts remaining, purpose, destination digest, verified at ms, prefix refs}
  {'INVALID_CODE', attempts remaining}  0 also when this guess locked the destination or its purpose
  {'EXPIRED' | 'TOO_MANY_ATTEMPTS' | 'NOT_FOUND' | 'DELIVERY_FAILED', 0}
  a repeat (step 0 or 2): {'VERIFIED', left, purpose, destination digest, verified at ms, '', verification id}
                       or {'INVALID_CODE', left, '', '', 0, '', verification id}
  {'NOT_REPLAYED', 0}  replay_only, and no kept answer: nothing counted or changed
  {'UNKNOWN_KEY', 0}   the code was issued under a key id not in candidates (a pod rolled out
                       later has it): it cannot be checked here, so nothing is counted or changed
]]

--- @include "args"
--- @include "clock"
--- @include "gcra"
--- @include "expiry"
--- @include "outbox"
--- @include "fields"
--- @include "kept-answers"

local A, bad = script_args('verify', {
  tenant = 'str', id = 'str', idempotency_key = 'str', replay = 'str', trace_id = 'str', client_id = 'str',
  candidates = 'map', failures_count = 'pos', failures_window_ms = 'pos', daily_failures = 'budget', replay_only = 'bool' })
if not A then return bad end

local dest, vid, ik, rk = KEYS[1], A.id, A.idempotency_key, A.replay
local now = now_ms()

-- The answer of a call that counted an attempt, kept under `r:<replay>` (and for v `rp:<replay>` = the
-- purpose) until its verification's expiry (includes/kept-answers.lua).
local function replay_value(kind, left, e, vt)
  return kind .. left .. ',' .. base36(e) .. ',' .. base36(e - vt) .. ',' .. vid
end

-- Kept answers whose verification has expired, gone: only calls that keep a new answer pay for the look.
local function forget_expired_replays()
  local expired = kept_answers(dest, now)
  if #expired > 0 then redis.call('HDEL', dest, unpack(expired)) end
end

-- 0. A repeat of a call that counted an attempt (the same idempotency key, target, code and context):
-- the answer it had, nothing counted, whatever happened to its verification since (a new Send replaced
-- it, another call verified or locked it), until that verification's expiry. The answer names its
-- verification: a repeat by destination may find another one there now.
-- 0b. The key verified a code here with another request (another code, or context): that key's
-- repeats end now. Else its holder could ask code after code, each answered NOT_FOUND and counted
-- nowhere (the verification is consumed), until the right one found the kept VERIFIED and its receipt.
local ended = false
if rk ~= '' then
  -- One read for both: this request's kept answer, and which request the key verified with (0b).
  local found = ik ~= '' and redis.call('HMGET', dest, 'r:' .. rk, 'r:' .. ik) or { redis.call('HGET', dest, 'r:' .. rk) }
  -- 0b before 0: a wrong code this key tried before it verified is another request too (probe 27: its
  -- kept INVALID_CODE was answered, and the key's repeats went on).
  if ik ~= '' then
    local verified_as = string.match(found[2] or '', '^k%w+,(.+)$')
    if verified_as and verified_as ~= rk then
      redis.call('HDEL', dest, 'r:' .. verified_as, 'rp:' .. verified_as, 'r:' .. ik, 'r:' .. rk)
      ended = true
    end
  end
  local kept = not ended and found[1]
  if kept then
    local kind, left, e, dv, kept_id = string.match(kept, '^([vi])(%d+),(%w+),(%w+),(.+)$')
    if kind and now < tonumber(e, 36) then
      if kind == 'i' then return {'INVALID_CODE', tonumber(left), '', '', 0, '', kept_id} end
      local kept_purpose = redis.call('HGET', dest, 'rp:' .. rk)
      if kept_purpose then
        return {'VERIFIED', tonumber(left), kept_purpose, digest_of(dest, redis.call('HGET', dest, 'dd')),
          tonumber(e, 36) - tonumber(dv, 36), '', kept_id}
      end
    end
  end
end

if A.replay_only then return {'NOT_REPLAYED', 0} end

-- 1. Ids live only in their own tenant's hash, so another tenant's id is simply absent.
local p = redis.call('HGET', dest, id_field(vid))
if not p then return {'NOT_FOUND', 0} end

local v = redis.call('HMGET', dest, p .. ':id', p .. ':k', p .. ':c',
  p .. ':st', p .. ':vk', p .. ':vt', 'lk', 'lf', 'dd', 'md', p .. ':pg', p .. ':lf', p .. ':lk', 'ld')
-- The purpose's current verification must be the one asked about, not only its code digest.
if not v[1] or code_id(v[1]) ~= vid or not v[3] then return {'NOT_FOUND', 0} end
local c, st = counters_read(v[3]), v[4] or '' -- empty fields are not stored
local dd = digest_of(dest, v[9])
local a, m = c.a, c.m

-- Only the digest made with the key this code was issued under counts.
local match = A.candidates[v[2]] == code_digest(v[1])

-- 2. Already verified: only a repeat of that same call, before the verification's expiry,
-- answers VERIFIED again.
if st == 'v' then
  if ik ~= '' and ik == v[5] then
    if match and not ended and now < c.e then return {'VERIFIED', m - a, p, dd, tonumber(v[6]), '', vid} end
    -- Another code under the key that verified: as in 0b, its repeats end.
    redis.call('HDEL', dest, p .. ':vk')
  end
  return {'NOT_FOUND', 0}
end
-- Canceled: as gone as a consumed code; nothing is counted.
if st == 'c' then return {'NOT_FOUND', 0} end
-- 3-4. Finished or locked: nothing is counted.
if st == 'f' then return {'DELIVERY_FAILED', 0} end
if st == 'l' or a >= m then return {'TOO_MANY_ATTEMPTS', 0} end
-- The destination's lock (every purpose's) or the purpose's own.
if math.max(tonumber(v[7]) or 0, tonumber(v[13]) or 0) > now then return {'TOO_MANY_ATTEMPTS', 0} end

local ev = { stream = KEYS[2], vid = vid, tn = A.tenant, p = p, ch = c.ch, md = v[10], dd = dd,
  ts = now, tr = A.trace_id, cl = A.client_id }

-- 5. Expired: the first observation records it once.
if st == 'x' then return {'EXPIRED', 0} end
if now >= c.e then
  redis.call('HSET', dest, p .. ':st', 'x')
  emit(ev, 'expired')
  return {'EXPIRED', 0}
end

-- 6. Issued under a key this process lacks (OTP_HMAC_KEYS rolled out with the new key last
-- before every pod had it): a right code would count as a wrong guess. Nothing is counted.
if not A.candidates[v[2]] then return {'UNKNOWN_KEY', 0} end

-- 7. Count before comparing, so concurrent guesses cannot pass the limit.
a = a + 1
c.a = a

-- 8. Match: consume. The fields stay, verified, while the hash lives: a repeat with the
-- idempotency key answers VERIFIED again, Resend answers 'finished', not 'not_found',
-- and GetVerification shows it VERIFIED. What only a Resend needs goes.
if match then
  local writes = {p .. ':c', counters_text(c), p .. ':st', 'v', p .. ':vt', now}
  if ik ~= '' then
    writes[#writes + 1] = p .. ':vk'
    writes[#writes + 1] = ik
  end
  if rk ~= '' then
    forget_expired_replays()
    writes[#writes + 1] = 'r:' .. rk
    writes[#writes + 1] = replay_value('v', m - a, c.e, now)
    writes[#writes + 1] = 'rp:' .. rk
    writes[#writes + 1] = p
    if ik ~= '' then
      -- Which request the key verified with (0b).
      writes[#writes + 1] = 'r:' .. ik
      writes[#writes + 1] = 'k' .. base36(c.e) .. ',' .. rk
    end
  end
  redis.call('HSET', dest, unpack(writes))
  redis.call('HDEL', dest, p .. ':lc', p .. ':mt')
  emit(ev, 'verified')
  -- The prefixes to credit, this once (a repeat above does not return them).
  return {'VERIFIED', m - a, p, dd, now, v[11] or ''}
end

-- No match: spend the destination's failure budget (the global one, always at its own rate);
-- using it up locks the destination for every purpose (`lk`). The long-window budget (`ld`) is spent
-- with it and locks the same way, for its own window: the first refills steadily, so a guesser
-- pacing under it would never be locked (probe 44). A verification whose purpose has a
-- budget of its own (kept in `<p>:c` at Send: `fc`/`fw` other than the global) spends that too
-- (`<p>:lf`); using it up locks that purpose only (`<p>:lk`), so one purpose's guesses lock the
-- others no sooner than the global budget does.
local writes = {p .. ':c', counters_text(c)}
local keep_until = now
-- Whether this guess locked the destination (or its purpose): the verification is then locked too.
local destination_locked = false
-- Lock field -> until: two budgets may lock `lk` at once; the longer lock stands.
local locks = {}
local function spend_failure(state_field, lock_field, stored, count, window)
  local allowed, tat = gcra_spend(stored, now, count, window)
  if allowed then
    writes[#writes + 1] = state_field
    writes[#writes + 1] = tat
    keep_until = math.max(keep_until, tat)
  end
  if not allowed or gcra_state(tat, now, count, window) == 0 then
    locks[lock_field] = math.max(locks[lock_field] or 0, now + window)
    keep_until = math.max(keep_until, now + window)
    destination_locked = true
  end
end
spend_failure('lf', 'lk', v[8], A.failures_count, A.failures_window_ms)
if A.daily_failures[1] then spend_failure('ld', 'lk', v[14], A.daily_failures[1], A.daily_failures[2]) end
if c.fc ~= A.failures_count or c.fw ~= A.failures_window_ms then
  spend_failure(p .. ':lf', p .. ':lk', v[12], c.fc, c.fw)
end
for field, until_ms in pairs(locks) do
  writes[#writes + 1] = field
  writes[#writes + 1] = until_ms
end
local left = m - a
if left <= 0 then
  writes[#writes + 1] = p .. ':st'
  writes[#writes + 1] = 'l'
  left = 0
end
-- None left while either lock holds (the right code answers TOO_MANY_ATTEMPTS): the answer says so
-- (probe 32: it said the verification's own attempts). The lock, not `st`, holds the verification,
-- as it holds the destination's other verifications.
if destination_locked then left = 0 end
if rk ~= '' then
  forget_expired_replays()
  writes[#writes + 1] = 'r:' .. rk
  writes[#writes + 1] = replay_value('i', left, c.e, c.e)
end
redis.call('HSET', dest, unpack(writes))
if keep_until > now then extend_expiry(dest, keep_until) end

emit(ev, 'verify_failed', 'left', left)
-- Why: the verification's own attempts, or the destination's failure budget (which locks every
-- purpose's verifications, or this purpose's, at once: the one audit event of that lock).
if destination_locked then
  emit(ev, 'locked', 'reason', 'DESTINATION_LOCKED')
elseif left == 0 then
  emit(ev, 'locked', 'reason', 'TOO_MANY_ATTEMPTS')
end
return {'INVALID_CODE', left}
