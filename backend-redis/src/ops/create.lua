-- create: insert a new, unlocked session if none exists.
-- KEYS: [1] session, [2] alive marker (one hash tag: one cluster slot).
-- ARGV: [1] the whole value (header and items, built by the client), [2] its expiry ms
--       (timeout + w, plus the grace period with the EVENTS flag), [3] the marker's expiry ms
--       (timeout + w) or '0' without the EVENTS flag.
-- Returns: 1 created | 0 already exists (untouched, lock included: docs/contract.md §2 rule 2).
-- Atomic: insert-if-absent in one script, never check-then-act across round trips. An ended
-- session's value still in its grace period is not a session: it is replaced. EXISTS first: a new
-- id (the usual case) costs no read, and an empty value, for which GETRANGE answers as for no
-- value, is found to exist (and, like any value this layout did not write, kept). Round trips: 1.
if redis.call('EXISTS', KEYS[1]) == 1 then
  local s, missing = open(redis.call('GETRANGE', KEYS[1], 0, HEADER - 1))
  if s or missing == -1 then
    -- A live session, or a value this layout did not write: never overwritten.
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] ~= '0' then
  redis.call('SET', KEYS[2], '', 'PX', ARGV[3])
end
return 1
