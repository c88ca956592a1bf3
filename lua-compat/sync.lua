-- sync.lua: delayed sync of limit-count counters (limits.sync_interval).
--
-- Each gateway decides count rules from its last view of the shared counter plus its own
-- requests since, and pushes those deltas here every sync_interval; the answer is the new
-- shared total, which becomes its next view. Same key and value as admit.lua's count.
--
-- ARGV: per key 2 values: delta, window_ms. KEYS: the counters.
-- Returns per key: consumed, pttl_ms (-1 when no window is open).

local out = {}
for i, key in ipairs(KEYS) do
  local delta, window = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local consumed
  local pttl = redis.call('PTTL', key)
  if pttl < 0 then
    if delta > 0 then
      redis.call('SET', key, delta, 'PX', window)
      consumed, pttl = delta, window
    else
      consumed, pttl = 0, -1
    end
  else
    consumed = redis.call('INCRBY', key, delta)
  end
  out[2 * i - 1] = consumed
  out[2 * i] = pttl
end
return out
