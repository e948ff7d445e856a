-- Compact destination-hash fields (README "Keys"), so the hash stays a small
-- listpack.
-- * Ids are kept whole (34 characters) in `<p>:id` = "<id><code digest>":
--   Verify checks the id it finds there is the one it was asked about. The
--   reverse lookup `id:<r>` (value: the purpose) names only the id's 22
--   random characters: within one key they pick one id (the other 12 are the
--   key's handle masked with a function of those 22), and 12 bytes a field
--   name count against hash-max-listpack-value no less than a value.
-- * `dd` is the destination digest after its first 12 characters: those are
--   the handle, which the key ends with (digest_of).
-- * A purpose's numbers share one field, `<p>:c` = "a,m,r,mr,n,ch,e,d,fc,fw,ct":
--   attempts used, max attempts, resends used, max resends, code length,
--   channel, expires at (ms), d = resend available at - expires at (ms), the
--   purpose's failure budget (count, window ms) as of the Send, so every
--   later Verify spends the purpose's budget whichever way it is addressed,
--   and ct = expires at - created at (ms): a short number, not a 13-digit
--   time in a field of its own (~24 bytes a verification). e, fw and ct are
--   written in base 36 (e: 8 characters instead of 13): a one-verification
--   hash is ~320 bytes of listpack, where every byte decides between two
--   allocator size classes 64 bytes apart.
local ID_LENGTH = 34
local ID_RANDOM_LENGTH = 22
local HANDLE_LENGTH = 12

-- The reverse lookup field of verification `vid` (its value is the purpose).
local function id_field(vid) return 'id:' .. string.sub(vid, 1, ID_RANDOM_LENGTH) end

-- The `dd` value for a destination digest, and the digest back from the key and `dd`.
local function dd_value(digest) return string.sub(digest, HANDLE_LENGTH + 1) end
local function digest_of(key, dd) return string.sub(key, -HANDLE_LENGTH) .. (dd or '') end

-- `<p>:id`: the purpose's verification id and code digest.
local function code_value(vid, digest) return vid .. digest end
local function code_id(value) return string.sub(value, 1, ID_LENGTH) end
local function code_digest(value) return string.sub(value, ID_LENGTH + 1) end

-- A whole number >= 0 in base 36 (exact below 2^53, as every time in ms is);
-- tonumber(text, 36) reads it back.
local BASE36 = '0123456789abcdefghijklmnopqrstuvwxyz'
local function base36(n)
  if n == 0 then return '0' end
  local out = ''
  while n > 0 do
    local digit = n % 36
    out = string.sub(BASE36, digit + 1, digit + 1) .. out
    n = math.floor(n / 36)
  end
  return out
end

-- `<p>:c` as a table {a, m, r, mr, n, ch, e, ra, fc, fw, t}, or nil when missing.
local function counters_read(text)
  if not text then return nil end
  local a, m, r, mr, n, ch, e, d, fc, fw, ct = string.match(text,
    '^(%d+),(%d+),(%d+),(%d+),(%d+),(%d+),(%w+),(-?%d+),(%d+),(%w+),(%w+)$')
  if not a then return nil end
  e = tonumber(e, 36)
  return { a = tonumber(a), m = tonumber(m), r = tonumber(r), mr = tonumber(mr), n = tonumber(n),
    ch = tonumber(ch), e = e, ra = e + tonumber(d), fc = tonumber(fc), fw = tonumber(fw, 36), t = e - tonumber(ct, 36) }
end

-- The `<p>:c` value for such a table (every number whole; e, fw and e - t >= 0).
local function counters_text(c)
  return string.format('%d,%d,%d,%d,%d,%d,%s,%d,%d,%s,%s', c.a, c.m, c.r, c.mr, c.n, c.ch, base36(c.e), c.ra - c.e, c.fc,
    base36(c.fw), base36(c.e - c.t))
end
