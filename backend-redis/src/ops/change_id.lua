-- change_id (standalone only): move a locked session to a new id, keeping data, timeout, expiry and
-- lock (the same token stays valid under the new id).
-- KEYS: [1] old session, [2] old alive marker, [3] new session, [4] new alive marker. The old and
--       new keys have different hash tags, so this script exists only for a standalone server: on
--       a cluster they live in different slots and the capability is not declared.
-- ARGV: [1] token (16 bytes), [2] the old id's release channel (its waiters must look again: the
--       id is gone).
-- Returns: 1 changed | 0 lock lost (nothing changed) | 2 the new id is taken (nothing changed) |
--          -1 corrupt header.
-- Atomic: check and both RENAMEs in one script (RENAME keeps each key's TTL). An empty value is
-- corrupt, not missing (EXISTS, only when GETRANGE answers ''). Round trips: 1.
local h = redis.call('GETRANGE', KEYS[1], 0, HEADER - 1)
if h == '' and redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local s, missing = open(h)
if not s then
  return missing
end
if s.locked ~= 1 or string.sub(h, 5, 20) ~= ARGV[1] then
  return 0
end
-- Whatever the new id holds that this layout did not write (an empty value, a key of another
-- type: its read fails, hence pcall) is never overwritten.
local taken = redis.pcall('GETRANGE', KEYS[3], 0, HEADER - 1)
if type(taken) == 'table' or (taken == '' and redis.call('EXISTS', KEYS[3]) == 1) then
  return 2
end
if taken ~= '' then
  local t, gone = open(taken, KEYS[3])
  if t or gone == -1 then
    return 2
  end
end
-- An ended session's value (or marker) at the new id belongs to no session.
redis.call('DEL', KEYS[4])
redis.call('RENAME', KEYS[1], KEYS[3])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('RENAME', KEYS[2], KEYS[4])
end
if string.byte(h, 4) ~= 0 then
  -- The old id's waiters look again (the id is gone); the new id starts without waiters.
  redis.call('SETRANGE', KEYS[3], 3, '\0')
  redis.call('PUBLISH', ARGV[2], 'released')
end
return 1
