-- acquire: lock a session with the caller's token and return its data; a stale lock is taken over
-- in the same step.
-- KEYS: [1] session, [2] alive marker (one hash tag: one cluster slot).
-- ARGV: [1] token (16 bytes), [2] lock TTL ms, [3] refresh window percent, [4] release channel.
-- Returns: 0 missing | -1 corrupt header | {holder token (16 bytes), lock age ms} locked |
--          the stored value before this acquire (its header carries the uninitialized flag when
--          this acquire reports it) acquired.
-- Atomic: check, takeover and lock happen in one script; two acquirers can never both win.
-- The lock time comes from the server's clock (TIME), so lock age never depends on a web
-- server's clock. Slides even when locked, only when due (docs/contract.md §1). Round trips: 1.
local v = redis.call('GET', KEYS[1])
local s, missing = open(v)
if not s then
  return missing
end
slide_if_due(s, tonumber(ARGV[3]))
local now = now_ms()
local took_over = false
if s.locked == 1 then
  local age = math.max(0, now - u48(v, 21))
  if holder(v) == ARGV[1] then
    -- The retry of our own acquire whose reply was lost: the lock is already ours, and keeps its
    -- age. The first attempt already cleared (and reported) the initialize flag.
    return v
  end
  if age < tonumber(ARGV[2]) then
    return {holder(v), age}
  end
  took_over = true
end
-- Free or stale: flags without the initialize flag, locked, the token and the lock time. The
-- settled record stays: the previous holder's retried commit must still be recognised.
-- A takeover ends the stale holder's lock: its waiters are told (and the waiting byte cleared);
-- otherwise the byte stays as it is.
local wake = took_over and waited(v)
local waiting = string.byte(v, 4)
if wake then
  waiting = 0
end
redis.call('SETRANGE', KEYS[1], 1,
  string.char(s.f - s.f % 2, 1, waiting) .. ARGV[1] .. u48s(now))
if wake then
  -- Its watchers look again (and find the new lock).
  redis.call('PUBLISH', ARGV[4], 'taken-over')
end
return v
