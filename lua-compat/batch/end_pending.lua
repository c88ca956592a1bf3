-- batch/end_pending.lua: a script of the Redis batch store (src/batch/redis/).
-- End pending requests with error lines: KEYS st, res, b; ARGV (cid, line)…; returns n.
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == 'pending' then
    redis.call('HSET', KEYS[1], ARGV[i], 'failed')
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    n = n + 1
  end
end
if n > 0 then redis.call('HINCRBY', KEYS[3], 'failed', n) end
return n
