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
-- A hot script: open (open.lua), slide_if_due (slide.lua), the clock and the byte codecs are
-- inlined here (a `local function` is created anew on every call).
local v = redis.call('GET', KEYS[1])
if not v then
  return 0
end
if #v < HEADER then
  return -1
end
local version, f, locked, waiting = string.byte(v, 1, 4)
if version ~= 2 or locked > 1 then
  return -1
end
-- The timeout (ms): six big-endian bytes at offset 26.
local a, b, c, d, e, g = string.byte(v, 27, 32)
local timeout = ((((a * 256 + b) * 256 + c) * 256 + d) * 256 + e) * 256 + g
if timeout < 1 then
  return -1
end
local grace = 0
if f % 4 >= 2 then
  grace = GRACE_MS
end
local pttl = redis.call('PTTL', KEYS[1])
if pttl == -1 then
  -- No expiry: not written by this layout.
  return -1
end
local left = pttl - grace
if left <= 0 then
  return 0
end
-- Slide only when due (slide_if_due in slide.lua).
local percent = tonumber(ARGV[3])
if percent == 0 or left < timeout then
  local to = timeout + math.floor(timeout * percent / 100)
  redis.call('PEXPIRE', KEYS[1], to + grace)
  if grace > 0 and redis.call('PEXPIRE', KEYS[2], to) == 0 then
    redis.call('SET', KEYS[2], '', 'PX', to)
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wake = false
if locked == 1 then
  local token = string.sub(v, 5, 20)
  if token == ARGV[1] then
    -- The retry of our own acquire whose reply was lost: the lock is already ours, and keeps its
    -- age. The first attempt already cleared (and reported) the initialize flag.
    return v
  end
  -- The lock time (ms, server clock): six big-endian bytes at offset 20.
  a, b, c, d, e, g = string.byte(v, 21, 26)
  local age = math.max(0, now - (((((a * 256 + b) * 256 + c) * 256 + d) * 256 + e) * 256 + g))
  if age < tonumber(ARGV[2]) then
    return {token, age}
  end
  -- A takeover ends the stale holder's lock: its waiters are told (and the waiting byte
  -- cleared); otherwise the byte stays as it is.
  wake = waiting ~= 0
  waiting = 0
end
-- Free or stale: flags without the initialize flag, locked, the token and the lock time (six
-- big-endian bytes, 0 <= now < 2^48). The settled record stays: the previous holder's retried
-- commit must still be recognised.
g = now % 256
now = (now - g) / 256
e = now % 256
now = (now - e) / 256
d = now % 256
now = (now - d) / 256
c = now % 256
now = (now - c) / 256
b = now % 256
a = (now - b) / 256
redis.call('SETRANGE', KEYS[1], 1,
  string.char(f - f % 2, 1, waiting) .. ARGV[1] .. string.char(a, b, c, d, e, g))
if wake then
  -- Its watchers look again (and find the new lock).
  redis.call('PUBLISH', ARGV[4], 'taken-over')
end
return v
