-- Delete one response of a consumer and take its bytes off the consumer's total.
-- KEYS[1] the response hash, KEYS[2] the index, KEYS[3] the sizes, KEYS[4] the total.
-- ARGV: consumer, id. Returns 1 when there was such a response, else 0.
if redis.call('HGET', KEYS[1], 'consumer') ~= ARGV[1] then return 0 end
local b = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
if b > 0 and redis.call('EXISTS', KEYS[4]) == 1 then
  local left = redis.call('DECRBY', KEYS[4], b)
  if left < 0 then redis.call('SET', KEYS[4], 0, 'KEEPTTL') end
end
return 1
