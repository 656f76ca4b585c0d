-- create: insert a new, unlocked session if none exists.
-- KEYS: [1] meta hash, [2] items hash (one hash tag: one cluster slot).
-- ARGV: [1] timeout ms, [2] initialized '1'/'0', [3..] name/value pairs.
-- Returns: 1 created | 0 already exists (untouched, lock included: docs/contract.md §2 rule 2).
-- Atomic: insert-if-absent in one script, never check-then-act across round trips. Round trips: 1.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
-- An items key without its meta key belongs to no session; never let it leak into this one.
redis.call('DEL', KEYS[2])
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 't', ARGV[1])
else
  redis.call('HSET', KEYS[1], 't', ARGV[1], 'i', '1')
end
for j = 3, #ARGV - 1, 2 do
  redis.call('HSET', KEYS[2], ARGV[j], ARGV[j + 1])
end
slide(ARGV[1])
return 1
