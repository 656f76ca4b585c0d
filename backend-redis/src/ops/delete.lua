-- delete: administrative delete regardless of locks (log out everywhere).
-- KEYS: [1] session, [2] alive marker (one hash tag: one cluster slot).
-- ARGV: [1] release channel, [2] '1' to return the final value (for the expiry event of the
--       process that deletes; only it reports the end) else '0'.
-- Returns: 1 removed | {1, final value} removed, with the final items | 0 missing.
-- Atomic: one script; a holder's later commit finds no session and is lock lost. A value this
-- layout did not write is deleted too (an administrative delete must always work): an empty one
-- (EXISTS tells it from no value, only when GETRANGE answers ''), and a key of another type than
-- a string (its read fails: pcall; if the failure was a permission, DEL reports it).
-- Round trips: 1.
local v
if ARGV[2] == '1' then
  v = redis.pcall('GET', KEYS[1])
else
  v = redis.pcall('GETRANGE', KEYS[1], 0, HEADER - 1)
  if v == '' and redis.call('EXISTS', KEYS[1]) == 0 then
    v = false
  end
end
if type(v) == 'table' then
  v = ''
end
local s, missing = open(v)
if not s and missing == 0 then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
if s and s.locked == 1 and string.byte(v, 4) ~= 0 then
  redis.call('PUBLISH', ARGV[1], 'deleted')
end
if s and ARGV[2] == '1' then
  return {1, v}
end
return 1
