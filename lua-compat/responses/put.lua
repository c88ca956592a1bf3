-- Store one Responses API response and keep its consumer within its quota.
-- KEYS[1] the response hash, KEYS[2] the consumer's index (zset: id by created),
-- KEYS[3] the consumer's sizes (hash: id -> bytes).
-- ARGV: consumer, created, bytes, response, input, ttl seconds, quota bytes, id,
--       response key prefix, cutoff (created before it: expired).
local ttl = tonumber(ARGV[6])
-- Forget what the retention has already expired (its hash is gone with its TTL).
for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[10])) do
  redis.call('HDEL', KEYS[3], old)
  redis.call('ZREM', KEYS[2], old)
end
redis.call('HSET', KEYS[1], 'consumer', ARGV[1], 'created', ARGV[2], 'response', ARGV[4],
  'input', ARGV[5])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[8])
redis.call('HSET', KEYS[3], ARGV[8], ARGV[3])
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('EXPIRE', KEYS[3], ttl)
local held = 0
for i, v in ipairs(redis.call('HVALS', KEYS[3])) do held = held + tonumber(v) end
local quota = tonumber(ARGV[7])
while held > quota do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 1)
  local victim = oldest[1]
  if victim == ARGV[8] then victim = oldest[2] end
  if not victim then break end
  held = held - tonumber(redis.call('HGET', KEYS[3], victim) or '0')
  redis.call('DEL', ARGV[9] .. victim)
  redis.call('ZREM', KEYS[2], victim)
  redis.call('HDEL', KEYS[3], victim)
end
return held
