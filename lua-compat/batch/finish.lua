-- batch/finish.lua: a script of the Redis batch store (src/batch/redis/).
-- Write a result once: KEYS st, res, b, at, stream; ARGV cid, state, line, in, out, entry.
local s = redis.call('HGET', KEYS[1], ARGV[1])
if s == 'running' or s == 'pending' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  local counter = 'failed'
  if ARGV[2] == 'done' then counter = 'completed' end
  redis.call('HINCRBY', KEYS[3], counter, 1)
  redis.call('HINCRBY', KEYS[3], 'input_tokens', ARGV[4])
  redis.call('HINCRBY', KEYS[3], 'output_tokens', ARGV[5])
  redis.call('HINCRBY', KEYS[4], ARGV[1], 1)
end
-- An entry done with is deleted, so the stream does not grow with every request run.
if ARGV[6] ~= '' then
  redis.call('XACK', KEYS[5], 'd', ARGV[6])
  redis.call('XDEL', KEYS[5], ARGV[6])
end
return 1
