-- refresh.lua: extend the leases of requests still running (conn slots and token
-- reservations; loaded with common.lua in front), so that only a gateway that stopped refreshing (killed, partitioned)
-- loses them, after lease_ttl.
--
-- ARGV: lease_ttl_ms, n, then one member per key (n). KEYS: the n zsets.
--       On Redis Cluster, keys of several slots that one node owns come in one call: KEYS
--       then holds only the first and all n follow the members in ARGV; one key per slot
--       is probed first, and if one lives on another node the script changes nothing and
--       returns -1 (the gateway then sends one call per slot).
-- ZADD XX never re-creates a lease that was already released. A set's expiry is only
-- extended, never shortened (admit.lua may have given it more; see its `renew`).

local ttl, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local keys = script_keys(3 + n, n)
if not keys then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, n do
  local key = keys[i]
  if redis.call('ZADD', key, 'XX', 'CH', now + ttl, ARGV[2 + i]) == 1
      and redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end
return 1
