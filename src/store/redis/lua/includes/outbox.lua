-- Append one event to the shard's outbox stream (src/store/README.md, "Outbox entries"):
-- the fields every entry carries, then the type's own name/value pairs.
-- ev = { stream, vid, tn, p, ch, md, dd, ts, tr, cl }
local function emit(ev, kind, ...)
  redis.call('XADD', ev.stream, '*', 'type', kind, 'vid', ev.vid, 'tn', ev.tn, 'p', ev.p,
    'ch', ev.ch, 'md', ev.md, 'dd', ev.dd, 'ts', ev.ts, 'tr', ev.tr, 'cl', ev.cl, ...)
end

-- A Send or Resend refused by a limit: audited as rate_limited in the same atomic step, unless
-- the service said there is no room for refusals' audit events (ev.audit false: the backlog is past
-- half its bound, and refusals must never fill the outbox that turns Sends away).
local function refuse(ev, reason, retry)
  if ev.audit ~= false then emit(ev, 'rate_limited', 'reason', reason) end
  return {'refused', reason, retry}
end
