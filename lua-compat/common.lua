-- common.lua: what admit.lua, release.lua and refresh.lua share. Redis runs each script on
-- its own, so the gateway loads each of them with this file in front (src/limits/redis.rs:
-- `concat!`); `SCRIPT LOAD "$(cat lua-compat/common.lua lua-compat/admit.lua)"` does the
-- same by hand.

-- The script's keys. KEYS, when it holds all `n`; else (Redis Cluster: keys of several
-- slots that one node owns come in one call, KEYS holding only the first, which routes
-- the call) the `n` keys from ARGV[from], each slot probed first. nil when a key lives on
-- another node (the gateway's map of the cluster was stale): the script must then change
-- nothing and say so.
local function script_keys(from, n)
  if #KEYS >= n then return KEYS end
  local keys, probed = {}, {}
  for i = 1, n do
    local k = ARGV[from + i - 1]
    -- Redis Cluster hashes a key's first {tag} when it is not empty, else the whole key.
    local tag = string.match(k, '{([^}]*)}')
    local slot = (tag and tag ~= '') and tag or k
    if not probed[slot] then
      probed[slot] = true
      local probe = redis.pcall('EXISTS', k)
      if type(probe) == 'table' and probe.err then return nil end
    end
    keys[i] = k
  end
  return keys
end

-- Give back one thing an admitted request held (release.lua's entries; admit.lua's too,
-- when returned token blocks ride an admission call). `a`: the entry's first value in ARGV
-- (kind, member, window_ms, used; see release.lua), `k1`, `k2`: its keys, `now`: Redis
-- time (ms). Mirrors Ticket::finish / drop in src/limits/admission.rs.
local function give_back(now, a, k1, k2)
  local kind, member = tonumber(ARGV[a]), ARGV[a + 1]
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

