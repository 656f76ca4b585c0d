-- commit: apply the delta, store the timeout, slide the expiry and release the lock, if the token
-- holds the lock.
-- KEYS: [1] meta hash, [2] items hash (one hash tag: one cluster slot).
-- ARGV: [1] token, [2] timeout ms, [3] delta fingerprint (decimal u64), [4] release channel,
--       [5..] the delta (see apply_delta in the prelude).
-- Returns: 1 committed | 0 lock lost (nothing written).
-- Atomic: the token check and the writes are one script. Only the delta's fields are written.
-- Idempotent under retry: the settled record {st=token, sf=fingerprint} is the session's last
-- successful commit. A repeat of that commit (its reply was lost) reports 1 without applying
-- anything twice, even after another request acquired and released the lock: only the next commit
-- replaces the record; acquire and release leave it (docs/contract.md §2, "Repeated calls").
-- Round trips: 1.
local m = redis.call('HMGET', KEYS[1], 'l', 'st', 'sf')
if m[1] and m[1] == ARGV[1] then
  apply_delta(5)
  redis.call('HSET', KEYS[1], 't', ARGV[2], 'st', ARGV[1], 'sf', ARGV[3])
  -- 'sk' (the record's kind, c or r, from earlier versions in which releases shared the record)
  -- is cleared with the lock.
  redis.call('HDEL', KEYS[1], 'l', 's', 'sk')
  slide(ARGV[2])
  redis.call('PUBLISH', ARGV[4], 'committed')
  return 1
end
if m[2] == ARGV[1] and m[3] == ARGV[3] then
  return 1
end
-- Taken over, released, expired or gone (docs/contract.md §2 rule 1).
return 0
