-- backend-sql schema, PostgreSQL. `{prefix}` is the validated table prefix.
--
-- Each store operation is ONE round trip: `SELECT * FROM {prefix}<op>(...)`, a PL/pgSQL function.
-- Why not one data-modifying CTE: under READ COMMITTED a statement reads the snapshot taken when it
-- started; an acquire that waited for the row lock of a committing writer would lock the new row
-- but read the old items (a lost update). In a function every statement takes a fresh snapshot,
-- and each function locks the session row (FOR UPDATE) before it reads or writes its items.
-- Times: clock_timestamp(), the database clock. Names, ids and values: BYTEA, stored verbatim
-- (TEXT rejects NUL).

CREATE TABLE IF NOT EXISTS {prefix}sessions (
    pk            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app           BYTEA       NOT NULL,
    sid           BYTEA       NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    timeout_ms    BIGINT      NOT NULL,
    lock_token    BYTEA,
    locked_at     TIMESTAMPTZ,
    initialize    BOOLEAN     NOT NULL,
    -- How the last lock ended (token, 1 = commit / 2 = release, delta fingerprint): recognises a
    -- retried commit or release. Kept across acquires, replaced by the next commit or release.
    settled_token BYTEA,
    settled_kind  SMALLINT,
    settled_fp    BIGINT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT {prefix}sessions_key UNIQUE (app, sid)
);
-- The purge walks this index, oldest expiry first.
CREATE INDEX IF NOT EXISTS {prefix}sessions_expires ON {prefix}sessions (expires_at);
CREATE TABLE IF NOT EXISTS {prefix}items (
    session_pk BIGINT NOT NULL REFERENCES {prefix}sessions (pk) ON DELETE CASCADE,
    name       BYTEA  NOT NULL,
    value      BYTEA  NOT NULL,
    PRIMARY KEY (session_pk, name)
);

-- Reply of read and acquire: one header row (r_name IS NULL) then one row per item.
-- Binds: app, sid, keep (refresh throttle per mille; 1000 = always slide).
CREATE OR REPLACE FUNCTION {prefix}read(p_app BYTEA, p_sid BYTEA, p_keep INT)
RETURNS TABLE (r_status INT, r_token BYTEA, r_age_ms BIGINT, r_timeout_ms BIGINT, r_init BOOLEAN, r_name BYTEA, r_value BYTEA)
LANGUAGE plpgsql AS $$
DECLARE
    s {prefix}sessions%ROWTYPE;
    t TIMESTAMPTZ := clock_timestamp();
BEGIN
    -- Throttled path first: no lock and no write when the session has enough life left.
    SELECT * INTO s FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > t;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 0, NULL::BYTEA, NULL::BIGINT, NULL::BIGINT, FALSE, NULL::BYTEA, NULL::BYTEA;
        RETURN;
    END IF;
    IF s.initialize OR extract(epoch FROM s.expires_at - t) * 1000000 <= s.timeout_ms * p_keep THEN
        -- Re-checked on the clock after the row lock: a session that expired while this waited
        -- for the lock must not be slid back to life.
        SELECT * INTO s FROM {prefix}sessions WHERE pk = s.pk AND expires_at > clock_timestamp() FOR UPDATE;
        IF NOT FOUND THEN
            RETURN QUERY SELECT 0, NULL::BYTEA, NULL::BIGINT, NULL::BIGINT, FALSE, NULL::BYTEA, NULL::BYTEA;
            RETURN;
        END IF;
        t := clock_timestamp();
        UPDATE {prefix}sessions
           SET expires_at = t + s.timeout_ms * INTERVAL '1 millisecond',
               initialize = initialize AND lock_token IS NOT NULL
         WHERE pk = s.pk;
    END IF;
    IF s.lock_token IS NOT NULL THEN
        RETURN QUERY SELECT 1, s.lock_token,
            greatest(0, (extract(epoch FROM t - s.locked_at) * 1000)::BIGINT),
            NULL::BIGINT, FALSE, NULL::BYTEA, NULL::BYTEA;
        RETURN;
    END IF;
    RETURN QUERY SELECT 2, NULL::BYTEA, NULL::BIGINT, s.timeout_ms, s.initialize, NULL::BYTEA, NULL::BYTEA;
    RETURN QUERY SELECT NULL::INT, NULL::BYTEA, NULL::BIGINT, NULL::BIGINT, NULL::BOOLEAN, i.name, i.value
                   FROM {prefix}items i WHERE i.session_pk = s.pk;
