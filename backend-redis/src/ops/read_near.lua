-- read_near: read.lua for a store with a near cache (src/near/mod.rs). The same atomic steps, and
-- the reply also says how long the session has left and whether this read wrote anything, so
-- that the client keeps a copy only of what it may answer later without a round trip.
-- KEYS: [1] session, [2] alive marker (one hash tag: one cluster slot).
-- ARGV: [1] refresh window, percent of the timeout.
-- Returns: 0 missing | -1 corrupt header |
--          {holder token (16 bytes), lock age ms, time left ms, timeout ms, wrote (0/1)} locked |
--          {stored value, time left ms, wrote (0/1)} found (the header still carries the
--          uninitialized flag when this read reports it, and then wrote is 1).
-- Round trips: 1.
local v = redis.call('GET', KEYS[1])
if not v then
  return 0
end
if #v < HEADER then
  return -1
end
local version, f, locked = string.byte(v, 1, 3)
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
local percent = tonumber(ARGV[1])
local wrote = 0
if percent == 0 or left < timeout then
  local to = timeout + math.floor(timeout * percent / 100)
  wrote = 1
  left = to
  redis.call('PEXPIRE', KEYS[1], to + grace)
  if grace > 0 and redis.call('PEXPIRE', KEYS[2], to) == 0 then
    redis.call('SET', KEYS[2], '', 'PX', to)
  end
end
if locked == 1 then
  -- The lock time (ms, server clock): six big-endian bytes at offset 20; the holder at 4..19.
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  a, b, c, d, e, g = string.byte(v, 21, 26)
  local since = ((((a * 256 + b) * 256 + c) * 256 + d) * 256 + e) * 256 + g
  return {string.sub(v, 5, 20), math.max(0, now - since), left, timeout, wrote}
end
if f % 2 == 1 then
  -- Reported exactly once (docs/contract.md §2 rule 3); SETRANGE keeps the expiry.
  redis.call('SETRANGE', KEYS[1], 1, string.char(f - 1))
  wrote = 1
end
return {v, left, wrote}
