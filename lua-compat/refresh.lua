-- refresh.lua: extend the leases of requests still running (conn slots and token
-- reservations), so that only a gateway that stopped refreshing (killed, partitioned)
-- loses them, after lease_ttl.
--
-- ARGV: lease_ttl_ms, then one member per key. KEYS: the zsets.
-- ZADD XX never re-creates a lease that was already released. A set's expiry is only
-- extended, never shortened (admit.lua may have given it more; see its `renew`).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  if redis.call('ZADD', key, 'XX', 'CH', now + ttl, ARGV[i + 1]) == 1
      and redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end
return 1