END $$;

-- Binds: app, sid, token, lock ttl in ms.
CREATE OR REPLACE FUNCTION {prefix}acquire(p_app BYTEA, p_sid BYTEA, p_token BYTEA, p_ttl_ms BIGINT)
RETURNS TABLE (r_status INT, r_token BYTEA, r_age_ms BIGINT, r_timeout_ms BIGINT, r_init BOOLEAN, r_name BYTEA, r_value BYTEA)
LANGUAGE plpgsql AS $$
DECLARE
    s {prefix}sessions%ROWTYPE;
    t TIMESTAMPTZ;
    age BIGINT;
BEGIN
    SELECT * INTO s FROM {prefix}sessions
     WHERE app = p_app AND sid = p_sid AND expires_at > clock_timestamp() FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 0, NULL::BYTEA, NULL::BIGINT, NULL::BIGINT, FALSE, NULL::BYTEA, NULL::BYTEA;
        RETURN;
    END IF;
    -- The clock is read once we own the row: lock age and expiry are measured from here.
    t := clock_timestamp();
    age := greatest(0, (extract(epoch FROM t - coalesce(s.locked_at, t)) * 1000)::BIGINT);
    IF s.lock_token IS NOT NULL AND s.lock_token <> p_token AND age < p_ttl_ms THEN
        UPDATE {prefix}sessions SET expires_at = t + s.timeout_ms * INTERVAL '1 millisecond' WHERE pk = s.pk;
        RETURN QUERY SELECT 1, s.lock_token, age, NULL::BIGINT, FALSE, NULL::BYTEA, NULL::BYTEA;
        RETURN;
    END IF;
    -- Ours already (a retried acquire keeps the lock's age), free, or stale and taken over here.
    UPDATE {prefix}sessions
       SET expires_at = t + s.timeout_ms * INTERVAL '1 millisecond',
           lock_token = p_token,
           locked_at = CASE WHEN s.lock_token = p_token THEN s.locked_at ELSE t END,
           initialize = FALSE
     WHERE pk = s.pk;
    RETURN QUERY SELECT 2, p_token, NULL::BIGINT, s.timeout_ms, s.initialize, NULL::BYTEA, NULL::BYTEA;
    RETURN QUERY SELECT NULL::INT, NULL::BYTEA, NULL::BIGINT, NULL::BIGINT, NULL::BOOLEAN, i.name, i.value
                   FROM {prefix}items i WHERE i.session_pk = s.pk;
END $$;

-- Applies a delta to a locked session row: clear, remove, upsert (in that order).
CREATE OR REPLACE FUNCTION {prefix}apply_delta(p_pk BIGINT, p_cleared BOOLEAN, p_names BYTEA[], p_values BYTEA[], p_removed BYTEA[])
RETURNS VOID LANGUAGE plpgsql AS $$
BEGIN
    IF p_cleared THEN
        DELETE FROM {prefix}items WHERE session_pk = p_pk;
    ELSIF cardinality(p_removed) > 0 THEN
        DELETE FROM {prefix}items WHERE session_pk = p_pk AND name = ANY (p_removed);
    END IF;
    IF cardinality(p_names) > 0 THEN
        INSERT INTO {prefix}items (session_pk, name, value)
        SELECT p_pk, u.n, u.v FROM unnest(p_names, p_values) AS u(n, v)
        ON CONFLICT (session_pk, name) DO UPDATE SET value = EXCLUDED.value;
    END IF;
END $$;

-- Binds: app, sid, token, delta fingerprint, timeout ms, cleared, set names, set values, removed.
CREATE OR REPLACE FUNCTION {prefix}commit(p_app BYTEA, p_sid BYTEA, p_token BYTEA, p_fp BIGINT, p_timeout_ms BIGINT,
                                          p_cleared BOOLEAN, p_names BYTEA[], p_values BYTEA[], p_removed BYTEA[])
RETURNS INT LANGUAGE plpgsql AS $$
DECLARE
    s {prefix}sessions%ROWTYPE;
BEGIN
    SELECT * INTO s FROM {prefix}sessions
     WHERE app = p_app AND sid = p_sid AND expires_at > clock_timestamp() FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    IF s.lock_token = p_token THEN
        PERFORM {prefix}apply_delta(s.pk, p_cleared, p_names, p_values, p_removed);
        UPDATE {prefix}sessions
           SET timeout_ms = p_timeout_ms,
               expires_at = clock_timestamp() + p_timeout_ms * INTERVAL '1 millisecond',
               lock_token = NULL, locked_at = NULL,
               settled_token = p_token, settled_kind = 1, settled_fp = p_fp
         WHERE pk = s.pk;
        RETURN 1;
    END IF;
    -- A retry of the commit that settled this session: report it, apply nothing.
    IF s.settled_token = p_token AND s.settled_kind = 1 AND s.settled_fp = p_fp THEN
        RETURN 1;
    END IF;
    RETURN 0;
END $$;

-- Binds: app, sid, token.
CREATE OR REPLACE FUNCTION {prefix}release(p_app BYTEA, p_sid BYTEA, p_token BYTEA)
RETURNS INT LANGUAGE plpgsql AS $$
DECLARE
    s {prefix}sessions%ROWTYPE;
BEGIN
    SELECT * INTO s FROM {prefix}sessions
     WHERE app = p_app AND sid = p_sid AND expires_at > clock_timestamp() FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    IF s.lock_token = p_token THEN
        UPDATE {prefix}sessions
           SET expires_at = clock_timestamp() + s.timeout_ms * INTERVAL '1 millisecond',
               lock_token = NULL, locked_at = NULL,
               settled_token = p_token, settled_kind = 2, settled_fp = NULL
         WHERE pk = s.pk;
        RETURN 1;
    END IF;
    IF s.settled_token = p_token AND s.settled_kind = 2 THEN
        RETURN 1;
    END IF;
    RETURN 0;
END $$;

-- Insert if absent: one INSERT ... ON CONFLICT DO NOTHING (never check-then-act). An expired row
-- under the key is deleted first: it no longer exists for any operation.
-- Binds: app, sid, timeout ms, initialize, item names, item values.
CREATE OR REPLACE FUNCTION {prefix}create(p_app BYTEA, p_sid BYTEA, p_timeout_ms BIGINT, p_init BOOLEAN,
                                          p_names BYTEA[], p_values BYTEA[])
RETURNS INT LANGUAGE plpgsql AS $$
DECLARE
    v_pk BIGINT;
    t TIMESTAMPTZ := clock_timestamp();
BEGIN
    DELETE FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at <= t;
    INSERT INTO {prefix}sessions (app, sid, expires_at, timeout_ms, initialize)
    VALUES (p_app, p_sid, t + p_timeout_ms * INTERVAL '1 millisecond', p_timeout_ms, p_init)
    ON CONFLICT (app, sid) DO NOTHING
    RETURNING pk INTO v_pk;
    IF v_pk IS NULL THEN
        RETURN 0;
    END IF;
    INSERT INTO {prefix}items (session_pk, name, value)
    SELECT v_pk, u.n, u.v FROM unnest(p_names, p_values) AS u(n, v);
    RETURN 1;
END $$;

-- Binds: app, sid, token. 0 missing, 1 lock lost, 2 removed.
CREATE OR REPLACE FUNCTION {prefix}remove(p_app BYTEA, p_sid BYTEA, p_token BYTEA)
RETURNS INT LANGUAGE plpgsql AS $$
DECLARE
    s {prefix}sessions%ROWTYPE;
BEGIN
    SELECT * INTO s FROM {prefix}sessions
     WHERE app = p_app AND sid = p_sid AND expires_at > clock_timestamp() FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    IF s.lock_token = p_token THEN
        DELETE FROM {prefix}sessions WHERE pk = s.pk;
        RETURN 2;
    END IF;
    RETURN 1;
END $$;

-- Binds: app, sid, keep (refresh throttle per mille).
CREATE OR REPLACE FUNCTION {prefix}touch(p_app BYTEA, p_sid BYTEA, p_keep INT)
RETURNS INT LANGUAGE plpgsql AS $$
DECLARE
    s {prefix}sessions%ROWTYPE;
    t TIMESTAMPTZ := clock_timestamp();
BEGIN
    SELECT * INTO s FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > t;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    IF extract(epoch FROM s.expires_at - t) * 1000000 > s.timeout_ms * p_keep THEN
        RETURN 1;
    END IF;
    UPDATE {prefix}sessions SET expires_at = clock_timestamp() + timeout_ms * INTERVAL '1 millisecond'
     WHERE pk = s.pk AND expires_at > clock_timestamp();
    RETURN CASE WHEN FOUND THEN 1 ELSE 0 END;
END $$;

-- Binds: app, sid, timeout ms, cleared, set names, set values, removed. The lock is untouched.
CREATE OR REPLACE FUNCTION {prefix}write_concurrent(p_app BYTEA, p_sid BYTEA, p_timeout_ms BIGINT,
                                                    p_cleared BOOLEAN, p_names BYTEA[], p_values BYTEA[], p_removed BYTEA[])
RETURNS INT LANGUAGE plpgsql AS $$
DECLARE
    s {prefix}sessions%ROWTYPE;
BEGIN
    SELECT * INTO s FROM {prefix}sessions
     WHERE app = p_app AND sid = p_sid AND expires_at > clock_timestamp() FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    PERFORM {prefix}apply_delta(s.pk, p_cleared, p_names, p_values, p_removed);
    UPDATE {prefix}sessions
       SET timeout_ms = p_timeout_ms,
           expires_at = clock_timestamp() + p_timeout_ms * INTERVAL '1 millisecond'
     WHERE pk = s.pk;
    RETURN 1;
END $$;

-- Binds: app, sid. Regardless of locks.
CREATE OR REPLACE FUNCTION {prefix}delete(p_app BYTEA, p_sid BYTEA)
RETURNS INT LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > clock_timestamp();
    RETURN CASE WHEN FOUND THEN 1 ELSE 0 END;
END $$;

-- Binds: app, sid, new sid, token. 0 lock lost, 1 new id taken, 2 changed.
CREATE OR REPLACE FUNCTION {prefix}change_id(p_app BYTEA, p_sid BYTEA, p_new_sid BYTEA, p_token BYTEA)
RETURNS INT LANGUAGE plpgsql AS $$
DECLARE
    s {prefix}sessions%ROWTYPE;
BEGIN
    SELECT * INTO s FROM {prefix}sessions
     WHERE app = p_app AND sid = p_sid AND expires_at > clock_timestamp() FOR UPDATE;
    IF NOT FOUND OR s.lock_token IS DISTINCT FROM p_token THEN
        RETURN 0;
    END IF;
    DELETE FROM {prefix}sessions WHERE app = p_app AND sid = p_new_sid AND expires_at <= clock_timestamp();
    BEGIN
        UPDATE {prefix}sessions SET sid = p_new_sid WHERE pk = s.pk;
    EXCEPTION WHEN unique_violation THEN
        RETURN 1;
    END;
    RETURN 2;
END $$;

-- Deletes up to p_batch expired sessions, oldest expiry first on the expiry index. The
-- transaction-scoped advisory lock (taken without waiting; a purger that finds another running
-- reports 0) makes purgers (of this prefix) run one at a time across processes; SKIP LOCKED never waits for a row that live traffic holds. Items go by cascade.
-- Binds: advisory lock key, batch size.
CREATE OR REPLACE FUNCTION {prefix}purge(p_lock BIGINT, p_batch BIGINT)
RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    n BIGINT;
BEGIN
    -- Never waits: while another process purges, this one reports 0 and its sweeper moves on,
    -- instead of holding a pool connection for the other's whole run.
    IF NOT pg_try_advisory_xact_lock(p_lock) THEN
        RETURN 0;
    END IF;
    DELETE FROM {prefix}sessions WHERE pk IN (
        SELECT pk FROM {prefix}sessions WHERE expires_at <= clock_timestamp()
         ORDER BY expires_at LIMIT p_batch FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
