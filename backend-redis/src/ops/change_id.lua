-- change_id (standalone only): move a locked session to a new id, keeping data, timeout, expiry and
-- lock (the same token stays valid under the new id).
-- KEYS: [1] old meta hash, [2] old items hash, [3] new meta hash, [4] new items hash. The old and
--       new keys have different hash tags, so this script exists only for a standalone server: on
--       a cluster they live in different slots and the capability is not declared.
-- ARGV: [1] token, [2] the old id's release channel (its waiters must look again: the id is gone).
-- Returns: 1 changed | 0 lock lost (nothing changed) | 2 the new id is taken (nothing changed).
-- Atomic: check and both RENAMEs in one script (RENAME keeps each key's TTL). Round trips: 1.
local holder = redis.call('HGET', KEYS[1], 'l')
if not holder or holder ~= ARGV[1] then
  return 0
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return 2
end
-- Items without a meta hash belong to no session.
redis.call('DEL', KEYS[4])
redis.call('RENAME', KEYS[1], KEYS[3])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('RENAME', KEYS[2], KEYS[4])
end
redis.call('PUBLISH', ARGV[2], 'released')
return 1
