-- take: claim the end of a session whose alive marker expired, and take its final items (run by
-- the expiry listener for an `expired` keyspace notification of KEYS[2], or for an ended session
-- its sweep found).
-- KEYS: [1] session, [2] alive marker, [3] end claim (a string key; one hash tag: one slot).
-- ARGV: [1] the claim's token: unique per take (the listener's id and a sequence number), the
--       same when the listener repeats a take whose reply it did not get.
-- Returns: 0 not ours to report (the session exists again, or another take claimed its end) |
--          {1, final value} claimed | {1} claimed, but the value is gone (evicted, flushed, or
--          claimed after the grace period) or unreadable (not this layout's bytes): the listener
--          reports `ExpiredItemsLost`, never an `Expired` event without items. (A value of
--          another type fails the GET: the listener then claims the end with claim_lost.lua,
--          `take::claim_lost`.)
-- Atomic: the claim (SET NX), GET and DEL are one script, so exactly one take of a web farm
-- reports each end, even when every process hears the notification (or sweeps it). A repeated
-- take with the same token finds its own claim: it reports the end again (with no items: the
-- first run took them), never nothing. The claim outlives the value (2 × GRACE_MS, or the value's
-- own TTL plus GRACE_MS when it is longer: bytes of another writer left in place) so that a late
-- notification or a later sweep cannot report the same end twice. Round trips: 1.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
local v = redis.call('GET', KEYS[1])
local s, missing = open(v)
if s then
  -- Alive again (re-created).
  return 0
end
if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', claim_ttl(KEYS[1]))
    and redis.call('GET', KEYS[3]) ~= ARGV[1] then
  return 0
end
if not v or missing == -1 then
  -- Gone, or bytes this layout did not write under the session's name (corrupt: left as they
  -- are, like every operation leaves them): the end is reported with its items lost.
  return {1}
end
redis.call('DEL', KEYS[1])
return {1, v}
