-- Kept answers (src/store/README.md, "Keys"): what a repeat with an
-- idempotency key is answered with, whatever became of its verification since
-- (a newer Send replaced it, another call verified or locked it), until that
-- verification's expiry. A pair of fields `r:<digest>` / `rp:<digest>`; the
-- digest is 22 characters, so the name is never a purpose `r`'s own `r:id`,
-- `r:c`, ... (a purpose has no ':'). Each value stays under 64 bytes, so the
-- hash stays a listpack.
-- * A Verify's (verify.lua step 0), under its replay key:
--   `r:` = "<v|i><attempts left>,<e base 36>,<e - verified at, base 36>,<id>",
--   `rp:` = the purpose (for v only).
-- * A Send's whose verification a newer Send replaced (issue.lua step 1),
--   under its idempotency key's digest:
--   `r:` = "s<e base 36>,<id>",
--   `rp:` = "<fingerprint>,<ra base 36>,<ch>,<n>,<m>,<attempts left>,<resends left>",
--   the verification's times and numbers as they were when it was replaced.
-- * A Verify's key that verified a code (verify.lua step 0b), under the key's
--   digest: `r:` = "k<e base 36>,<the replay key it verified with>" (no `rp:`).
-- The digests are keyed under different messages (src/otp/idempotency.ts),
-- so a Verify's names never meet each other or a Send's.
local KEPT_DIGEST_LENGTH = 22

-- Replaced verifications whose Sends' keys still answer them (issue.lua step 1), at most, per destination
-- hash: a bound on what a destination keeps (two fields, ~140 bytes of listpack each). A Send that would
-- replace one more waits (issue.lua step 4, and limits.lua says so). Only a send budget above this within
-- one ttl reaches it (the default, 5 per 15 minutes, cannot).
local MAX_REPLACED_SENDS = 8

-- The expiry (ms) a kept answer lasts until, or nil when the value is not one.
local function kept_expiry(value)
  local e = string.match(value, '^[vi]%d+,(%w+),') or string.match(value, '^[sk](%w+),')
  return e and tonumber(e, 36)
end

-- One look at every kept answer: the fields of those whose verification has
-- expired (both of each pair: what to HDEL), and the expiries of the Sends'
-- that still answer. A destination that keeps being sent to keeps its hash,
-- so expired ones would pile up: every call that keeps a new answer drops them.
local function kept_answers(dest, now)
  local all, expired, sends = redis.call('HGETALL', dest), {}, {}
  for i = 1, #all, 2 do
    local field = all[i]
    if #field == KEPT_DIGEST_LENGTH + 2 and string.sub(field, 1, 2) == 'r:' then
      local e = kept_expiry(all[i + 1])
      if not e or e <= now then
        expired[#expired + 1] = field
        expired[#expired + 1] = 'rp:' .. string.sub(field, 3)
      elseif string.sub(all[i + 1], 1, 1) == 's' then
        sends[#sends + 1] = e
      end
    end
  end
  return expired, sends
end
