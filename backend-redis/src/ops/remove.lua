-- remove: delete a session on behalf of its lock holder (ASP.NET Abandon).
-- KEYS: [1] session, [2] alive marker (one hash tag: one cluster slot).
-- ARGV: [1] token (16 bytes), [2] release channel, [3] '1' to return the final value (for the
--       expiry event of the process that removes; only it reports the end) else '0'.
-- Returns: 1 removed | {1, final value} removed, with the final items | 0 missing |
--          2 lock lost (nothing changed) | -1 corrupt header.
-- Atomic: token check, reading the final items and delete in one script. An empty value is
-- corrupt, not missing (EXISTS, only when GETRANGE answers ''). Round trips: 1.
local v
if ARGV[3] == '1' then
  v = redis.call('GET', KEYS[1])
else
  v = redis.call('GETRANGE', KEYS[1], 0, HEADER - 1)
  if v == '' and redis.call('EXISTS', KEYS[1]) == 0 then
    v = false
  end
end
local s, missing = open(v)
if not s then
  return missing
end
if s.locked ~= 1 or string.sub(v, 5, 20) ~= ARGV[1] then
  return 2
end
redis.call('DEL', KEYS[1], KEYS[2])
if string.byte(v, 4) ~= 0 then
  redis.call('PUBLISH', ARGV[2], 'removed')
end
if ARGV[3] == '1' then
  return {1, v}
end
return 1
