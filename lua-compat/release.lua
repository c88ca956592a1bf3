-- release.lua: give back what admitted requests held, for many requests at once.
--
-- Mirrors Ticket::finish / drop in src/limits/admission.rs: a conn lease is removed; a
-- token reservation is removed (and taken off the hash's running sum `r`) and the tokens
-- really used are charged to the window (opening a new window if the old one has ended, as
-- TokenLimit::reconcile does).
--
-- A rate share (src/limits/lease/shares.rs) given back: its member removed from the
-- bucket's set and its bucket's excess added to the bucket's, leaked first at the rate the
-- bucket had (the rule's rate less every share's, this one included).
--
-- ARGV: n, then per entry 4 values: kind (1 rate share, 2 conn, 4 tokens), member,
--       window_ms (a rate share: the rule's rate in milli-requests/s), used (a rate share:
--       its bucket's excess, milli-requests).
-- KEYS: two per entry. rate share: bucket hash, set of shares; conn: zset, -; tokens: hash
--       {c, e}, zset of reservations.
--       On Redis Cluster, keys of several slots that one node owns come in one call: KEYS
--       then holds only the first and all of them follow the entries in ARGV; each is
--       probed first, and if one lives on another node the script changes nothing and
--       returns -1 (the gateway then sends one call per slot).

local n = tonumber(ARGV[1])
local keys = KEYS
if #KEYS < 2 * n then
  keys = {}
  local probed = {}
  for i = 1, 2 * n do
    local k = ARGV[1 + 4 * n + i]
    -- One probe per slot: a key's first non-empty {tag} decides it (as in admit.lua).
    local tag = string.match(k, '{([^}]*)}')
    local slot = (tag and tag ~= '') and tag or k
    if not probed[slot] then
      probed[slot] = true
      local probe = redis.pcall('EXISTS', k)
      if type(probe) == 'table' and probe.err then return -1 end
    end
    keys[i] = k
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, n do
  local a = 2 + (i - 1) * 4
  local kind, member = tonumber(ARGV[a]), ARGV[a + 1]
  local k1, k2 = keys[2 * i - 1], keys[2 * i]
  if kind == 1 then
    if redis.call('ZSCORE', k2, member) then
      local sr = 0
      for _, m in ipairs(redis.call('ZRANGE', k2, 0, -1)) do
        sr = sr + (tonumber(string.match(m, '#r|(%d+)|%d+$')) or 0)
      end
      local rate = math.max(tonumber(ARGV[a + 2]) - sr, 1)
      local v = redis.call('HMGET', k1, 'excess', 'last')
      local e, last = tonumber(v[1]) or 0, tonumber(v[2]) or now
      e = math.max(e - rate * math.max(now - last, 0) / 1000, 0) + tonumber(ARGV[a + 3])
      redis.call('HSET', k1, 'excess', math.floor(e), 'last', now)
      -- The bucket lives until it has drained (at the rate the other shares leave it).
      local ttl = math.ceil(e / rate * 1000) + 1000
      if redis.call('PTTL', k1) < ttl then redis.call('PEXPIRE', k1, ttl) end
      redis.call('ZREM', k2, member)
    end
  elseif kind == 2 then
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
