-- release: release the lock without writing, and slide the expiry, if the token holds the lock.
-- KEYS: [1] meta hash, [2] items hash (one hash tag: one cluster slot).
-- ARGV: [1] token, [2] release channel.
-- Returns: 1 released | 0 lock lost (nothing changed) | -1 corrupt meta hash.
-- Atomic: one script. Records nothing: a repeat of this release (its reply was lost) finds the lock
-- gone and gets 0, which the retry layer reads as released; the last commit's settled record
-- (st/sf, see commit.lua) stays (docs/contract.md §2, "Repeated calls"). Round trips: 1.
local m = redis.call('HMGET', KEYS[1], 't', 'l')
if m[2] and m[2] == ARGV[1] then
  local timeout = stored_timeout(m[1])
  if not timeout then
    return -1
  end
  redis.call('HDEL', KEYS[1], 'l', 's')
  slide(timeout)
  redis.call('PUBLISH', ARGV[2], 'released')
  return 1
end
return 0
