-- admit.lua: one atomic admission decision for every limit that applies to a request.
--
-- The same algorithms as src/limits/{conn,tokens,count,req}.rs (the Rust code is the
-- reference; tests/limits_redis.rs checks that both agree), evaluated in one EVALSHA so a
-- request costs one round trip whatever the number of limits. Time is Redis server time
-- (TIME), so gateway clocks may disagree without leaking any bucket (APISIX bug 3).
--
-- Checks come in groups. Group 1 is required (consumer and model-route limits); groups
-- 2..n are alternatives (one per deployment, in routing order): the request is admitted
-- when group 1 passes and then the first alternative that passes. A group is evaluated in
-- APISIX's order: conn -> tokens -> count -> req. A group that rejects gives back the
-- slots and reservations it took; counts it made stay counted (APISIX semantics).
--
-- Several requests' admissions can share one call (the gateway's group commit: whatever
-- arrived while the previous call was in flight): each is decided in turn, exactly as if
-- it had its own call, and the answers are concatenated. Token blocks the gateway gives
-- back may ride the call too (they wait up to 100 ms for one): they are given back first,
-- as release.lua would (common.lua's `give_back`; this script is loaded with common.lua in
-- front).
--
-- ARGV: optionally 'r', k, then k of release.lua's entries (4 values each; their keys come
--       first, two per entry); then
--       m (admissions in this call), then per admission:
--       lease, lease_ttl_ms, estimate, ngroups, then per group its number of checks, then
--       per check 6 values: kind (1 req, 2 conn, 3 count, 4 tokens, 5 spend), a, b, c, y, w:
--         req:    rate (requests/s), burst, nodelay (0/1)
--         conn:   conn, burst, default_conn_delay_ms
--         count:  count, window_ms, sliding (0/1)
--         tokens: limit, window_ms, any_left (0/1: APISIX's admission, while one
--                 token is left, reserving what is left up to the estimate; reports
--                 the remaining before its own reservation)
--         spend:  limit, window_ms, estimate: the token algorithm in micro-dollars, each
--                 check reserving its own estimate (the request's cost at the dearest
--                 deployment) instead of the admission's token estimate
--       y: -1 for a realtime request; for a batch request the realtime rate (requests/s,
--       >= 0) the check must leave room for (src/limits/priority.rs: a batch check without
--       room is rejected and changes nothing).
--       w: a quota lease asked for with a realtime request (0: none; src/limits/lease.rs),
--       granted in the same atomic decision, at most a quarter of what is left:
--         count (fixed window): w more units counted now;
--         conn:   w more slots, members `<lease>#1..#g`, given back if the group rejects;
--         tokens, spend: a block of w reserved (all or nothing) together with the
--                 request's own reservation r, as the one member `<lease>#t|w+r` instead
--                 of `<lease>|r` (the gateway charges the request to the block), given
--                 back if the group rejects;
--         req (nodelay only): a rate share of w milli-requests/s at most, once the group
--                 has passed, member `<lease>#r|g|g/10` of k2 (the granted g answered).
-- KEYS: two per check, in admission and check order. req: hash, zset of rate shares;
--       conn: zset, -;
--       count: counter (a sliding window: hash {end, cur, prev}), -;
--       tokens, spend: hash {c = committed, e = window end, r = tokens reserved}, zset of
--       reservations (member `lease|tokens`, score = lease expiry).
--       On Redis Cluster, keys of several slots that one node owns come in one call: KEYS
--       then holds only the first (it routes the call) and all of them follow the checks
--       in ARGV; each slot is probed first (one key per hash tag: keys of one tag share
--       a slot), and if one lives on another node (the gateway's map of the cluster was
--       stale) the script changes nothing and returns {-1}.
--
-- Returns, per admission: its answer's length, then the answer:
--          { chosen alternative (0 = none or no alternatives), delay_ms,
--            per group: status (1 admitted, 0 rejected, -1 not evaluated), rejecting
--            check (1-based within the group), retry_after_ms,
--            per check: remaining, reset_ms (-1 when not reported), lease granted,
--            Redis time (ms): with reset_ms, a lease's window end }

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Returned token blocks riding this call: ARGV 'r', their number, then release.lua's
-- entries; their keys come first.
local nrel, o = 0, 1
if ARGV[1] == 'r' then
  nrel = tonumber(ARGV[2])
  o = 3 + 4 * nrel
end
local nadmit = tonumber(ARGV[o])

-- Where each admission's arguments start, and the keys: declared, or (several slots of
-- one node) after the arguments, probed.
local starts, nkeys, argi = {}, 2 * nrel, o + 1
for a = 1, nadmit do
  starts[a] = argi
  local ngroups = tonumber(ARGV[argi + 3])
  local n = 0
  for g = 1, ngroups do n = n + tonumber(ARGV[argi + 3 + g]) end
  nkeys = nkeys + 2 * n
  argi = argi + 4 + ngroups + 6 * n
