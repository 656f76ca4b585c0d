-- 0009: a purge that drains many expired sessions reads each index entry once (issue 15).
--
-- 0008's purge started every statement at the lowest expiry bucket. The index entries of the
-- sessions the previous statements deleted stay in the index until VACUUM removes them, so each
-- statement of a long drain first stepped over every entry its predecessors had deleted: the
-- k-th statement read k batches of dead entries, and a drain of n sessions read about n^2 / (2 x
-- batch) entries (measured on 1M expired sessions in statements of 1,000: 6.5 ms per statement at
-- the start, 20 ms after 800k, until autovacuum cleaned the index).
--
-- Now the purger keeps a cursor: the (expiry bucket, pk) of the last session a statement took,
-- in the one-row table {prefix}purge_cursor, and the next statement starts after it on an index
-- of (expires_bucket, pk), which replaces the index of expires_bucket alone. A drain is the run
-- of statements that each took a full batch: a statement that takes fewer ends it and forgets the
-- cursor (so a purge with nothing to do writes nothing), and a drain older than 60 s starts over
-- from the lowest bucket. A session a drain passed over (its row locked by a request at that
-- moment, or its timeout shortened into a bucket the cursor had passed) is found by the next
-- drain, at most a minute later.
--
-- pk never changes and expires_bucket changes only when a session's expiry moves to another
-- minute, as with 0005's index, so a commit within the minute is still a HOT update. Building the
-- index locks the table against writes for as long as it takes (about a second per million
-- sessions).
--
-- Binds and reply as in 0008: advisory lock key, batch size; how many sessions it deleted (0 while
-- another purger runs).
CREATE TABLE IF NOT EXISTS {prefix}purge_cursor (
    bucket BIGINT,
    pk BIGINT,
    started TIMESTAMPTZ
);
INSERT INTO {prefix}purge_cursor (bucket, pk, started)
SELECT NULL, NULL, NULL WHERE NOT EXISTS (SELECT 1 FROM {prefix}purge_cursor);

CREATE INDEX IF NOT EXISTS {prefix}exp_bucket_pk ON {prefix}sessions (expires_bucket, pk);

-- The index of expires_bucket alone, under either name 0005 and 0006 gave it.
DO $$
DECLARE
    old TEXT;
BEGIN
    FOR old IN
        SELECT c.relname FROM pg_index i
          JOIN pg_class c ON c.oid = i.indexrelid
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
         WHERE i.indrelid = '{prefix}sessions'::regclass AND i.indnatts = 1
           AND a.attname = 'expires_bucket'
    LOOP
        EXECUTE format('DROP INDEX %I', old);
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION {prefix}purge(p_lock BIGINT, p_batch BIGINT)
RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    n BIGINT;
    t TIMESTAMPTZ := clock_timestamp();
    b BIGINT := floor(extract(epoch FROM t - TIMESTAMPTZ '2000-01-01 00:00:00+00') / 60)::BIGINT;
    c_bucket BIGINT;
    c_pk BIGINT;
    c_started TIMESTAMPTZ;
    pks BIGINT[];
    buckets BIGINT[];
    took INT;
    kept BOOLEAN;
BEGIN
    IF NOT pg_try_advisory_xact_lock(p_lock) THEN
        RETURN 0;
    END IF;
    SELECT bucket, pk, started INTO c_bucket, c_pk, c_started FROM {prefix}purge_cursor;
    kept := c_bucket IS NOT NULL;
    IF c_bucket IS NULL OR c_started < t - INTERVAL '60 seconds' THEN
        -- A new drain, from the lowest bucket.
        c_bucket := -9223372036854775808;
        c_pk := -9223372036854775808;
        c_started := t;
    END IF;
    -- The candidates, in index order after the cursor; locked without waiting, and under READ
    -- COMMITTED the lock re-checks `expires_bucket < b` on the row's latest version (0008).
    SELECT coalesce(array_agg(s.pk ORDER BY s.expires_bucket, s.pk), '{}'),
           coalesce(array_agg(s.expires_bucket ORDER BY s.expires_bucket, s.pk), '{}')
      INTO pks, buckets
      FROM (SELECT pk, expires_bucket FROM {prefix}sessions
             WHERE expires_bucket < b AND (expires_bucket, pk) > (c_bucket, c_pk)
             ORDER BY expires_bucket, pk LIMIT p_batch FOR UPDATE SKIP LOCKED) s;
    took := cardinality(pks);
    DELETE FROM {prefix}sessions WHERE pk = ANY (pks);
    GET DIAGNOSTICS n = ROW_COUNT;
    IF took = p_batch THEN
        UPDATE {prefix}purge_cursor
           SET bucket = buckets[took], pk = pks[took], started = c_started;
    ELSIF kept THEN
        -- The end of a drain (or a stale cursor): forget the cursor.
        UPDATE {prefix}purge_cursor SET bucket = NULL, pk = NULL, started = NULL;
    END IF;
    RETURN n;
END $$;
