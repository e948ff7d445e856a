-- A verification as GetVerification and CancelVerification show it
-- (src/store/README.md, "Inspect"): its status is what Verify with the right
-- code would answer now, in Verify's order (verify.lua steps 2-5).
local function status_of(st, c, lk, now)
  if st == 'v' then return 'VERIFIED' end
  if st == 'c' then return 'CANCELED' end
  if st == 'f' then return 'DELIVERY_FAILED' end
  if st == 'l' or c.a >= c.m or lk > now then return 'LOCKED' end
  if st == 'x' or now >= c.e then return 'EXPIRED' end
  return 'PENDING'
end

-- The reply for purpose `p`'s verification (the caller found its id in the hash):
-- {status, purpose, channel, masked destination, attempts remaining, max attempts,
--  resends remaining, code length, created at ms, expires at ms,
--  resend available at ms, verified at ms, canceled at ms}
-- Times that do not apply (or were not stored) are ''. Counts left are 0 unless PENDING.
local function state_reply(dest, p, now)
  local v = redis.call('HMGET', dest, p .. ':c', p .. ':st', p .. ':vt', p .. ':ct', 'lk', 'md', p .. ':lk')
  local c, st = counters_read(v[1]), v[2] or ''
  -- Locked: the destination (every purpose), or this purpose by its own failure budget.
  local status = status_of(st, c, math.max(tonumber(v[5]) or 0, tonumber(v[7]) or 0), now)
  local pending = status == 'PENDING'
  local function time(value, applies) return (applies and tonumber(value)) or '' end
  return {status, p, c.ch, v[6] or '', pending and c.m - c.a or 0, c.m, pending and c.mr - c.r or 0, c.n,
    c.t, c.e, time(c.ra, pending), time(v[3], status == 'VERIFIED'), time(v[4], status == 'CANCELED')}
end
