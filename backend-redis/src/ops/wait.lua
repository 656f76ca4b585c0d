-- wait: ask to be told when the session's current lock ends (run by watch_release after its
-- SUBSCRIBE is confirmed): sets the header's waiting byte, so that the script that ends the lock
-- (commit, release, remove, delete, change_id, a stale takeover) PUBLISHes on the release channel.
-- Ends of locks nobody waits for publish nothing.
-- KEYS: [1] session, [2] alive marker (one hash tag: one cluster slot).
-- ARGV: none.
-- Returns: 1 set (or already set) | 0 nothing to wait for (missing, unlocked, or a value this
--          layout did not write: the waiter's next look reports it).
-- Order: the waiter subscribes first, then runs this, then looks again (the manager does), so a
-- lock that ends before this script runs is found free by that look, and one that ends after it
-- publishes to a confirmed subscription: no release is missed. SETRANGE keeps the expiry.
-- Round trips: 1.
local h = redis.call('GETRANGE', KEYS[1], 0, HEADER - 1)
local s = open(h)
if not s or s.locked ~= 1 then
  return 0
end
if string.byte(h, 4) == 0 then
  redis.call('SETRANGE', KEYS[1], 3, '\1')
end
return 1
