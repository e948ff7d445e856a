-- Compact destination-hash fields (README "Keys"), so the hash stays a small
-- listpack.
-- * The destination handle (first 12 characters of a verification id and of
--   the destination digest) is never stored: the hash's key already ends with
--   it, and every script that needs it has a verification id. So `dd` is the
--   digest after the handle, and ids are kept as their 22 random characters:
--   `id:<random>`, and `<p>:id` = "<random><code digest>".
-- * A purpose's numbers share one field, `<p>:c` = "a,m,r,mr,n,ch,e,d":
--   attempts used, max attempts, resends used, max resends, code length,
--   channel, expires at (ms), and d = resend available at - expires at (ms).
local HANDLE_LENGTH, RANDOM_LENGTH = 12, 22

local function id_handle(vid) return string.sub(vid, 1, HANDLE_LENGTH) end
local function id_random(vid) return string.sub(vid, HANDLE_LENGTH + 1) end
-- The reverse lookup field of verification `vid` (its value is the purpose).
local function id_field(vid) return 'id:' .. id_random(vid) end

-- `<p>:id`: the purpose's verification id (without its handle) and code digest.
local function code_value(vid, digest) return id_random(vid) .. digest end
-- From a `<p>:id` value: the full verification id, given the handle.
local function code_id(value, handle) return handle .. string.sub(value, 1, RANDOM_LENGTH) end
-- From a `<p>:id` value: the code digest.
local function code_digest(value) return string.sub(value, RANDOM_LENGTH + 1) end

-- `dd` holds the destination digest after the handle, which `vid` starts with.
local function digest_value(digest) return string.sub(digest, HANDLE_LENGTH + 1) end
local function digest_text(value, vid) return id_handle(vid) .. value end

-- `<p>:c` as a table {a, m, r, mr, n, ch, e, ra}, or nil when missing.
local function counters_read(text)
  if not text then return nil end
  local a, m, r, mr, n, ch, e, d = string.match(text,
    '^(%d+),(%d+),(%d+),(%d+),(%d+),(%d+),(%d+),(-?%d+)$')
  e = tonumber(e)
  return { a = tonumber(a), m = tonumber(m), r = tonumber(r), mr = tonumber(mr), n = tonumber(n),
    ch = tonumber(ch), e = e, ra = e + tonumber(d) }
end

-- The `<p>:c` value for such a table (every number whole).
local function counters_text(c)
  return string.format('%d,%d,%d,%d,%d,%d,%d,%d', c.a, c.m, c.r, c.mr, c.n, c.ch, c.e, c.ra - c.e)
end
