-- Add validated requests of a batch in validation, once each (validation resumed after a
-- crash adds the same lines again: not duplicates). The body is not copied: `ref` is
-- "@start:len", the line's place in the batch's input file.
-- KEYS: ln (custom_id -> line), body, st, l (custom_ids in input order)
-- ARGV: (custom_id, line, ref)...
-- Returns the lines whose custom_id an earlier line already has.
local dups = {}
for i = 1, #ARGV, 3 do
  local cid, line, ref = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local old = redis.call('HGET', KEYS[1], cid)
  if not old then
    redis.call('HSET', KEYS[1], cid, line)
    redis.call('HSET', KEYS[2], cid, ref)
    redis.call('HSETNX', KEYS[3], cid, 'pending')
    redis.call('RPUSH', KEYS[4], cid)
  elseif old ~= line then
    dups[#dups + 1] = tonumber(line)
  end
end
return dups
