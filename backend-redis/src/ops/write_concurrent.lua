-- write_concurrent: lock-free write; merges the delta per item (last writer wins per item), stores
-- the timeout and slides the expiry, ignoring and keeping any lock.
-- KEYS: [1] meta hash, [2] items hash (one hash tag: one cluster slot).
-- ARGV: [1] timeout ms, [2..] the delta (see apply_delta in the prelude).
-- Returns: 1 committed | 0 missing (nothing created).
-- Atomic: one script; per-item HSET/HDEL is what makes concurrent writers of distinct items
-- merge. Never retried by the core (repeating it could overwrite a newer value). Round trips: 1.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
apply_delta(2)
redis.call('HSET', KEYS[1], 't', ARGV[1])
slide(ARGV[1])
return 1
