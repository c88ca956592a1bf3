-- Store one Responses API response and keep its consumer within its quota, with bounded
-- work whatever the consumer holds: the consumer's total is a counter of its own.
-- KEYS[1] the response hash, KEYS[2] the consumer's index (zset: id by created),
-- KEYS[3] the consumer's sizes (hash: id -> bytes), KEYS[4] the consumer's total bytes.
-- ARGV: consumer, created, bytes, response, input, ttl seconds, quota bytes, id,
--       response key prefix, cutoff (created before it: expired), max evictions.
-- Returns {1, held, evicted} when stored, {0, held} when refused (nothing changed but
-- the forgetting of expired entries).
local ttl = tonumber(ARGV[6])
local bytes = tonumber(ARGV[3])
local quota = tonumber(ARGV[7])
local max_evict = tonumber(ARGV[11])
local held = tonumber(redis.call('GET', KEYS[4]) or '-1')
if held < 0 then
  -- No total yet (a new consumer, or entries written before totals existed): sum once.
  held = 0
  for _, v in ipairs(redis.call('HVALS', KEYS[3])) do held = held + tonumber(v) end
end
-- Forget (a bounded number of) entries the retention has expired: their hashes are gone
-- with their TTL; their bytes leave the total.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[10], 'LIMIT', 0, 64)
for _, old in ipairs(expired) do
  held = held - tonumber(redis.call('HGET', KEYS[3], old) or '0')
  redis.call('HDEL', KEYS[3], old)
  redis.call('ZREM', KEYS[2], old)
end
if held < 0 then held = 0 end
local replaced = tonumber(redis.call('HGET', KEYS[3], ARGV[8]) or '0')
local now = held - replaced
if bytes > quota then
  redis.call('SET', KEYS[4], held, 'EX', ttl)
  return {0, held}
end
local victims = {}
if now + bytes > quota then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, max_evict)
  for _, v in ipairs(oldest) do
    if v ~= ARGV[8] and #victims < max_evict then
      victims[#victims + 1] = v
      now = now - tonumber(redis.call('HGET', KEYS[3], v) or '0')
      if now + bytes <= quota then break end
    end
  end
  if now + bytes > quota then
    redis.call('SET', KEYS[4], held, 'EX', ttl)
    return {0, held}
  end
end
for _, v in ipairs(victims) do
  redis.call('DEL', ARGV[9] .. v)
  redis.call('ZREM', KEYS[2], v)
  redis.call('HDEL', KEYS[3], v)
end
redis.call('HSET', KEYS[1], 'consumer', ARGV[1], 'created', ARGV[2], 'response', ARGV[4],
  'input', ARGV[5])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[8])
redis.call('HSET', KEYS[3], ARGV[8], bytes)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('EXPIRE', KEYS[3], ttl)
held = now + bytes
redis.call('SET', KEYS[4], held, 'EX', ttl)
return {1, held, #victims}
