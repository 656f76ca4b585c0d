-- claim: the TTL of an end claim (take.lua, claim_lost.lua). The claim outlives the session's value
-- so that a late notification or a later sweep (which finds values within their grace period)
-- cannot report the same end twice: 2 × GRACE_MS, or the value's own TTL plus GRACE_MS when that
-- is longer (bytes another writer stored under the session's name, which a claim leaves in place,
-- with a TTL of their own).
local function claim_ttl(value)
  local left = redis.call('PTTL', value)
  if left + GRACE_MS > 2 * GRACE_MS then
    return left + GRACE_MS
  end
  return 2 * GRACE_MS
end
