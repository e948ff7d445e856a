-- Append one event to a shard's outbox stream (src/store/README.md, "Outbox
-- entries"): one field, `e`, a JSON object of strings. One bulk string per
-- entry is what the relay reads back; a stream field per name cost it ~3 us
-- more per event, decoding twenty-odd strings.
local function outbox_add(stream, e)
  for name, value in pairs(e) do
    -- As XADD wrote numbers: whole, in decimal (JSON would give them 14 digits).
    if type(value) == 'number' then e[name] = string.format('%d', value) end
  end
  return redis.call('XADD', stream, '*', 'e', cjson.encode(e))
end

-- The fields every entry carries, then the type's own name/value pairs.
-- ev = { stream, vid, tn, p, ch, md, dd, ts, tr, cl }
local function emit(ev, kind, ...)
  local e = { type = kind, vid = ev.vid, tn = ev.tn, p = ev.p, ch = ev.ch, md = ev.md, dd = ev.dd, ts = ev.ts, tr = ev.tr, cl = ev.cl }
  for i = 1, select('#', ...), 2 do
    local name, value = select(i, ...)
    e[name] = value
  end
  outbox_add(ev.stream, e)
end

-- A Send or Resend refused by a limit: audited as rate_limited in the same atomic step.
local function refuse(ev, reason, retry)
  emit(ev, 'rate_limited', 'reason', reason)
  return {'refused', reason, retry}
end
