-- The prefix guard (README "Prefix guard"); memory/prefix-guard.ts is the twin.
-- One hash per (tenant, number prefix) under the tenant's hash tag:
--   s<bucket> / v<bucket>  codes sent / verified in bucket number floor(now / (window / buckets))
--   u                      suspended until (ms); absent: not suspended
--   t                      a suspension made by a count is settled at (ms); absent: settled
-- The window is the last `buckets` buckets; older fields are deleted when the hash is written.
-- rule = {min_sends, min_verified_percent, window_ms, buckets, cool_off_ms}
-- A transition is {prefix index, 'suspended' | 'released', reason, sent, verified}.

-- A suspension a send's count made is tentative for this long: that count may still be taken back
-- (take-back.lua: the call then sent nothing), and so may the others in flight with it. Concurrent
-- Resends of one verification each count before the store refuses all but one (probe 32): a block
-- suspended by them is released within milliseconds, and a call refused meanwhile is told to retry
-- when the suspension settles, not after the whole cool-off.
local PG_SETTLE_MS = 2000

local function pg_rule_ok(rule)
  if type(rule) ~= 'table' or #rule ~= 5 then return false end
  for i = 1, 5 do
    if type(rule[i]) ~= 'number' or rule[i] ~= math.floor(rule[i]) or rule[i] < 0 then return false end
  end
  return rule[1] >= 1 and rule[4] >= 1 and rule[3] >= rule[4] and rule[5] >= 1
end

local function pg_bucket(now, rule) return math.floor(now / math.floor(rule[3] / rule[4])) end

local function pg_read(index, key, now, rule)
  local flat = redis.call('HGETALL', key)
  local first = pg_bucket(now, rule) - rule[4] + 1
  local st = { index = index, key = key, sent = 0, verified = 0, held = 0, settles = 0, stale = {}, dirty = false }
  for i = 1, #flat, 2 do
    local f, n = flat[i], tonumber(flat[i + 1]) or 0
    if f == 'u' then
      st.held = n
    elseif f == 't' then
      st.settles = n
    else
      local b = tonumber(string.sub(f, 2))
      if b == nil or b < first then
        st.stale[#st.stale + 1] = f
      elseif string.sub(f, 1, 1) == 's' then
        st.sent = st.sent + n
      else
        st.verified = st.verified + n
      end
    end
  end
  return st
end

-- Has verified codes, at or above the floor.
local function pg_healthy(st, rule) return st.verified >= 1 and st.verified * 100 >= rule[2] * st.sent end
-- Enough volume to judge, and below the floor.
local function pg_collapsed(st, rule) return st.sent >= rule[1] and st.verified * 100 < rule[2] * st.sent end

-- The smallest n >= 1 such that n more unverified sends make the prefix collapse.
local function pg_sends_before_collapse(st, rule)
  local by_floor = math.huge
  if rule[2] > 0 then by_floor = math.floor(st.verified * 100 / rule[2]) - st.sent + 1 end
  return math.max(1, rule[1] - st.sent, by_floor)
end

-- How long a call refused by a suspension should wait: until it settles while it may still be taken back.
local function pg_retry(st, now)
  if st.settles > now then return math.min(st.held, st.settles) - now end
  return st.held - now
end

local function pg_release(st, reason, out)
  st.held, st.settles, st.dirty = 0, 0, true
  out[#out + 1] = {st.index, 'released', reason, st.sent, st.verified}
end

-- Writes what changed; a hash lives a window past its last write, and a window past its
-- suspension's end (so the next Send in that time records the release).
-- Deletes come last: in a slot being migrated, a hash a delete has emptied is no longer this
-- node's, and touching it again failed the script half-way, its budgets already spent (probe 77).
local function pg_save(st, now, rule, sent_bucket, verified_bucket)
  if not st.dirty and not sent_bucket and not verified_bucket then return end
  local gone = st.stale
  local left = redis.call('PTTL', st.key)
  if sent_bucket then redis.call('HINCRBY', st.key, 's' .. sent_bucket, 1) end
  if verified_bucket then redis.call('HINCRBY', st.key, 'v' .. verified_bucket, 1) end
  if st.dirty then
    if st.held > 0 then redis.call('HSET', st.key, 'u', st.held) else gone[#gone + 1] = 'u' end
    if st.settles > 0 then redis.call('HSET', st.key, 't', st.settles) else gone[#gone + 1] = 't' end
  end
  redis.call('PEXPIREAT', st.key, math.max(left > 0 and now + left or 0, now + rule[3], st.held + rule[3]))
  if #gone > 0 then redis.call('HDEL', st.key, unpack(gone)) end
end

-- Whether a code may go out now (finest prefix first: one with its own verified codes above
-- the floor is not held back by a coarser one). Returns allowed, retry after ms.
local function pg_decide(states, now, rule, out)
  for i = #states, 1, -1 do
    local st = states[i]
    if pg_healthy(st, rule) then
      if st.held > 0 then pg_release(st, 'VERIFIED', out) end
      break
    end
    if st.held > now then return false, pg_retry(st, now) end
    if st.held > 0 then
      -- Cooled off: still collapsed means suspended again, without a code going out first (no count
      -- of this call's made it: settled at once).
      if pg_collapsed(st, rule) then
        st.held, st.settles, st.dirty = now + rule[5], 0, true
        return false, rule[5]
      end
      pg_release(st, 'COOLED_OFF', out)
    end
  end
  return true, 0
end

-- One code sent to every prefix; a prefix whose conversion collapses with it is suspended.
local function pg_count_sent(states, now, rule, out)
  local b = pg_bucket(now, rule)
  for _, st in ipairs(states) do
    st.sent = st.sent + 1
    if st.held == 0 and pg_collapsed(st, rule) then
      st.held, st.settles, st.dirty = now + rule[5], now + PG_SETTLE_MS, true
      out[#out + 1] = {st.index, 'suspended', 'CONVERSION_COLLAPSED', st.sent, st.verified}
    end
    pg_save(st, now, rule, b, nil)
  end
end

-- CheckRateLimit's entry: remaining sends before a suspension if none is verified, reset, retry.
local function pg_state(states, now, rule)
  local remaining, retry = math.huge, 0
  for i = #states, 1, -1 do
    local st = states[i]
    -- A healthy prefix can still collapse itself, but shields the number from coarser ones.
    if pg_healthy(st, rule) then
      remaining = math.min(remaining, pg_sends_before_collapse(st, rule))
      break
    end
    if st.held > now then
      retry = pg_retry(st, now)
      break
    end
    if st.held > 0 and pg_collapsed(st, rule) then
      retry = rule[5]
      break
    end
    remaining = math.min(remaining, pg_sends_before_collapse(st, rule))
  end
  -- Reported against a limit of min sends, so never above it (a well-verified prefix could take more).
  if retry > 0 then remaining = 0 else remaining = math.min(remaining, rule[1]) end
  return remaining, retry, retry
end

-- The transitions, flattened into a reply.
local function pg_flatten(reply, out)
  for _, t in ipairs(out) do
    for j = 1, 5 do reply[#reply + 1] = t[j] end
  end
  return reply
end