end
local keys = script_keys(argi, nkeys)
if not keys then return {-1} end
-- Given back first: what they held is free for the admissions.
for i = 1, nrel do
  give_back(now, 3 + (i - 1) * 4, keys[2 * i - 1], keys[2 * i])
end

-- The admission being decided.
local lease, lease_ttl, estimate
local quota          -- per check index (within the admission): {remaining, reset}
local granted        -- per check index: the quota lease granted

local function tokens_of(member)
  return tonumber(string.match(member, '|(%d+)$')) or 0
end

-- Tokens held by live reservations. Far from the limit the hash's running sum `r` (kept by
-- this script and release.lua) is enough: O(1) instead of reading every reservation. It
-- can only overstate (a killed gateway's reservations expire without release.lua), so
-- where it could change the decision (`exact`: close to the limit, or a batch request's
-- pace) — or when it is missing — the sum is rebuilt from the live reservations.
local function reserved_sum(zset, r, exact)
  if r ~= nil and not exact then return math.max(r, 0) end
  redis.call('ZREMRANGEBYSCORE', zset, '-inf', now)
  local sum = 0
  for _, m in ipairs(redis.call('ZRANGE', zset, 0, -1)) do sum = sum + tokens_of(m) end
  return sum
end

-- Requests of a fixed window to leave for realtime traffic at `rate` (priority.rs).
local function window_reserve(rate, reset)
  if rate <= 0 then return 0 end
  return math.ceil(rate * reset / 1000) + 1
end

local function soon(reset)
  return math.min(math.max(reset, 1), 250)
end

-- A key that must live `ttl` past now is given 2 × ttl whenever less than `ttl` is left
-- (`x`: the expiry last set, kept in a hash field), so it never expires sooner than with a
-- PEXPIRE per request, and costs one PEXPIRE per `ttl` (each was a tenth of an admission).
-- Returns the new expiry to store, or nil when the key keeps its own.
local function renew(x, ttl)
  if x and x >= now + ttl then return nil end
  return now + 2 * ttl
end

-- Batch pacing of a window (priority.rs `paced`): 0 when used + need is on pace (or the
-- window is empty), else
-- the milliseconds until it is.
local function pace(limit, window, reset, used, need)
  limit = math.max(limit, 1)
  local elapsed = math.max(window - reset, 0)
  if used == 0 or (used + need) * window <= limit * elapsed then return 0 end
  local at = math.ceil((used + need) * window / limit)
  return math.min(math.max(at - elapsed, 1), math.max(reset, 1))
end

-- How long a batch request on a count check waits (0: it has room): it must leave the
-- realtime share of the window, and is paced over the window.
local function count_wait(c, used, left)
  if used + 1 + window_reserve(c.y, left) > c.a then return soon(left) end
  return pace(c.a, c.b, left, used, 1)
end

-- The rate shares of a bucket's set (`<lease>#r|rate|burst`, milli-requests): the rate
-- every share held since the bucket was last written (the expired ones included: until
-- they are seen here this bucket leaked at the rate they left, which only understates its
-- leak), the rate and capacity the live ones hold, and the capacity of the expired ones
-- (removed here).
local function shares(zset)
  local all_rate, sr, sb, expired = 0, 0, 0, 0
  local all = redis.call('ZRANGE', zset, 0, -1, 'WITHSCORES')
  for j = 1, #all, 2 do
    local rate, burst = string.match(all[j], '#r|(%d+)|(%d+)$')
    rate, burst = tonumber(rate) or 0, tonumber(burst) or 0
    all_rate = all_rate + rate
    if tonumber(all[j + 1]) <= now then
      expired = expired + burst + 1000
      redis.call('ZREM', zset, all[j])
    else
      sr, sb = sr + rate, sb + burst + 1000
    end
  end
  return all_rate, sr, sb, expired
end

-- Evaluate one group; returns status, rejecting check, retry_after_ms, group delay.
local function evaluate(checks, base)
  -- {zset, member[, hash, tokens, quota index, left before]} to give back on rejection
  local taken = {}
  local gdelay = 0
  local share_grants = {}
  local function reject(i, retry)
    for _, h in ipairs(taken) do
      if redis.call('ZREM', h[1], h[2]) == 1 and h[3] then
        redis.call('HINCRBY', h[3], 'r', -h[4])
      end
      -- A reservation given back leaves its check's quota as it was before it: a refused
      -- request's remaining counters do not count the request itself.
      if h[5] then quota[h[5]][1] = h[6] end
      -- A lease given back was not granted.
      if h[7] then granted[h[7]] = nil end
    end
    return 0, i, math.max(retry, 1), 0
  end
  -- 1. conn: take a lease in each.
  for i, c in ipairs(checks) do
    if c.kind == 2 then
      local n = redis.call('ZCARD', c.k1) + 1
      local reserve = 0
      if c.y > 0 then reserve = 1 + math.ceil(c.y / 4) elseif c.y == 0 and c.a >= 2 then reserve = 1 end
      -- Expired leases (a gateway that stopped refreshing) are dropped when they could
      -- change the decision: a request with room is admitted whatever they hold.
      if n + reserve > c.a then
        redis.call('ZREMRANGEBYSCORE', c.k1, '-inf', now)
        n = redis.call('ZCARD', c.k1) + 1
      end
      if c.y >= 0 and n + reserve > c.a then return reject(i, 50) end
      if n > c.a + c.b then return reject(i, 1000) end
      redis.call('ZADD', c.k1, now + lease_ttl, lease)
      if redis.call('PTTL', c.k1) < lease_ttl then redis.call('PEXPIRE', c.k1, 2 * lease_ttl) end
      taken[#taken + 1] = {c.k1, lease}
      -- A block of slots this gateway hands out without a call (within `conn` only).
      if c.w > 0 and c.y < 0 and n < c.a then
        local extra = math.min(c.w, math.floor((c.a - n) / 4))
        for j = 1, extra do
          local m = lease .. '#' .. j
          redis.call('ZADD', c.k1, now + lease_ttl, m)
          taken[#taken + 1] = {c.k1, m, nil, nil, nil, nil, base + i}
        end
        if extra > 0 then granted[base + i] = extra end
      end
      if n > c.a then gdelay = math.max(gdelay, c.c * math.floor((n - 1) / c.a)) end
    end
  end
  -- 2. tokens (and spend): reserve the estimate in each.
  for i, c in ipairs(checks) do
    if c.kind == 4 then
      local v = redis.call('HMGET', c.k1, 'c', 'e', 'r', 'zx')
      local committed, wend = tonumber(v[1]), tonumber(v[2])
      local opening = not committed or not wend or now >= wend
      if opening then
        committed = 0
        wend = now + c.b
      end
      -- Expired reservations only matter where they could change the decision (close to
      -- the limit) or a batch request's pace; elsewhere the running sum is enough.
      local stored = tonumber(v[3]) or 0
      local exact = c.y >= 0 or committed + stored + math.min(c.e, c.a) > c.a
      local reserved = reserved_sum(c.k2, tonumber(v[3]), exact)
      local left = math.max(c.a - committed - reserved, 0)
      local r = math.min(c.e, c.a)
      if c.c == 1 then r = math.min(c.e, left) end
      local reset = wend - now
      if c.y >= 0 then
        local need = math.max(r, 1)
        local wait = 0
        if committed + reserved + need + window_reserve(c.y, reset) * need > c.a then
          wait = soon(reset)
        else
          wait = pace(c.a, c.b, reset, committed + reserved, need)
        end
        if wait > 0 then
          quota[base + i] = {math.max(c.a - committed - reserved, 0), reset}
          return reject(i, wait)
        end
      end
      if left == 0 or committed + reserved + r > c.a then
        quota[base + i] = {left, reset}
        return reject(i, reset)
      end
      -- A block this gateway reserves for its next requests, all or nothing. The
      -- request's own reservation goes into it (member `<lease>#t|w+r`): the gateway
      -- charges the request to the block, so it needs no release call of its own.
      local w = 0
      if c.w > 0 and c.y < 0 and c.w <= math.floor((c.a - committed - reserved - r) / 4) then
        w = c.w
        granted[base + i] = w
      end
      -- The hash outlives its window by a lease (it carries `r`); when it is gone while
      -- reservations live on, `r` is rebuilt from the set.
      -- `zx`: the reservation set's expiry (see renew).
      local zx = renew(tonumber(v[4]), lease_ttl)
      if zx then
        redis.call('HSET', c.k1, 'c', committed, 'e', wend, 'r', reserved + r + w, 'zx', zx)
      else
        redis.call('HSET', c.k1, 'c', committed, 'e', wend, 'r', reserved + r + w)
      end
      if opening then redis.call('PEXPIRE', c.k1, reset + lease_ttl) end
      local member = lease .. '|' .. r
      if w > 0 then member = lease .. '#t|' .. (w + r) end
      redis.call('ZADD', c.k2, now + lease_ttl, member)
      if zx then redis.call('PEXPIRE', c.k2, 2 * lease_ttl) end
      taken[#taken + 1] = {c.k2, member, c.k1, r + w, base + i, left, w > 0 and base + i or nil}
      if c.c == 1 then
        quota[base + i] = {left, reset}
      else
        quota[base + i] = {math.max(c.a - committed - reserved - r, 0), reset}
      end
    end
  end
  -- 3. count: a rejected request still counts (fixed windows); sliding windows (c = 1,
  --    src/limits/count.rs) count admitted requests only.
  for i, c in ipairs(checks) do
    if c.kind == 3 and c.c == 1 then
      local w = c.b
      local wend = (math.floor(now / w) + 1) * w
      local v = redis.call('HMGET', c.k1, 'end', 'cur', 'prev', 'x')
      local e, cur, prev = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0
      if e == wend then
        -- the same window
      elseif e and e + w == wend then
        prev, cur = cur, 0
      else
        prev, cur = 0, 0
      end
      local left = wend - now
      local last = math.min(prev, c.a)
      local weighted = last * left / w
      if c.y >= 0 then
        -- A batch request without room is not counted.
        local used = cur + math.floor(weighted)
        local wait = count_wait(c, used, left)
        if wait > 0 then
          quota[base + i] = {math.max(c.a - used, 0), left}
          return reject(i, wait)
        end
      end
      if cur >= c.a or weighted + cur >= c.a then
        local reset = left
        if cur < c.a and last > 0 then reset = left - (c.a - cur) / (last / w) end
        reset = math.ceil(math.max(reset, 0) / 10) * 10
        quota[base + i] = {0, reset}
        return reject(i, math.max(reset, 10))
      end
      cur = cur + 1
      local x = renew(tonumber(v[4]), 2 * w)
      if x then
        redis.call('HSET', c.k1, 'end', wend, 'cur', cur, 'prev', prev, 'x', x)
        redis.call('PEXPIRE', c.k1, 4 * w)
      else
        redis.call('HSET', c.k1, 'end', wend, 'cur', cur, 'prev', prev)
      end
      quota[base + i] = {math.max(math.floor(c.a - cur - weighted), 0), math.ceil(left / 10) * 10}
    elseif c.kind == 3 then
      local consumed, reset
      local pttl = redis.call('PTTL', c.k1)
      if c.y >= 0 then
        -- A batch request without room is not counted.
        local used, left = 0, c.b
        if pttl >= 0 then used, left = tonumber(redis.call('GET', c.k1)) or 0, pttl end
        local wait = count_wait(c, used, left)
        if wait > 0 then
          quota[base + i] = {math.max(c.a - used, 0), left}
          return reject(i, wait)
        end
      end
      if pttl < 0 then
        redis.call('SET', c.k1, 1, 'PX', c.b)
        consumed, reset = 1, c.b
      else
        consumed, reset = redis.call('INCRBY', c.k1, 1), pttl
      end
      quota[base + i] = {math.max(c.a - consumed, 0), reset}
      if consumed > c.a then return reject(i, reset) end
      -- A quota lease: extra units counted now, spent by the gateway without a call. The
      -- quota reported is the request's own; the gateway derives the grant from it.
      if c.w > 0 and c.y < 0 then
        local extra = math.min(c.w, math.floor((c.a - consumed) / 4))
        if extra > 0 then
          redis.call('INCRBY', c.k1, extra)
          granted[base + i] = extra
        end
      end
    end
  end
  -- 4. req: leak, then add 1000 milli-requests; a rejection writes nothing. Rate shares
  --    (src/limits/lease/shares.rs) are buckets of their own in the gateways holding them
  --    (members `<lease>#r|rate|burst` of the set k2, milli-requests): this bucket leaks
  --    at the rate they leave and holds the burst they leave; an expired share's whole
  --    capacity (burst + one request) is added to the excess (its bucket may have been
  --    full), which keeps every bucket together within the rule's rate and burst.
  for i, c in ipairs(checks) do
    if c.kind == 1 then
      local all_rate, sr, sb, expired = shares(c.k2)
      local r, b = math.max(c.a * 1000 - sr, 1), c.b * 1000 - sb
      local excess = 0
      local v = redis.call('HMGET', c.k1, 'excess', 'last', 'x')
      local e, last = tonumber(v[1]), tonumber(v[2])
      if expired > 0 then
        -- Written at once: the expired shares are gone from the set, even if this
        -- request is refused.
        local leaked = 0
        if e and last then
          leaked = math.max(e - math.max(c.a * 1000 - all_rate, 1) * math.max(now - last, 0) / 1000, 0)
        end
        e, last = leaked + expired, now
        redis.call('HSET', c.k1, 'excess', math.floor(e), 'last', now)
      end
      if e and last then
        local leak = math.max(c.a * 1000 - all_rate, 1)
        if expired > 0 then leak = r end
        excess = math.max(e - leak * math.max(now - last, 0) / 1000 + 1000, 0)
      end
      if excess > b then
        return reject(i, math.ceil((excess - b) * 1000 / r))
      end
      if c.y >= 0 then
        local reserve = 0
        if c.y > 0 then reserve = 1 + math.ceil(c.y / c.a) elseif c.b >= 1 then reserve = 1 end
        local over = excess + reserve * 1000 - b
        if reserve > 0 and over > 0 then
          return reject(i, math.min(math.max(math.ceil(over * 1000 / r), 1), 60000))
        end
      end
      if c.c == 0 then
        local d = excess * 1000 / r
        if d >= 1 then gdelay = math.max(gdelay, math.floor(d)) end
      end
      -- The bucket needs (burst + 1) / rate to drain (APISIX's TTL is shorter: bug 1).
      -- (at the rate the shares leave it).
      local ttl = math.ceil((c.b * 1000 + 1000) / r * 1000) + 1000
      local x = renew(tonumber(v[3]), ttl)
      if x then
        redis.call('HSET', c.k1, 'excess', math.floor(excess), 'last', now, 'x', x)
        redis.call('PEXPIRE', c.k1, 2 * ttl)
      else
        redis.call('HSET', c.k1, 'excess', math.floor(excess), 'last', now)
      end
      if c.w > 0 and c.y < 0 and c.c == 1 then
        share_grants[#share_grants + 1] = {c, i, r, b - math.floor(excess)}
      end
    end
  end
  -- 5. rate shares, once nothing can reject: a quarter of the rate left, and a burst of
  --    a tenth of that rate (100 ms), within a quarter of the room the bucket has.
  for _, s in ipairs(share_grants) do
    local c, i, r, room = s[1], s[2], s[3], s[4]
    local g = math.min(c.w, math.floor(r / 4))
    local fit = (math.floor(room / 4) - 1000) * 10
    if fit < g then g = fit end
    if g >= 1000 then
      local m = lease .. '#r|' .. g .. '|' .. math.floor(g / 10)
      redis.call('ZADD', c.k2, now + lease_ttl, m)
      if redis.call('PTTL', c.k2) < lease_ttl then redis.call('PEXPIRE', c.k2, 2 * lease_ttl) end
      granted[base + i] = g
    end
  end
  return 1, 0, 0, gdelay
end

-- Decide one admission whose arguments start at ARGV[argi] and keys at keys[keyi];
-- append its answer (length first) to `result`; return where the next one's keys start.
local function admit(argi, keyi, result)
  lease = ARGV[argi]
  lease_ttl = tonumber(ARGV[argi + 1])
  estimate = tonumber(ARGV[argi + 2])
  local ngroups = tonumber(ARGV[argi + 3])
  local groups = {}
  local ai = argi + 4 + ngroups
  for g = 1, ngroups do
    local checks = {}
    for _ = 1, tonumber(ARGV[argi + 3 + g]) do
      -- A spend check is a token check with its own estimate (`e`) and no any_left.
      local kind, cc, e = tonumber(ARGV[ai]), tonumber(ARGV[ai + 3]), estimate
      if kind == 5 then kind, cc, e = 4, 0, cc end
      checks[#checks + 1] = {
        kind = kind, a = tonumber(ARGV[ai + 1]),
        b = tonumber(ARGV[ai + 2]), c = cc, e = e,
        y = tonumber(ARGV[ai + 4]), w = tonumber(ARGV[ai + 5]),
        k1 = keys[keyi], k2 = keys[keyi + 1],
      }
      ai = ai + 6
      keyi = keyi + 2
    end
    groups[g] = checks
  end
  quota = {}
  granted = {}
  local out = {0, 0}
  local bases, base = {}, 0
  for g = 1, ngroups do
    bases[g] = base
    base = base + #groups[g]
    out[3 * g] = -1
    out[3 * g + 1] = 0
    out[3 * g + 2] = 0
  end
  local function record(g, s, i, retry)
    out[3 * g], out[3 * g + 1], out[3 * g + 2] = s, i, retry
  end
  local s, i, retry, d = evaluate(groups[1], 0)
  record(1, s, i, retry)
  local delay = d
  if s == 1 and ngroups > 1 then
    for g = 2, ngroups do
      s, i, retry, d = evaluate(groups[g], bases[g])
      record(g, s, i, retry)
      if s == 1 then
        out[1] = g - 1
        delay = math.max(delay, d)
        break
      end
    end
  end
  out[2] = delay
  local n = 3 * ngroups + 2
  for q = 1, base do
    local v = quota[q]
    out[n + 3 * q - 2] = v and v[1] or -1
    out[n + 3 * q - 1] = v and v[2] or -1
    out[n + 3 * q] = granted[q] or 0
  end
  out[n + 3 * base + 1] = now
  result[#result + 1] = #out
  for _, v in ipairs(out) do result[#result + 1] = v end
  return keyi
end

local result, keyi = {}, 1 + 2 * nrel
for a = 1, nadmit do keyi = admit(starts[a], keyi, result) end
return result
