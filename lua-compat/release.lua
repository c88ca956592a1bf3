-- release.lua: give back what admitted requests held, for many requests at once (loaded
-- with common.lua in front: `give_back`, `script_keys`).
--
-- Mirrors Ticket::finish / drop in src/limits/admission.rs: a conn lease is removed; a
-- token reservation is removed (and taken off the hash's running sum `r`) and the tokens
-- really used are charged to the window (opening a new window if the old one has ended, as
-- TokenLimit::reconcile does).
--
-- A rate share (src/limits/lease/shares.rs) given back: its member removed from the
-- bucket's set and its bucket's excess added to the bucket's, leaked first at the rate the
-- bucket had (the rule's rate less every share's, this one included).
--
-- ARGV: n, then per entry 4 values: kind (1 rate share, 2 conn, 4 tokens), member,
--       window_ms (a rate share: the rule's rate in milli-requests/s), used (a rate share:
--       its bucket's excess, milli-requests).
-- KEYS: two per entry. rate share: bucket hash, set of shares; conn: zset, -; tokens: hash
--       {c, e}, zset of reservations.
--       On Redis Cluster, keys of several slots that one node owns come in one call: KEYS
--       then holds only the first and all of them follow the entries in ARGV; each is
--       probed first, and if one lives on another node the script changes nothing and
--       returns -1 (the gateway then sends one call per slot).

local n = tonumber(ARGV[1])
local keys = script_keys(2 + 4 * n, 2 * n)
if not keys then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, n do
  give_back(now, 2 + (i - 1) * 4, keys[2 * i - 1], keys[2 * i])
end
return 1
