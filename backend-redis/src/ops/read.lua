-- read: a session's data without locking it.
-- KEYS: [1] meta hash, [2] items hash (one hash tag: one cluster slot).
-- ARGV: none.
-- Returns: {0} missing | {1, holder token, lock age ms} locked (no data) |
--          {2, timeout ms, initialize 0/1, {name, value, ...}} found | {-1} corrupt meta hash.
-- Atomic: the existence check, the slide, clearing the one-shot initialize flag and HGETALL happen
-- in one script, so no other operation can interleave. Round trips: 1.
local m, reply = open_session()
if not m then
  return reply
end
if m[2] then
  local since = tonumber(m[3])
  if not since then
    return {-1}
  end
  return {1, m[2], math.max(0, now_ms() - since)}
end
local initialize = 0
if m[4] then
  -- Reported exactly once (docs/contract.md §2 rule 3).
  redis.call('HDEL', KEYS[1], 'i')
  initialize = 1
end
return {2, m[1], initialize, redis.call('HGETALL', KEYS[2])}
