-- 0005: the purge walks a coarse expiry bucket instead of `expires_at` itself, so that most writes
-- touch no indexed column and can be HOT updates (no new index entries, no index WAL).
--
-- `expires_bucket` is the minute `expires_at` falls in (minutes since 2000-01-01 UTC), a stored
-- generated column: a commit or a slide moves `expires_at` by seconds, which changes the bucket
-- only when it crosses a minute boundary, so the update stays HOT (the table keeps 0003's
-- fillfactor). The unique (app, sid) key is the only other index.
--
-- The purge still deletes exactly the rows with expires_at <= now: the bucket only narrows the
-- index scan (every bucket up to the current one; in the current minute, rows not yet expired are
-- skipped), batched, one runner at a time (the advisory lock), never waiting for a locked row.

ALTER TABLE {prefix}sessions
    ADD COLUMN IF NOT EXISTS expires_bucket BIGINT GENERATED ALWAYS AS
        (floor(extract(epoch FROM expires_at - TIMESTAMPTZ '2000-01-01 00:00:00+00') / 60)::BIGINT) STORED;
CREATE INDEX IF NOT EXISTS {prefix}sessions_expires_bucket ON {prefix}sessions (expires_bucket);
DROP INDEX IF EXISTS {prefix}sessions_expires;

-- Binds: advisory lock key, batch size. Reply: how many sessions it deleted (0 while another
-- purger runs).
CREATE OR REPLACE FUNCTION {prefix}purge(p_lock BIGINT, p_batch BIGINT)
RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    n BIGINT;
    t TIMESTAMPTZ := clock_timestamp();
BEGIN
    IF NOT pg_try_advisory_xact_lock(p_lock) THEN
        RETURN 0;
    END IF;
    DELETE FROM {prefix}sessions WHERE pk IN (
        SELECT pk FROM {prefix}sessions
         WHERE expires_bucket <= floor(extract(epoch FROM t - TIMESTAMPTZ '2000-01-01 00:00:00+00') / 60)::BIGINT
           AND expires_at <= t
         ORDER BY expires_bucket LIMIT p_batch FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
