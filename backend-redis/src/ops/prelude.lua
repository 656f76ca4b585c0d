-- prelude: prepended to every script of this crate (see ops/mod.rs), so the helpers below exist in
-- each of them. Every script gets the same two keys, which share the session's hash tag (one slot):
--   KEYS[1] the session: one string, a fixed header then the items (src/layout.rs has the table);
--   KEYS[2] its alive marker: an empty string that exists only for sessions with the EVENTS flag.
-- A session exists while KEYS[1] exists and its expiry lies beyond the grace period: a session
-- with the EVENTS flag keeps its value GRACE_MS past its end, so that its final items can still
-- be taken for its expiry event (take.lua), and its marker expires exactly at its end (that
-- expiry is the event). Without the flag the grace period is 0 and there is no marker.
-- Every script is one EVALSHA: one round trip, and atomic (Redis runs nothing else meanwhile).

-- Header length; the items follow. Must equal layout::HEADER (a unit test checks).
local HEADER = 56
-- How long a session's value outlives it with the EVENTS flag (ms). Must equal
-- backend_redis::EXPIRY_GRACE (a unit test checks).
local GRACE_MS = 60000

-- Milliseconds on the server's clock: lock age is measured here, never on a web server's clock
-- (docs/contract.md §2 rule 5).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The six-byte big-endian number at (1-based) position i of s.
local function u48(s, i)
  local a, b, c, d, e, f = string.byte(s, i, i + 5)
  return ((((a * 256 + b) * 256 + c) * 256 + d) * 256 + e) * 256 + f
end

-- n (0 <= n < 2^48) as six big-endian bytes.
local function u48s(n)
  local b = {}
  for k = 6, 1, -1 do
    local r = n % 256
    b[k] = r
    n = (n - r) / 256
  end
  return string.char(b[1], b[2], b[3], b[4], b[5], b[6])
end

-- The grace period of a session with flags byte f.
local function grace_of(f)
  if f % 4 >= 2 then
    return GRACE_MS
  end
  return 0
end

-- Opens the session whose value (or header) is h: its flags, locked byte, timeout (ms), grace
-- period (ms) and time left before its end (ms). For a session that does not exist (no value, or
-- only an ended one's value in its grace period): nil and 0; for a value this layout did not
-- write: nil and -1. Only the header of h is read. key is the session's key (default KEYS[1]).
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
  local timeout = u48(h, 27)
  if timeout < 1 then
    return nil, -1
  end
  local grace = grace_of(f)
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

-- Sets the alive marker to expire in `to` ms: PEXPIRE when it exists (no new value), else SET.
local function mark(to)
  if redis.call('PEXPIRE', KEYS[2], to) == 0 then
    redis.call('SET', KEYS[2], '', 'PX', to)
  end
end

-- Slides the session to now + timeout + w, w = floor(timeout * percent / 100) (the refresh
-- window, docs/contract.md §1), and its marker with it.
local function slide(timeout, grace, percent)
  local to = timeout + math.floor(timeout * percent / 100)
  redis.call('PEXPIRE', KEYS[1], to + grace)
  if grace > 0 then
    mark(to)
  end
end

-- Slides only when due: an access that finds expires_at >= now + timeout writes nothing; with a
-- window of 0 every access slides (docs/contract.md §1).
local function slide_if_due(s, percent)
  if percent == 0 or s.left < s.timeout then
    slide(s.timeout, s.grace, percent)
  end
end

-- Whether a waiter asked to be told when this lock ends (header byte 3, set by wait.lua while
-- the session is locked). Scripts that end a lock PUBLISH on the release channel only then, and
-- clear it: a release nobody waits for costs no message (on a cluster, a PUBLISH crosses the
-- cluster bus to every node).
local function waited(h)
  return string.byte(h, 4) ~= 0
end

-- The holder's token as the header stores it (16 bytes).
local function holder(h)
  return string.sub(h, 5, 20)
end

-- The items of value v after the delta in ARGV from index i on: the cleared flag ('1'/'0'), the
-- number of removed names, the removed names, then one argument per item to set, each already
-- encoded as stored (name length, value length, name, value). In this order (clear, remove, set),
-- as session_core::Delta defines it. Items the delta does not name are copied as runs of bytes.
-- Returns nil when v's items do not parse.
local function items_after(v, i)
  local drop = {}
  local dropping = false
  local j = i + 2
  for _ = 1, tonumber(ARGV[i + 1]) do
    drop[ARGV[j]] = true
    dropping = true
    j = j + 1
  end
  local first_set = j
  for k = first_set, #ARGV do
    local a, b = string.byte(ARGV[k], 1, 2)
    drop[string.sub(ARGV[k], 7, 6 + a * 256 + b)] = true
    dropping = true
  end
  local parts = {}
  if ARGV[i] ~= '1' then
    local n = #v
    if not dropping then
      parts[1] = string.sub(v, HEADER + 1)
    else
      local p = HEADER + 1
      local run = p
      while p <= n do
        local a, b, c, d, e, f = string.byte(v, p, p + 5)
        if not f then
          return nil
        end
        local name_len = a * 256 + b
        local q = p + 6 + name_len + ((c * 256 + d) * 256 + e) * 256 + f
        if q > n + 1 then
          return nil
        end
        if drop[string.sub(v, p + 6, p + 5 + name_len)] then
          if run < p then
            parts[#parts + 1] = string.sub(v, run, p - 1)
          end
          run = q
        end
        p = q
      end
      if run <= n then
        parts[#parts + 1] = string.sub(v, run, n)
      end
    end
  end
  for k = first_set, #ARGV do
    parts[#parts + 1] = ARGV[k]
  end
  return table.concat(parts)
end

-- When the delta in ARGV from index i on (as for items_after) only replaces stored items with
-- values of the same length: the writes that apply it in place, {offset (0-based), bytes} each,
-- so that the stored value is not rebuilt. Otherwise nil.
local function in_place(v, i)
  if ARGV[i] == '1' or ARGV[i + 1] ~= '0' or #ARGV < i + 2 then
    return nil
  end
  local wanted = {}
  local left = 0
  for k = i + 2, #ARGV do
    local a, b = string.byte(ARGV[k], 1, 2)
    wanted[string.sub(ARGV[k], 7, 6 + a * 256 + b)] = k
    left = left + 1
  end
  local writes = {}
  local n = #v
  local p = HEADER + 1
  while p <= n and left > 0 do
    local a, b, c, d, e, f = string.byte(v, p, p + 5)
    if not f then
      return nil
    end
    local name_len = a * 256 + b
    local value_len = ((c * 256 + d) * 256 + e) * 256 + f
    local k = wanted[string.sub(v, p + 6, p + 5 + name_len)]
    if k then
      local record = ARGV[k]
      if #record - 6 - name_len ~= value_len then
        return nil
      end
      writes[#writes + 1] = {p + 5 + name_len, string.sub(record, 7 + name_len)}
      wanted[string.sub(v, p + 6, p + 5 + name_len)] = nil
      left = left - 1
    end
    p = p + 6 + name_len + value_len
  end
  if left > 0 or p > n + 1 then
    return nil
  end
  return writes
end

-- Body of the operation's script follows.
