-- batch/retry.lua: a script of the Redis batch store (src/batch/redis/).
-- Put a running request back: KEYS st, at, delayed, stream; ARGV cid, counts, due,
-- member, entry.
if redis.call('HGET', KEYS[1], ARGV[1]) == 'running' then
  redis.call('HSET', KEYS[1], ARGV[1], 'pending')
  if ARGV[2] == '1' then redis.call('HINCRBY', KEYS[2], ARGV[1], 1) end
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
end
-- The retry comes back as a new entry (requeue.lua): this one is done with.
if ARGV[5] ~= '' then
  redis.call('XACK', KEYS[4], 'd', ARGV[5])
  redis.call('XDEL', KEYS[4], ARGV[5])
end
return 1
