-- 0006: two fixes found in review.
--
-- 1. `acquire` re-checks the session's key under the row lock. Between its first look (by app and
--    sid) and its row lock (by pk), a `change_id` may have moved the row to a new id: without the
--    re-check, an acquire for the OLD id would lock the session under its NEW id and return its
--    items (the old cookie reading the renewed session). With it, the acquire finds nothing:
--    `Missing`, as for any id that no longer exists. The body is 0003's otherwise.
-- 2. The purge index exists whatever the table prefix's length: with a 47- or 48-character
--    prefix, Postgres' 63-byte identifier limit made 0005's `<prefix>sessions_expires_bucket` and
--    the old `<prefix>sessions_expires` the same name, so 0005 created nothing and then dropped
--    the old index. A short name is created here when no index on `expires_bucket` exists.

CREATE OR REPLACE FUNCTION {prefix}acquire(p_app BYTEA, p_sid BYTEA, p_token BYTEA, p_ttl_ms BIGINT, p_pct INT,
    OUT r_status INT, OUT r_token BYTEA, OUT r_age_ms BIGINT, OUT r_timeout_ms BIGINT,
    OUT r_init BOOLEAN, OUT r_names BYTEA[], OUT r_vals BYTEA[])
LANGUAGE plpgsql AS $$
DECLARE
    t TIMESTAMPTZ := clock_timestamp();
    v_pk BIGINT;
    v_expires TIMESTAMPTZ;
    v_locked TIMESTAMPTZ;
    v_timeout BIGINT;
BEGIN
    -- A lock held by another, fresh, with no slide due: a plain SELECT answers it (waiters poll
    -- with acquire).
    SELECT pk, expires_at, timeout_ms, lock_token, locked_at
      INTO v_pk, v_expires, v_timeout, r_token, v_locked
      FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > t;
    IF NOT FOUND THEN
        r_status := 0;
        RETURN;
    END IF;
    r_age_ms := greatest(0, (extract(epoch FROM t - coalesce(v_locked, t)) * 1000)::BIGINT);
    IF r_token IS NOT NULL AND r_token <> p_token AND r_age_ms < p_ttl_ms
       AND p_pct > 0 AND v_expires >= t + v_timeout * INTERVAL '1 millisecond' THEN
        r_status := 1;
        RETURN;
    END IF;
    -- Otherwise decide under the row lock, on the latest row.
    SELECT expires_at, timeout_ms, lock_token, locked_at, initialize, names, vals
      INTO v_expires, r_timeout_ms, r_token, v_locked, r_init, r_names, r_vals
      FROM {prefix}sessions
     WHERE pk = v_pk AND app = p_app AND sid = p_sid AND expires_at > clock_timestamp()
       FOR UPDATE;
    IF NOT FOUND THEN
        r_status := 0; r_token := NULL; r_age_ms := NULL;
        RETURN;
    END IF;
    -- The clock is read once we own the row: lock age and expiry are measured from here.
    t := clock_timestamp();
    r_age_ms := greatest(0, (extract(epoch FROM t - coalesce(v_locked, t)) * 1000)::BIGINT);
    IF r_token IS NOT NULL AND r_token <> p_token AND r_age_ms < p_ttl_ms THEN
        IF p_pct = 0 OR v_expires < t + r_timeout_ms * INTERVAL '1 millisecond' THEN
            UPDATE {prefix}sessions
               SET expires_at = t + (r_timeout_ms + r_timeout_ms * p_pct / 100) * INTERVAL '1 millisecond'
             WHERE pk = v_pk;
        END IF;
        r_status := 1; r_timeout_ms := NULL; r_init := FALSE; r_names := NULL; r_vals := NULL;
        RETURN;
    END IF;
    -- Ours already (a retried acquire keeps the lock's age), free, or stale and taken over here.
    -- expires_at moves only when a slide is due: otherwise the UPDATE touches no indexed column
    -- and can be HOT.
    UPDATE {prefix}sessions
       SET expires_at = CASE
               WHEN p_pct = 0 OR v_expires < t + r_timeout_ms * INTERVAL '1 millisecond'
               THEN t + (r_timeout_ms + r_timeout_ms * p_pct / 100) * INTERVAL '1 millisecond'
               ELSE v_expires END,
           lock_token = p_token,
           locked_at = CASE WHEN r_token = p_token THEN v_locked ELSE t END,
           initialize = FALSE
     WHERE pk = v_pk;
    r_status := 2; r_token := p_token; r_age_ms := NULL;
END $$;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_index i
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
         WHERE i.indrelid = '{prefix}sessions'::regclass AND a.attname = 'expires_bucket'
    ) THEN
        CREATE INDEX {prefix}exp_bucket ON {prefix}sessions (expires_bucket);
    END IF;
END $$;
