-- open: the one helper most scripts share (after consts.lua, see ops/mod.rs). Each `local function`
-- is a closure created on every call of the script, so scripts include only the helper files they
-- use, and the hot ones (read.lua, acquire.lua, commit.lua) inline this one.

-- Opens the session whose value (or header) is h: its flags, locked byte, timeout (ms), grace
-- period (ms) and time left before its end (ms). For a session that does not exist (no value, or
-- only an ended one's value in its grace period): nil and 0; for a value this layout did not
-- write: nil and -1. Only the header of h is read. key is the session's key (default KEYS[1]).
-- Header bytes (src/layout.rs): 1 version, 2 flags (bit 0 initialize unreported, bit 1 expiry
-- events: grace period GRACE_MS), 3 locked, 4 waiting, 5..20 the holder's token, 21..26 the lock
-- time, 27..32 the timeout (1-based positions; six-byte numbers big-endian). The waiting byte is
-- set by wait.lua while the session is locked; the scripts that end a lock PUBLISH on the release
-- channel only when it is set, and clear it: a release nobody waits for costs no message (on a
-- cluster, a PUBLISH crosses the cluster bus to every node).
local function open(h, key)
  if not h then
    return nil, 0
  end
  if #h < HEADER then
    return nil, -1
  end
  local version, f, locked = string.byte(h, 1, 3)
  if version ~= 2 or locked > 1 then
    return nil, -1
  end
  local a, b, c, d, e, g = string.byte(h, 27, 32)
  local timeout = ((((a * 256 + b) * 256 + c) * 256 + d) * 256 + e) * 256 + g
  if timeout < 1 then
    return nil, -1
  end
  local grace = 0
  if f % 4 >= 2 then
    grace = GRACE_MS
  end
  local pttl = redis.call('PTTL', key or KEYS[1])
  if pttl == -1 then
    -- No expiry: not written by this layout.
    return nil, -1
  end
  local left = pttl - grace
  if left <= 0 then
    return nil, 0
  end
  return {f = f, locked = locked, timeout = timeout, grace = grace, left = left}
end

