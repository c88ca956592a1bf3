-- lease_return.lua: give back the unused units of quota leases (src/limits/lease.rs) to
-- the fixed windows they were counted in (loaded with common.lua in front: `script_keys`).
--
-- ARGV: n, then per counter its window's end in Redis time (ms) when the units were
-- granted, then the units. KEYS: the n counters. On Redis Cluster, counters of several
-- slots that one node owns come in one call: KEYS then holds only the first and all of
-- them follow the pairs in ARGV; each slot is probed first, and if one lives on another
-- node the script changes nothing and returns -1 (the gateway then sends one call per
-- slot).
--
-- A counter whose window has ended since (its end is now another: a new window opened by
-- a later request ends at least one window later) is left alone, so units are only ever
-- returned to the window that counted them. Returns the units given back.

local n = tonumber(ARGV[1])
local keys = script_keys(2 + 2 * n, n)
if not keys then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local back = 0
for i = 1, n do
  local k = keys[i]
  local wend, units = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local pttl = redis.call('PTTL', k)
  -- Redis time and the key's expiry are both in milliseconds: the same window's end
  -- reads back within a millisecond or two of the one recorded.
  if pttl > 0 and math.abs(now + pttl - wend) <= 2 then
    local left = math.min(units, tonumber(redis.call('GET', k)) or 0)
    if left > 0 then
      redis.call('DECRBY', k, left)
      back = back + left
    end
  end
end
return back
