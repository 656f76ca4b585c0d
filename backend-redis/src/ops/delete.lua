-- delete: administrative delete regardless of locks (log out everywhere).
-- KEYS: [1] meta hash, [2] items hash (one hash tag: one cluster slot).
-- ARGV: [1] release channel, [2] '1' to return the final items (for the expiry event of the
--       process that deletes; only it reports the end) else '0'.
-- Returns: 1 removed | {1, {name, value, ...}} removed, with the final items | 0 missing.
-- Atomic: one script; a holder's later commit finds no meta hash and is lock lost. Round trips: 1.
local holder = redis.call('HGET', KEYS[1], 'l')
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local final = nil
if ARGV[2] == '1' then
  final = redis.call('HGETALL', KEYS[2])
end
redis.call('DEL', KEYS[1], KEYS[2])
if holder then
  redis.call('PUBLISH', ARGV[1], 'deleted')
end
if final then
  return {1, final}
end
return 1
