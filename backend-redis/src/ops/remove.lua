-- remove: delete a session on behalf of its lock holder (ASP.NET Abandon).
-- KEYS: [1] meta hash, [2] items hash (one hash tag: one cluster slot).
-- ARGV: [1] token, [2] release channel.
-- Returns: 1 removed | 0 missing | 2 lock lost (nothing changed).
-- Atomic: token check and delete in one script. Round trips: 1.
local holder = redis.call('HGET', KEYS[1], 'l')
if holder and holder == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('PUBLISH', ARGV[2], 'removed')
  return 1
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
return 2
