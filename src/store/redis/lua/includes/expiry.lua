-- A destination hash lives until the last thing in it ends, so its expiry
-- only ever moves later: a short new verification must not cut short a lock
-- or a budget recorded earlier. `at_ms` is always in the future here.
local function extend_expiry(key, at_ms)
  at_ms = math.ceil(at_ms)
  if redis.call('PEXPIRETIME', key) < at_ms then redis.call('PEXPIREAT', key, at_ms) end
end
