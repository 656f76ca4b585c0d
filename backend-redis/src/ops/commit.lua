-- commit: apply the delta, store the timeout, slide the expiry and release the lock, if the token
-- holds the lock.
-- KEYS: [1] session, [2] alive marker (one hash tag: one cluster slot).
-- ARGV: [1] token (16 bytes), [2] timeout ms, [3] delta fingerprint (8 bytes), [4] release
--       channel, [5] refresh window percent, [6..] the delta (see items_after in delta.lua).
-- Returns: 1 committed | 0 lock lost (nothing written) | -1 corrupt value (nothing written).
-- Atomic: the token check and the writes are one script. Only the delta crosses the wire; the
-- items it does not name are copied on the server; a delta that only replaces items with values
-- of the same length (and an empty one) is written in place with SETRANGE.
-- Idempotent under retry: the settled record (the header's last commit token and fingerprint) is
-- the session's last successful commit. A repeat of that commit (its reply was lost) reports 1
-- without applying anything twice, even after another request acquired and released the lock:
-- only the next commit replaces the record; acquire and release leave it (docs/contract.md §2,
-- "Repeated calls"). Round trips: 1.
-- A hot script: open (open.lua), mark (slide.lua) and the byte codecs are inlined here (a
-- `local function` is created anew on every call); only delta.lua's two helpers remain.
local v = redis.call('GET', KEYS[1])
if not v then
  -- Expired, removed or never there (docs/contract.md §2 rule 1).
  return 0
end
if #v < HEADER then
  return -1
end
local version, f, locked, waiting = string.byte(v, 1, 4)
if version ~= 2 or locked > 1 then
  return -1
end
-- The stored timeout (ms): six big-endian bytes at offset 26.
local a, b, c, d, e, g = string.byte(v, 27, 32)
if ((((a * 256 + b) * 256 + c) * 256 + d) * 256 + e) * 256 + g < 1 then
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
if pttl - grace <= 0 then
  -- Expired (docs/contract.md §2 rule 1).
  return 0
end
if locked == 1 and string.sub(v, 5, 20) == ARGV[1] then
  local timeout = tonumber(ARGV[2])
  -- The timeout as six big-endian bytes (0 < timeout < 2^48).
  local n = timeout
  g = n % 256
  n = (n - g) / 256
  e = n % 256
  n = (n - e) / 256
  d = n % 256
  n = (n - d) / 256
  c = n % 256
  n = (n - c) / 256
  b = n % 256
  a = (n - b) / 256
  local header = string.char(2, f, 0, 0) .. string.rep('\0', 22)
    .. string.char(a, b, c, d, e, g) .. ARGV[1] .. ARGV[3]
  local to = timeout + math.floor(timeout * tonumber(ARGV[5]) / 100)
  local writes = nil
  if ARGV[6] ~= '1' and ARGV[7] == '0' and #ARGV == 7 then
    -- Nothing changed but the header.
    writes = {}
  else
    writes = in_place(v, 6)
  end
  if writes then
    for k = 1, #writes, 2 do
      redis.call('SETRANGE', KEYS[1], writes[k], writes[k + 1])
    end
    redis.call('SETRANGE', KEYS[1], 0, header)
    redis.call('PEXPIRE', KEYS[1], to + grace)
  else
    local items = items_after(v, 6)
    if not items then
      return -1
    end
    redis.call('SET', KEYS[1], header .. items, 'PX', to + grace)
  end
  -- The alive marker (EVENTS flag) expires exactly at the session's end (mark in slide.lua).
  if grace > 0 and redis.call('PEXPIRE', KEYS[2], to) == 0 then
    redis.call('SET', KEYS[2], '', 'PX', to)
  end
  -- The new header cleared the waiting byte.
  if waiting ~= 0 then
    redis.call('PUBLISH', ARGV[4], 'committed')
  end
  return 1
end
if string.sub(v, 33, 48) == ARGV[1] and string.sub(v, 49, 56) == ARGV[3] then
  return 1
end
-- Taken over, released or by a request that never held it (docs/contract.md §2 rule 1).
return 0
