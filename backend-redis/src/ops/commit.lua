-- commit: apply the delta, store the timeout, slide the expiry and release the lock, if the token
-- holds the lock.
-- KEYS: [1] session, [2] alive marker (one hash tag: one cluster slot).
-- ARGV: [1] token (16 bytes), [2] timeout ms, [3] delta fingerprint (8 bytes), [4] release
--       channel, [5] refresh window percent, [6..] the delta (see items_after in the prelude).
-- Returns: 1 committed | 0 lock lost (nothing written) | -1 corrupt value (nothing written).
-- Atomic: the token check and the writes are one script. Only the delta crosses the wire; the
-- items it does not name are copied on the server; a delta that only replaces items with values
-- of the same length (and an empty one) is written in place with SETRANGE.
-- Idempotent under retry: the settled record (the header's last commit token and fingerprint) is
-- the session's last successful commit. A repeat of that commit (its reply was lost) reports 1
-- without applying anything twice, even after another request acquired and released the lock:
-- only the next commit replaces the record; acquire and release leave it (docs/contract.md §2,
-- "Repeated calls"). Round trips: 1.
local v = redis.call('GET', KEYS[1])
local s, missing = open(v)
if not s then
  if missing == -1 then
    return -1
  end
  -- Expired, removed or never there (docs/contract.md §2 rule 1).
  return 0
end
if s.locked == 1 and holder(v) == ARGV[1] then
  local timeout = tonumber(ARGV[2])
  local header = string.char(2, s.f, 0, 0) .. string.rep('\0', 22) .. u48s(timeout)
    .. ARGV[1] .. ARGV[3]
  local to = timeout + math.floor(timeout * tonumber(ARGV[5]) / 100)
  local writes = nil
  if ARGV[6] ~= '1' and ARGV[7] == '0' and #ARGV == 7 then
    -- Nothing changed but the header.
    writes = {}
  else
    writes = in_place(v, 6)
  end
  if writes then
    for _, w in ipairs(writes) do
      redis.call('SETRANGE', KEYS[1], w[1], w[2])
    end
    redis.call('SETRANGE', KEYS[1], 0, header)
    redis.call('PEXPIRE', KEYS[1], to + s.grace)
  else
    local items = items_after(v, 6)
    if not items then
      return -1
    end
    redis.call('SET', KEYS[1], header .. items, 'PX', to + s.grace)
  end
  if s.grace > 0 then
    mark(to)
  end
  -- The new header cleared the waiting byte.
  if waited(v) then
    redis.call('PUBLISH', ARGV[4], 'committed')
  end
  return 1
end
if string.sub(v, 33, 48) == ARGV[1] and string.sub(v, 49, 56) == ARGV[3] then
  return 1
end
-- Taken over, released or by a request that never held it (docs/contract.md §2 rule 1).
return 0
