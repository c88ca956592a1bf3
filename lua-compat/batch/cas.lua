-- batch/cas.lua: a script of the Redis batch store (src/batch/redis/).
-- Compare-and-set one hash field: KEYS h; ARGV field, allowed old values (comma-separated,
-- `~` for absent), new value, then field/value pairs to set too. Returns 'ok' or the old
-- value ('~' when absent).
local old = redis.call('HGET', KEYS[1], ARGV[1]) or '~'
for v in string.gmatch(ARGV[2], '[^,]+') do
  if v == old then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
    for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
    return 'ok'
  end
end
return old
