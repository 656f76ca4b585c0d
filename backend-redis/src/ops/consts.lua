-- consts: prepended to every script of this crate (see ops/mod.rs); the constants below are
-- shared with the Rust side (unit tests check them). Every script gets the same two keys, which
-- share the session's hash tag (one slot):
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

