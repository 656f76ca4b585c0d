-- write_concurrent: lock-free write; merges the delta per item (last writer wins per item), stores
-- the timeout and slides the expiry, ignoring and keeping any lock.
-- KEYS: [1] session, [2] alive marker (one hash tag: one cluster slot).
-- ARGV: [1] timeout ms, [2] refresh window percent, [3..] the delta (see items_after in
--       delta.lua).
-- Returns: 1 committed | 0 missing (nothing created) | -1 corrupt value (nothing written).
-- Atomic: one script; the items the delta does not name keep their stored bytes, which is what
-- makes concurrent writers of distinct items merge. Never retried by the core (repeating it could
-- overwrite a newer value). Round trips: 1.
local v = redis.call('GET', KEYS[1])
local s, missing = open(v)
if not s then
  return missing
end
local items = items_after(v, 3)
if not items then
  return -1
end
local timeout = tonumber(ARGV[1])
local to = timeout + math.floor(timeout * tonumber(ARGV[2]) / 100)
-- The timeout as six big-endian bytes (0 < timeout < 2^48).
local n = timeout
local bytes = {}
for k = 6, 1, -1 do
  local r = n % 256
  bytes[k] = r
  n = (n - r) / 256
end
-- The header up to the timeout (flags, lock) stays; then the new timeout and the settled record.
redis.call('SET', KEYS[1],
  string.sub(v, 1, 26) .. string.char(unpack(bytes)) .. string.sub(v, 33, HEADER) .. items,
  'PX', to + s.grace)
if s.grace > 0 then
  mark(to)
end
return 1
