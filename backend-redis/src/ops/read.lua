-- read: a session's data without locking it.
-- KEYS: [1] session, [2] alive marker (one hash tag: one cluster slot).
-- ARGV: [1] refresh window, percent of the timeout.
-- Returns: 0 missing | -1 corrupt header | {holder token (16 bytes), lock age ms} locked (no data) |
--          the stored value (header and items) found; its header still carries the uninitialized
--          flag when this read reports it.
-- Atomic: the existence check, the slide (even when locked, only when due: docs/contract.md §1),
-- clearing the one-shot initialize flag and the GET happen in one script. Round trips: 1.
local v = redis.call('GET', KEYS[1])
local s, missing = open(v)
if not s then
  return missing
end
slide_if_due(s, tonumber(ARGV[1]))
if s.locked == 1 then
  return {holder(v), math.max(0, now_ms() - u48(v, 21))}
end
if s.f % 2 == 1 then
  -- Reported exactly once (docs/contract.md §2 rule 3); SETRANGE keeps the expiry.
  redis.call('SETRANGE', KEYS[1], 1, string.char(s.f - 1))
end
return v
