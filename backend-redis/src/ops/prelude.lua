-- prelude: prepended to every script of this crate (see ops/mod.rs), so the helpers below exist in
-- each of them. Every script has the same two keys, which share the session's hash tag (one slot):
--   KEYS[1] the session's meta hash, KEYS[2] its items hash.
-- A session exists exactly while KEYS[1] exists. KEYS[2] expires GRACE_MS later than KEYS[1], so
-- that the final items of an expired session can still be taken for its expiry event (take.lua);
-- items without their meta key belong to no session and are never read as one.
-- Every script is one EVALSHA: one round trip, and atomic (Redis runs nothing else meanwhile).

-- Milliseconds on the server's clock: lock age is measured here, never on a web server's clock
-- (docs/contract.md §2 rule 5).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- How long the items outlive the session (ms): the window in which the expiry event handler
-- (take.lua) can still read them. Must equal backend_redis::EXPIRY_GRACE (a unit test checks).
local GRACE_MS = 60000

-- Slides the expiry: the meta hash to now + timeout (ms), the items to now + timeout + GRACE_MS.
-- PEXPIRE on an absent items key (a session without items) does nothing.
local function slide(timeout)
  redis.call('PEXPIRE', KEYS[1], timeout)
  redis.call('PEXPIRE', KEYS[2], tonumber(timeout) + GRACE_MS)
end

-- Applies the delta encoded in ARGV from index i on: the cleared flag ('1'/'0'), the number of
-- removed names, the removed names, then name/value pairs to set up to the end of ARGV. In this
-- order (clear, remove, set), as session_core::Delta defines it; only named fields are written.
local function apply_delta(i)
  if ARGV[i] == '1' then
    redis.call('DEL', KEYS[2])
  end
  local j = i + 2
  for _ = 1, tonumber(ARGV[i + 1]) do
    redis.call('HDEL', KEYS[2], ARGV[j])
    j = j + 1
  end
  while j < #ARGV do
    redis.call('HSET', KEYS[2], ARGV[j], ARGV[j + 1])
    j = j + 2
  end
end

-- The session's stored timeout (ms) as a number; nil when the meta hash has none or a bad one
-- (the caller reports it as corrupt, unless the session simply does not exist).
local function stored_timeout(raw)
  local timeout = tonumber(raw)
  if timeout and timeout >= 1 then
    return timeout
  end
  return nil
end

-- Opens a live session for read and acquire: its meta fields {timeout, holder token, locked
-- since, initialize flag}, with the expiry slid (in every case but missing, even when locked:
-- docs/contract.md §2). For a session that is missing or whose meta hash is corrupt: nil and the
-- script's reply ({0} or {-1}).
local function open_session()
  local m = redis.call('HMGET', KEYS[1], 't', 'l', 's', 'i')
  local timeout = stored_timeout(m[1])
  if not timeout then
    if redis.call('EXISTS', KEYS[1]) == 0 then
      return nil, {0}
    end
    return nil, {-1}
  end
  slide(timeout)
  return m
end

-- Body of the operation's script follows.
