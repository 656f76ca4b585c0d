-- delete: administrative delete regardless of locks (log out everywhere).
-- KEYS: [1] meta hash, [2] items hash (one hash tag: one cluster slot).
-- ARGV: [1] release channel.
-- Returns: 1 removed | 0 missing.
-- Atomic: one script; a holder's later commit finds no meta hash and is lock lost. Round trips: 1.
local holder = redis.call('HGET', KEYS[1], 'l')
if redis.call('DEL', KEYS[1]) == 0 then
  return 0
end
redis.call('DEL', KEYS[2])
if holder then
  redis.call('PUBLISH', ARGV[1], 'deleted')
end
return 1
