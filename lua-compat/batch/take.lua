-- batch/take.lua: a script of the Redis batch store (src/batch/redis/).
-- Move a request from pending (or running, when taken over) to running; nil when it has
-- ended or its batch is not running (the entry is then only acknowledged).
if redis.call('HGET', KEYS[2], 'status') ~= 'in_progress' then return false end
local s = redis.call('HGET', KEYS[1], ARGV[1])
if s ~= 'pending' and s ~= 'running' then return false end
redis.call('HSET', KEYS[1], ARGV[1], 'running')
return {redis.call('HGET', KEYS[4], ARGV[1]) or '', redis.call('HGET', KEYS[3], ARGV[1]) or '0'}
