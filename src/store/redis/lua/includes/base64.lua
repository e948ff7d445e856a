-- Standard base64 (RFC 4648 §4, with padding), plain Lua 5.1. The destination
-- hash keeps the sealed destination as raw bytes (`sb`/`sb2`, README "Keys"),
-- so no value exceeds hash-max-listpack-value (64) and the hash stays a
-- listpack. Scripts decode what they are given and encode what they emit, so
-- callers and the outbox still see base64.
local B64_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local B64_CHAR, B64_VALUE = {}, {}
for i = 1, 64 do
  local c = string.sub(B64_ALPHABET, i, i)
  B64_CHAR[i - 1] = c
  B64_VALUE[string.byte(c)] = i - 1
end

local function base64_encode(bytes)
  local out, n = {}, #bytes
  for i = 1, n, 3 do
    local a, b, c = string.byte(bytes, i, i + 2)
    local w = a * 65536 + (b or 0) * 256 + (c or 0)
    out[#out + 1] = B64_CHAR[math.floor(w / 262144)] .. B64_CHAR[math.floor(w / 4096) % 64]
      .. (b and B64_CHAR[math.floor(w / 64) % 64] or '=') .. (c and B64_CHAR[w % 64] or '=')
  end
  return table.concat(out)
end

-- Returns the bytes, or nil when `text` is not canonical base64 (length not a
-- multiple of 4, a character outside the alphabet, misplaced padding, or
-- non-zero bits after the last byte), so that encoding the result gives back
-- exactly `text`.
local function base64_decode(text)
  local n = #text
  if n % 4 ~= 0 then return nil end
  local out = {}
  for i = 1, n, 4 do
    local c1, c2, c3, c4 = string.byte(text, i, i + 3)
    local v1, v2, v3, v4 = B64_VALUE[c1], B64_VALUE[c2], B64_VALUE[c3], B64_VALUE[c4]
    if not v1 or not v2 then return nil end
    local last = i + 3 == n
    if v4 then
      if not v3 then return nil end
      local w = v1 * 262144 + v2 * 4096 + v3 * 64 + v4
      out[#out + 1] = string.char(math.floor(w / 65536), math.floor(w / 256) % 256, w % 256)
    elseif not last or c4 ~= 61 then -- '='
      return nil
    elseif v3 then -- one '=': two bytes
      if v3 % 4 ~= 0 then return nil end
      local w = v1 * 262144 + v2 * 4096 + v3 * 64
      out[#out + 1] = string.char(math.floor(w / 65536), math.floor(w / 256) % 256)
    else -- '==': one byte
      if c3 ~= 61 or v2 % 16 ~= 0 then return nil end
      out[#out + 1] = string.char(v1 * 4 + math.floor(v2 / 16))
    end
  end
  return table.concat(out)
end

-- The sealed destination as hash fields: raw bytes split at 64 (`sb`, and `sb2`
-- for the rest). Returns the HSET pairs, or nil when `text` is not canonical
-- base64 (the service only ever sends canonical base64; anything else is a bug
-- the script refuses rather than stores).
local SEALED_CHUNK = 64
local function sealed_fields(text)
  local bytes = base64_decode(text)
  if not bytes or base64_encode(bytes) ~= text or #bytes == 0 then return nil end
  if #bytes <= SEALED_CHUNK then return {'sb', bytes} end
  return {'sb', string.sub(bytes, 1, SEALED_CHUNK), 'sb2', string.sub(bytes, SEALED_CHUNK + 1)}
end

-- The sealed destination (base64) from HMGET of 'sb', 'sb2'.
local function sealed_text(sb, sb2)
  return base64_encode((sb or '') .. (sb2 or ''))
end
