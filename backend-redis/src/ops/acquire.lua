-- acquire: lock a session with the caller's token and return its data; a stale lock is taken over
-- in the same step.
-- KEYS: [1] meta hash, [2] items hash (one hash tag: one cluster slot).
-- ARGV: [1] token (32 hex), [2] lock TTL ms, [3] release channel.
-- Returns: {0} missing | {1, holder token, lock age ms} locked |
--          {2, timeout ms, initialize 0/1, {name, value, ...}} acquired | {-1} corrupt meta hash.
-- Atomic: check, takeover and lock happen in one script; two acquirers can never both win.
-- The lock time comes from the server's clock (TIME), so lock age never depends on a web
-- server's clock. Round trips: 1.
local m, reply = open_session()
if not m then
  return reply
end
local now = now_ms()
local took_over = false
if m[2] then
  local since = tonumber(m[3])
  if not since then
    return {-1}
  end
  local age = math.max(0, now - since)
  if m[2] == ARGV[1] then
    -- The retry of our own acquire whose reply was lost: the lock is already ours, and keeps its
    -- age. The first attempt already cleared (and reported) the initialize flag.
    return {2, m[1], 0, redis.call('HGETALL', KEYS[2])}
  end
  if age < tonumber(ARGV[2]) then
    return {1, m[2], age}
  end
  took_over = true
end
-- Free or stale. The settled record (st/sf) stays: the previous holder's retried commit must still
-- be recognised (commit.lua).
redis.call('HSET', KEYS[1], 'l', ARGV[1], 's', now)
local initialize = 0
if m[4] then
  redis.call('HDEL', KEYS[1], 'i')
  initialize = 1
end
if took_over then
  -- The stale holder's lock ended: its watchers look again (and find the new lock).
  redis.call('PUBLISH', ARGV[3], 'taken-over')
end
return {2, m[1], initialize, redis.call('HGETALL', KEYS[2])}
