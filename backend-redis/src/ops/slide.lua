-- slide: sliding a session's expiry (after consts.lua and open.lua, see ops/mod.rs), for the
-- scripts that slide; read.lua, acquire.lua and commit.lua inline it.

-- Sets the alive marker to expire in `to` ms: PEXPIRE when it exists (no new value), else SET.
local function mark(to)
  if redis.call('PEXPIRE', KEYS[2], to) == 0 then
    redis.call('SET', KEYS[2], '', 'PX', to)
  end
end

-- Slides the session s (from open) only when due: an access that finds expires_at >= now +
-- timeout writes nothing; with a window of 0 every access slides (docs/contract.md §1). Sliding
-- sets now + timeout + w, w = floor(timeout * percent / 100) (the refresh window), and moves the
-- marker with it.
local function slide_if_due(s, percent)
  if percent == 0 or s.left < s.timeout then
    local to = s.timeout + math.floor(s.timeout * percent / 100)
    redis.call('PEXPIRE', KEYS[1], to + s.grace)
    if s.grace > 0 then
      mark(to)
    end
  end
end

