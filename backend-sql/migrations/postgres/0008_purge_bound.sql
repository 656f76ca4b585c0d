-- 0008: the purge is bounded by what expired (issue 15).
--
-- 0005's purge took every bucket up to and including the CURRENT minute's and filtered the rows on
-- `expires_at <= t`: the index bound reached the current minute, so every call fetched every
-- live session expiring later in that minute from the heap to throw it away (about 1/20 of all
-- sessions with a 20-minute timeout), even when nothing had expired. Its DELETE also joined the
-- candidates to the table with `pk IN (...)`, a join whose plan the generic plan may turn into a
-- scan of the whole table on a large batch.
--
-- Now each call computes ONE bound, the current expiry minute `b` on the database clock, and
-- takes only the buckets before it: `expires_bucket < b` is an Index Cond that every row it
-- reaches satisfies (a row in bucket k expired before minute k + 1 began, so before now), so a
-- call that finds nothing expired is one index probe, whatever the number of live sessions, and
-- a call that finds n expired sessions reads n index entries. The price: a session is purged
-- once its expiry minute has passed, up to a minute after it expired (until then it is invisible
-- like any expired session: every operation filters on `expires_at > now`). `expires_at` itself
-- stays unindexed, so commits stay HOT updates (0005).
--
-- The candidates are locked with FOR UPDATE SKIP LOCKED (a row that traffic holds is left for a
-- later call, never waited for); under READ COMMITTED the row lock re-checks `expires_bucket < b`
-- on the row's latest version, so a session slid after the candidates were read is not deleted.
-- The DELETE finds them by primary key from an array (`pk = ANY (ARRAY(...))`: an index scan of
-- the primary key per candidate, whatever the plan's estimates). One runner at a time per prefix
-- (the transaction-scoped advisory lock, taken without waiting) as before; a batch is one
-- statement, one transaction.
--
-- Binds: advisory lock key, batch size. Reply: how many sessions it deleted (0 while another
-- purger runs).
CREATE OR REPLACE FUNCTION {prefix}purge(p_lock BIGINT, p_batch BIGINT)
RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    n BIGINT;
    b BIGINT := floor(extract(epoch FROM clock_timestamp() - TIMESTAMPTZ '2000-01-01 00:00:00+00') / 60)::BIGINT;
BEGIN
    IF NOT pg_try_advisory_xact_lock(p_lock) THEN
        RETURN 0;
    END IF;
    DELETE FROM {prefix}sessions WHERE pk = ANY (ARRAY(
        SELECT pk FROM {prefix}sessions WHERE expires_bucket < b
         ORDER BY expires_bucket LIMIT p_batch FOR UPDATE SKIP LOCKED));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
