-- remove: delete a session on behalf of its lock holder (ASP.NET Abandon).
-- KEYS: [1] meta hash, [2] items hash (one hash tag: one cluster slot).
-- ARGV: [1] token, [2] release channel, [3] '1' to return the final items (for the expiry event of
--       the process that removes; only it reports the end) else '0'.
-- Returns: 1 removed | {1, {name, value, ...}} removed, with the final items | 0 missing |
--          2 lock lost (nothing changed).
-- Atomic: token check, reading the final items and delete in one script. Round trips: 1.
local holder = redis.call('HGET', KEYS[1], 'l')
if holder and holder == ARGV[1] then
  local final = nil
  if ARGV[3] == '1' then
    final = redis.call('HGETALL', KEYS[2])
  end
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('PUBLISH', ARGV[2], 'removed')
  if final then
    return {1, final}
  end
  return 1
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
return 2
