-- batch/requeue.lua: a script of the Redis batch store (src/batch/redis/).
-- A due retry back on its stream, once: KEYS delayed, stream; ARGV member, batch, cid.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[2], '*', 'b', ARGV[2], 'c', ARGV[3])
end
return 1
