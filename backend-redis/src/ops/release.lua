-- release: release the lock without writing, and slide the expiry, if the token holds the lock.
-- KEYS: [1] meta hash, [2] items hash (one hash tag: one cluster slot).
-- ARGV: [1] token, [2] release channel.
-- Returns: 1 released | 0 lock lost (nothing changed) | -1 corrupt meta hash.
-- Atomic: one script. Idempotent under retry: the settled record {sk='r', st=token} lets a repeat
-- of this release report 1 again without touching a newer holder's lock. Round trips: 1.
local m = redis.call('HMGET', KEYS[1], 't', 'l', 'sk', 'st')
if m[2] and m[2] == ARGV[1] then
  local timeout = stored_timeout(m[1])
  if not timeout then
    return -1
  end
  redis.call('HDEL', KEYS[1], 'l', 's', 'sf')
  redis.call('HSET', KEYS[1], 'sk', 'r', 'st', ARGV[1])
  slide(timeout)
  redis.call('PUBLISH', ARGV[2], 'released')
  return 1
end
if m[3] == 'r' and m[4] == ARGV[1] then
  return 1
end
return 0
