-- touch: slide the expiry by the session's stored timeout; creates nothing.
-- KEYS: [1] meta hash, [2] items hash (one hash tag: one cluster slot).
-- ARGV: none.
-- Returns: 1 touched | 0 missing | -1 corrupt meta hash.
-- Atomic: one script, so the timeout read and both PEXPIREs agree. Round trips: 1.
local timeout = stored_timeout(redis.call('HGET', KEYS[1], 't'))
if not timeout then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    return 0
  end
  return -1
end
slide(timeout)
return 1
