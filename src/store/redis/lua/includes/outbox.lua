-- Append one event to the shard's outbox stream (README "Outbox entries"):
-- the fields every entry carries, then the type's own name/value pairs.
-- ev = { stream, vid, tn, p, ch, md, dd, ts, tr, cl }
local function emit(ev, kind, ...)
  redis.call('XADD', ev.stream, '*', 'type', kind, 'vid', ev.vid, 'tn', ev.tn, 'p', ev.p,
    'ch', ev.ch, 'md', ev.md, 'dd', ev.dd, 'ts', ev.ts, 'tr', ev.tr, 'cl', ev.cl, ...)
end
