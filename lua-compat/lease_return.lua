-- lease_return.lua: give back the unused units of quota leases (src/limits/lease.rs) to
-- the fixed windows they were counted in.
--
-- KEYS: counters (one slot). ARGV: per key, its window's end in Redis time (ms) when the
-- units were granted, then the units. A counter whose window has ended since (its end is
-- now another: a new window opened by a later request ends at least one window later)
-- is left alone, so units are only ever returned to the window that counted them.
-- Returns the units given back.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local back = 0
for i, k in ipairs(KEYS) do
  local wend, units = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local pttl = redis.call('PTTL', k)
  -- Redis time and the key's expiry are both in milliseconds: the same window's end
  -- reads back within a millisecond or two of the one recorded.
  if pttl > 0 and math.abs(now + pttl - wend) <= 2 then
    local n = math.min(units, tonumber(redis.call('GET', k)) or 0)
    if n > 0 then
      redis.call('DECRBY', k, n)
      back = back + n
    end
  end
end
return back
