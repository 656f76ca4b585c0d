-- claim_lost: claim the end of a session whose take failed in a way a repeat would not cure (its
-- value replaced by a key of another type, a reply the listener cannot read), without touching
-- its value: the listener then reports the end as `ExpiredItemsLost` (take.rs `claim_lost`).
-- KEYS: [1] alive marker, [2] end claim, [3] session (one hash tag: one slot).
-- ARGV: [1] the take's claim token.
-- Returns: 1 claimed (now, or already by this token) | 0 not ours to report (the session is
-- alive again, or another take claimed its end). The same claim as take.lua's, atomic with the
-- check of the alive marker, outliving the value it leaves in place (`claim_ttl`). Round trips: 1.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', claim_ttl(KEYS[3]))
    or redis.call('GET', KEYS[2]) == ARGV[1] then
  return 1
end
return 0
