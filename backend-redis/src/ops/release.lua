-- release: release the lock without writing the items, and slide the expiry when due, if the
-- token holds the lock.
-- KEYS: [1] session, [2] alive marker (one hash tag: one cluster slot).
-- ARGV: [1] token (16 bytes), [2] release channel, [3] refresh window percent.
-- Returns: 1 released | 0 lock lost (nothing changed) | -1 corrupt header.
-- Atomic: one script. Records nothing: a repeat of this release (its reply was lost) finds the lock
-- gone and gets 0, which the retry layer reads as released; the last commit's settled record
-- stays (docs/contract.md §2, "Repeated calls"). An empty value is corrupt, not missing (EXISTS,
-- only when GETRANGE answers ''). Round trips: 1.
local h = redis.call('GETRANGE', KEYS[1], 0, HEADER - 1)
if h == '' and redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local s, missing = open(h)
if not s then
  return missing
end
if s.locked ~= 1 or string.sub(h, 5, 20) ~= ARGV[1] then
  return 0
end
-- Unlocked: the locked byte, the waiting byte, the token and the lock time zeroed.
redis.call('SETRANGE', KEYS[1], 2, string.rep('\0', 24))
slide_if_due(s, tonumber(ARGV[3]))
if string.byte(h, 4) ~= 0 then
  redis.call('PUBLISH', ARGV[2], 'released')
end
return 1
