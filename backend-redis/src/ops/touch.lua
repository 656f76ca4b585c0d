-- touch: slide the expiry by the session's stored timeout, when due; creates nothing.
-- KEYS: [1] session, [2] alive marker (one hash tag: one cluster slot).
-- ARGV: [1] refresh window percent.
-- Returns: 1 touched | 0 missing | -1 corrupt header.
-- Atomic: one script, so the timeout read and the slide agree; reads only the header.
-- GETRANGE answers '' for no value and for an empty one: only then does EXISTS tell them apart
-- (an empty value is not this layout's: open reports -1). Round trips: 1.
local h = redis.call('GETRANGE', KEYS[1], 0, HEADER - 1)
if h == '' and redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local s, missing = open(h)
if not s then
  return missing
end
slide_if_due(s, tonumber(ARGV[1]))
return 1
