-- Compact destination-hash fields (README "Keys"), so the hash stays a small
-- listpack.
-- * Ids are kept whole (34 characters): `id:<id>` (value: the purpose) and
--   `<p>:id` = "<id><code digest>". Verify checks the id it finds there is the
--   one it was asked about.
-- * A purpose's numbers share one field, `<p>:c` = "a,m,r,mr,n,ch,e,d,fc,fw":
--   attempts used, max attempts, resends used, max resends, code length,
--   channel, expires at (ms), d = resend available at - expires at (ms), and
--   the purpose's failure budget (count, window ms) as of the Send, so every
--   later Verify spends the purpose's budget whichever way it is addressed.
local ID_LENGTH = 34

-- The reverse lookup field of verification `vid` (its value is the purpose).
local function id_field(vid) return 'id:' .. vid end

-- `<p>:id`: the purpose's verification id and code digest.
local function code_value(vid, digest) return vid .. digest end
local function code_id(value) return string.sub(value, 1, ID_LENGTH) end
local function code_digest(value) return string.sub(value, ID_LENGTH + 1) end

-- `<p>:c` as a table {a, m, r, mr, n, ch, e, ra, fc, fw}, or nil when missing.
local function counters_read(text)
  if not text then return nil end
  local a, m, r, mr, n, ch, e, d, fc, fw = string.match(text,
    '^(%d+),(%d+),(%d+),(%d+),(%d+),(%d+),(%d+),(-?%d+),(%d+),(%d+)$')
  e = tonumber(e)
  return { a = tonumber(a), m = tonumber(m), r = tonumber(r), mr = tonumber(mr), n = tonumber(n),
    ch = tonumber(ch), e = e, ra = e + tonumber(d), fc = tonumber(fc), fw = tonumber(fw) }
end

-- The `<p>:c` value for such a table (every number whole).
local function counters_text(c)
  return string.format('%d,%d,%d,%d,%d,%d,%d,%d,%d,%d', c.a, c.m, c.r, c.mr, c.n, c.ch, c.e, c.ra - c.e, c.fc, c.fw)
end
