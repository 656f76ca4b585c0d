-- take: claim the end of a session whose alive marker expired, and take its final items (run by
-- the expiry listener on an `expired` keyspace notification for KEYS[2]).
-- KEYS: [1] session, [2] alive marker, [3] end claim (a string key; one hash tag: one slot).
-- ARGV: none.
-- Returns: 0 not ours to report (the session exists again, or another process claimed its end) |
--          {1, final value} claimed | {1} claimed, but the value is gone (the notification came
--          after the grace period: the end is still reported once, without items).
-- Atomic: the claim (SET NX), GET and DEL are one script, so exactly one process of a web farm
-- reports each end, even when every process hears the notification. The claim outlives the value
-- (2 × GRACE_MS) so that a late notification cannot report the same end twice. Round trips: 1.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
local v = redis.call('GET', KEYS[1])
local s, missing = open(v)
if s or missing == -1 then
  -- Alive again (re-created), or not a value this layout wrote.
  return 0
end
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', 2 * GRACE_MS) then
  return 0
end
if not v then
  return {1}
end
redis.call('DEL', KEYS[1])
return {1, v}
