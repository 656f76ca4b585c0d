-- take: claim the end of a session whose meta hash expired, and take its final items (run by the
-- expiry listener on an `expired` keyspace notification for KEYS[1]).
-- KEYS: [1] meta hash, [2] items hash, [3] end claim (a string key; one hash tag: one slot).
-- ARGV: none.
-- Returns: 0 not ours to report (the session exists again, or another process claimed its end) |
--          {1, {name, value, ...}} claimed, with the final items (empty if it had none).
-- Atomic: the claim (SET NX), HGETALL and DEL are one script, so exactly one process of a web farm
-- reports each end, even when every process hears the notification. The claim outlives the items
-- (2 × GRACE_MS) so that a late notification cannot report the same end twice. Round trips: 1.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', 2 * GRACE_MS) then
  return 0
end
local final = redis.call('HGETALL', KEYS[2])
redis.call('DEL', KEYS[2])
return {1, final}
