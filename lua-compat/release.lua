-- release.lua: give back what admitted requests held, for many requests at once.
--
-- Mirrors Ticket::finish / drop in src/limits/admission.rs: a conn lease is removed; a
-- token reservation is removed (and taken off the hash's running sum `r`) and the tokens
-- really used are charged to the window (opening a new window if the old one has ended, as
-- TokenLimit::reconcile does).
--
-- ARGV: n, then per entry 4 values: kind (2 conn, 4 tokens), member, window_ms, used.
-- KEYS: two per entry. conn: zset, -; tokens: hash {c, e}, zset of reservations.
--       On Redis Cluster, keys of several slots that one node owns come in one call: KEYS
--       then holds only the first and all of them follow the entries in ARGV; each is
--       probed first, and if one lives on another node the script changes nothing and
--       returns -1 (the gateway then sends one call per slot).

local n = tonumber(ARGV[1])
local keys = KEYS
if #KEYS < 2 * n then
  keys = {}
  for i = 1, 2 * n do
    local k = ARGV[1 + 4 * n + i]
    local probe = redis.pcall('EXISTS', k)
    if type(probe) == 'table' and probe.err then return -1 end
    keys[i] = k
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, n do
  local a = 2 + (i - 1) * 4
  local kind, member = tonumber(ARGV[a]), ARGV[a + 1]
  local k1, k2 = keys[2 * i - 1], keys[2 * i]
  if kind == 2 then
    redis.call('ZREM', k1, member)
  elseif kind == 4 then
    local removed = redis.call('ZREM', k2, member)
    local used = tonumber(ARGV[a + 3])
    local v = redis.call('HMGET', k1, 'c', 'e', 'r')
    local committed, wend, r = tonumber(v[1]), tonumber(v[2]), tonumber(v[3])
    if not committed or not wend or now >= wend then
      committed = 0
      wend = now + tonumber(ARGV[a + 2])
    end
    if r then
      -- admit.lua's running sum of reservations; without it, it is rebuilt from the set.
      if removed == 1 then r = math.max(r - (tonumber(string.match(member, '|(%d+)$')) or 0), 0) end
      redis.call('HSET', k1, 'c', committed + used, 'e', wend, 'r', r)
    else
      redis.call('HSET', k1, 'c', committed + used, 'e', wend)
    end
    redis.call('PEXPIRE', k1, math.max(wend - now, redis.call('PTTL', k2)))
  end
end
return 1
