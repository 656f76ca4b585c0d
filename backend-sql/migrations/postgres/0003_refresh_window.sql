-- 0003: the refresh window (docs/contract.md §1), pure reads, items in the session row, and a
-- release signal. Replaces every routine of 0001/0002 except purge; keeps every session.
--
-- Layout: a session's items live in its own row, as two parallel arrays (`names`, `vals`), so a
-- read is ONE index scan of one row (the old layout: the session row, then its item rows). A
-- commit still sends only the delta: the routine merges it into the arrays on the server
-- (docs/contract.md §2, the delta rule). Rows up to 8 kB stay inline and uncompressed
-- (toast_tuple_target), which covers ordinary sessions; larger ones go to TOAST.
--
-- Refresh window: every routine that slides takes `p_pct`, the window in percent of the
-- session's timeout; a slide sets expires_at = now + timeout + timeout * p_pct / 100 (integer
-- division, as RefreshWindow::window_ms). A slide is due when expires_at < now + timeout, or
-- always with p_pct = 0. read, touch and a refused acquire write nothing when no slide is due: no
-- UPDATE and no row lock, so a busy session's reads are plain SELECTs. (expires_at is indexed for
-- the purge, so an UPDATE that moves it is never HOT; release and acquire move it only when a
-- slide is due, and can be HOT otherwise.)
--
-- Release signal: every routine that ends a lock (commit, release, remove, delete of a locked
-- session, change_id) sends pg_notify('{prefix}release', hex(app) || ':' || hex(sid)); it is
-- delivered when the routine's transaction commits. Each store LISTENs on one connection.

ALTER TABLE {prefix}sessions
    ADD COLUMN IF NOT EXISTS names BYTEA[] NOT NULL DEFAULT '{}',
    ADD COLUMN IF NOT EXISTS vals  BYTEA[] NOT NULL DEFAULT '{}';
-- Free room on each page for the new version of an UPDATE that changes no indexed column (a
-- release, an acquire with no slide due): a HOT update, without new index entries.
ALTER TABLE {prefix}sessions SET (toast_tuple_target = 8160, fillfactor = 60);

-- Existing sessions keep their items (this migration runs in one transaction).
UPDATE {prefix}sessions s
   SET names = a.n, vals = a.v
  FROM (SELECT session_pk, array_agg(name ORDER BY name) AS n, array_agg(value ORDER BY name) AS v
          FROM {prefix}items GROUP BY session_pk) a
 WHERE s.pk = a.session_pk;

DROP FUNCTION IF EXISTS {prefix}read(BYTEA, BYTEA, INT);
DROP FUNCTION IF EXISTS {prefix}acquire(BYTEA, BYTEA, BYTEA, BIGINT);
DROP FUNCTION IF EXISTS {prefix}commit(BYTEA, BYTEA, BYTEA, BIGINT, BIGINT, BOOLEAN, BYTEA[], BYTEA[], BYTEA[]);
DROP FUNCTION IF EXISTS {prefix}release(BYTEA, BYTEA, BYTEA);
DROP FUNCTION IF EXISTS {prefix}create(BYTEA, BYTEA, BIGINT, BOOLEAN, BYTEA[], BYTEA[]);
DROP FUNCTION IF EXISTS {prefix}remove(BYTEA, BYTEA, BYTEA);
DROP FUNCTION IF EXISTS {prefix}touch(BYTEA, BYTEA, INT);
DROP FUNCTION IF EXISTS {prefix}write_concurrent(BYTEA, BYTEA, BIGINT, BOOLEAN, BYTEA[], BYTEA[], BYTEA[]);
DROP FUNCTION IF EXISTS {prefix}delete(BYTEA, BYTEA);
DROP FUNCTION IF EXISTS {prefix}change_id(BYTEA, BYTEA, BYTEA, BYTEA);
DROP FUNCTION IF EXISTS {prefix}apply_delta(BIGINT, BOOLEAN, BYTEA[], BYTEA[], BYTEA[]);
DROP TABLE IF EXISTS {prefix}items;

-- The release signal for one session.
CREATE OR REPLACE FUNCTION {prefix}released(p_app BYTEA, p_sid BYTEA)
RETURNS VOID LANGUAGE sql AS $$
    SELECT pg_notify('{prefix}release', encode(p_app, 'hex') || ':' || encode(p_sid, 'hex'));
$$;

-- The items after a delta: `names`/`vals` without the cleared, removed and overwritten items,
-- then the set ones.
CREATE OR REPLACE FUNCTION {prefix}merge(p_names BYTEA[], p_vals BYTEA[], p_cleared BOOLEAN,
                                         p_set_names BYTEA[], p_set_vals BYTEA[], p_removed BYTEA[],
                                         OUT r_names BYTEA[], OUT r_vals BYTEA[])
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg(m.n ORDER BY m.o), '{}'), coalesce(array_agg(m.v ORDER BY m.o), '{}')
      FROM (SELECT e.n, e.v, e.o
              FROM unnest(p_names, p_vals) WITH ORDINALITY AS e(n, v, o)
             WHERE NOT p_cleared AND e.n <> ALL (p_removed) AND e.n <> ALL (p_set_names)
            UNION ALL
            SELECT d.n, d.v, 1000000000 + d.o
              FROM unnest(p_set_names, p_set_vals) WITH ORDINALITY AS d(n, v, o)) m;
$$;

-- Reply of read and acquire: one row (status, token, age_ms, timeout_ms, init, names, vals):
-- 0 missing; 1 locked (token, age); 2 found / acquired (timeout, init, items).
-- Binds: app, sid, window percent.
CREATE OR REPLACE FUNCTION {prefix}read(p_app BYTEA, p_sid BYTEA, p_pct INT,
    OUT r_status INT, OUT r_token BYTEA, OUT r_age_ms BIGINT, OUT r_timeout_ms BIGINT,
    OUT r_init BOOLEAN, OUT r_names BYTEA[], OUT r_vals BYTEA[])
LANGUAGE plpgsql AS $$
DECLARE
    t TIMESTAMPTZ := clock_timestamp();
    v_pk BIGINT;
    v_expires TIMESTAMPTZ;
    v_locked TIMESTAMPTZ;
BEGIN
    -- The fast path: one SELECT, nothing written while no slide is due.
    SELECT pk, expires_at, timeout_ms, lock_token, locked_at, initialize, names, vals
      INTO v_pk, v_expires, r_timeout_ms, r_token, v_locked, r_init, r_names, r_vals
      FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > t;
    IF NOT FOUND THEN
        r_status := 0;
        RETURN;
    END IF;
    IF p_pct = 0 OR v_expires < t + r_timeout_ms * INTERVAL '1 millisecond'
       OR (r_init AND r_token IS NULL) THEN
        -- A write is due: decide again under the row lock, on the latest row (a session that
        -- expired meanwhile is not slid back to life; the flag is reported by whoever clears it).
        SELECT expires_at, timeout_ms, lock_token, locked_at, initialize, names, vals
          INTO v_expires, r_timeout_ms, r_token, v_locked, r_init, r_names, r_vals
          FROM {prefix}sessions WHERE pk = v_pk AND expires_at > clock_timestamp() FOR UPDATE;
        IF NOT FOUND THEN
            r_status := 0; r_token := NULL; r_init := NULL; r_names := NULL; r_vals := NULL;
            r_timeout_ms := NULL;
            RETURN;
        END IF;
        t := clock_timestamp();
        IF p_pct = 0 OR v_expires < t + r_timeout_ms * INTERVAL '1 millisecond'
           OR (r_init AND r_token IS NULL) THEN
            UPDATE {prefix}sessions
               SET expires_at = t + (r_timeout_ms + r_timeout_ms * p_pct / 100) * INTERVAL '1 millisecond',
                   initialize = initialize AND lock_token IS NOT NULL
             WHERE pk = v_pk;
        END IF;
    END IF;
    IF r_token IS NOT NULL THEN
        r_status := 1;
        r_age_ms := greatest(0, (extract(epoch FROM t - v_locked) * 1000)::BIGINT);
        r_timeout_ms := NULL; r_init := FALSE; r_names := NULL; r_vals := NULL;
        RETURN;
    END IF;
    r_status := 2;
END $$;

-- Binds: app, sid, token, lock ttl in ms, window percent. Reply as read's.
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
      FROM {prefix}sessions WHERE pk = v_pk AND expires_at > clock_timestamp() FOR UPDATE;
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

-- Binds: app, sid, token, delta fingerprint, timeout ms, window percent, cleared, set names, set
-- values, removed names. Reply: 1 committed (or a retry of the settled commit, not applied again)
-- / 0 lock lost. One UPDATE, re-checked on the latest row under its lock (READ COMMITTED).
CREATE OR REPLACE FUNCTION {prefix}commit(p_app BYTEA, p_sid BYTEA, p_token BYTEA, p_fp BIGINT,
                                          p_timeout_ms BIGINT, p_pct INT, p_cleared BOOLEAN,
                                          p_names BYTEA[], p_values BYTEA[], p_removed BYTEA[])
RETURNS INT LANGUAGE plpgsql AS $$
BEGIN
    IF p_cleared OR cardinality(p_names) > 0 OR cardinality(p_removed) > 0 THEN
        UPDATE {prefix}sessions x
           SET (names, vals) = (SELECT m.r_names, m.r_vals
                                  FROM {prefix}merge(x.names, x.vals, p_cleared, p_names, p_values, p_removed) m),
               timeout_ms = p_timeout_ms,
               expires_at = clock_timestamp() + (p_timeout_ms + p_timeout_ms * p_pct / 100) * INTERVAL '1 millisecond',
               lock_token = NULL, locked_at = NULL,
               settled_token = p_token, settled_kind = 1, settled_fp = p_fp
         WHERE app = p_app AND sid = p_sid AND lock_token = p_token AND expires_at > clock_timestamp();
    ELSE
        UPDATE {prefix}sessions
           SET timeout_ms = p_timeout_ms,
               expires_at = clock_timestamp() + (p_timeout_ms + p_timeout_ms * p_pct / 100) * INTERVAL '1 millisecond',
               lock_token = NULL, locked_at = NULL,
               settled_token = p_token, settled_kind = 1, settled_fp = p_fp
         WHERE app = p_app AND sid = p_sid AND lock_token = p_token AND expires_at > clock_timestamp();
    END IF;
    IF FOUND THEN
        PERFORM {prefix}released(p_app, p_sid);
        RETURN 1;
    END IF;
    -- A retry of the commit that settled this session: report it, apply nothing.
    PERFORM FROM {prefix}sessions
      WHERE app = p_app AND sid = p_sid AND expires_at > clock_timestamp()
        AND settled_token = p_token AND settled_kind = 1 AND settled_fp = p_fp;
    RETURN CASE WHEN FOUND THEN 1 ELSE 0 END;
END $$;

-- A release records nothing (0002). Binds: app, sid, token, window percent. Reply: 1 released /
-- 0 lock lost. expires_at moves only when a slide is due (otherwise the UPDATE is HOT).
CREATE OR REPLACE FUNCTION {prefix}release(p_app BYTEA, p_sid BYTEA, p_token BYTEA, p_pct INT)
RETURNS INT LANGUAGE plpgsql AS $$
DECLARE
    t TIMESTAMPTZ := clock_timestamp();
BEGIN
    UPDATE {prefix}sessions
       SET expires_at = CASE
               WHEN p_pct = 0 OR expires_at < t + timeout_ms * INTERVAL '1 millisecond'
               THEN t + (timeout_ms + timeout_ms * p_pct / 100) * INTERVAL '1 millisecond'
               ELSE expires_at END,
           lock_token = NULL, locked_at = NULL
     WHERE app = p_app AND sid = p_sid AND lock_token = p_token AND expires_at > t;
    IF FOUND THEN
        PERFORM {prefix}released(p_app, p_sid);
        RETURN 1;
    END IF;
    RETURN 0;
END $$;

-- Insert if absent (never check-then-act): an expired row under the key is deleted, then the
-- insert tried again. Binds: app, sid, timeout ms, window percent, initialize, item names, item
-- values. Reply: 1 created / 0 already exists.
CREATE OR REPLACE FUNCTION {prefix}create(p_app BYTEA, p_sid BYTEA, p_timeout_ms BIGINT, p_pct INT,
                                          p_init BOOLEAN, p_names BYTEA[], p_values BYTEA[])
RETURNS INT LANGUAGE plpgsql AS $$
DECLARE
    t TIMESTAMPTZ := clock_timestamp();
BEGIN
    INSERT INTO {prefix}sessions (app, sid, expires_at, timeout_ms, initialize, names, vals)
    VALUES (p_app, p_sid, t + (p_timeout_ms + p_timeout_ms * p_pct / 100) * INTERVAL '1 millisecond',
            p_timeout_ms, p_init, p_names, p_values)
    ON CONFLICT (app, sid) DO NOTHING;
    IF FOUND THEN
        RETURN 1;
    END IF;
    DELETE FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at <= t;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    INSERT INTO {prefix}sessions (app, sid, expires_at, timeout_ms, initialize, names, vals)
    VALUES (p_app, p_sid, t + (p_timeout_ms + p_timeout_ms * p_pct / 100) * INTERVAL '1 millisecond',
            p_timeout_ms, p_init, p_names, p_values)
    ON CONFLICT (app, sid) DO NOTHING;
    RETURN CASE WHEN FOUND THEN 1 ELSE 0 END;
END $$;

-- Binds: app, sid, token. Reply: 0 missing / 1 lock lost / 2 removed.
CREATE OR REPLACE FUNCTION {prefix}remove(p_app BYTEA, p_sid BYTEA, p_token BYTEA)
RETURNS INT LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {prefix}sessions
     WHERE app = p_app AND sid = p_sid AND lock_token = p_token AND expires_at > clock_timestamp();
    IF FOUND THEN
        PERFORM {prefix}released(p_app, p_sid);
        RETURN 2;
    END IF;
    PERFORM FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > clock_timestamp();
    RETURN CASE WHEN FOUND THEN 1 ELSE 0 END;
END $$;

-- Binds: app, sid, window percent. Reply: 1 touched / 0 missing.
CREATE OR REPLACE FUNCTION {prefix}touch(p_app BYTEA, p_sid BYTEA, p_pct INT)
RETURNS INT LANGUAGE plpgsql AS $$
DECLARE
    t TIMESTAMPTZ := clock_timestamp();
    v_pk BIGINT;
    v_expires TIMESTAMPTZ;
    v_timeout BIGINT;
BEGIN
    SELECT pk, expires_at, timeout_ms INTO v_pk, v_expires, v_timeout
      FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > t;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    IF p_pct > 0 AND v_expires >= t + v_timeout * INTERVAL '1 millisecond' THEN
        RETURN 1;
    END IF;
    -- Re-checked on the latest row under its lock.
    UPDATE {prefix}sessions
       SET expires_at = clock_timestamp() + (timeout_ms + timeout_ms * p_pct / 100) * INTERVAL '1 millisecond'
     WHERE pk = v_pk AND expires_at > clock_timestamp();
    RETURN CASE WHEN FOUND THEN 1 ELSE 0 END;
END $$;

-- Binds: app, sid, timeout ms, window percent, cleared, set names, set values, removed names. The
-- lock is untouched. Reply: 1 committed / 0 missing.
CREATE OR REPLACE FUNCTION {prefix}write_concurrent(p_app BYTEA, p_sid BYTEA, p_timeout_ms BIGINT, p_pct INT,
                                                    p_cleared BOOLEAN, p_names BYTEA[], p_values BYTEA[],
                                                    p_removed BYTEA[])
RETURNS INT LANGUAGE plpgsql AS $$
BEGIN
    UPDATE {prefix}sessions x
       SET (names, vals) = (SELECT m.r_names, m.r_vals
                              FROM {prefix}merge(x.names, x.vals, p_cleared, p_names, p_values, p_removed) m),
           timeout_ms = p_timeout_ms,
           expires_at = clock_timestamp() + (p_timeout_ms + p_timeout_ms * p_pct / 100) * INTERVAL '1 millisecond'
     WHERE app = p_app AND sid = p_sid AND expires_at > clock_timestamp();
    RETURN CASE WHEN FOUND THEN 1 ELSE 0 END;
END $$;

-- Binds: app, sid. Regardless of locks. Reply: 1 removed / 0 missing.
CREATE OR REPLACE FUNCTION {prefix}delete(p_app BYTEA, p_sid BYTEA)
RETURNS INT LANGUAGE plpgsql AS $$
DECLARE
    v_token BYTEA;
BEGIN
    DELETE FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > clock_timestamp()
    RETURNING lock_token INTO v_token;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    IF v_token IS NOT NULL THEN
        PERFORM {prefix}released(p_app, p_sid);
    END IF;
    RETURN 1;
END $$;

-- Binds: app, sid, new sid, token. Reply: 0 lock lost / 1 new id taken / 2 changed. Waiters on
-- the old id are woken: they look again and find it gone.
CREATE OR REPLACE FUNCTION {prefix}change_id(p_app BYTEA, p_sid BYTEA, p_new_sid BYTEA, p_token BYTEA)
RETURNS INT LANGUAGE plpgsql AS $$
DECLARE
    v_pk BIGINT;
BEGIN
    SELECT pk INTO v_pk FROM {prefix}sessions
     WHERE app = p_app AND sid = p_sid AND expires_at > clock_timestamp() AND lock_token = p_token
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    DELETE FROM {prefix}sessions WHERE app = p_app AND sid = p_new_sid AND expires_at <= clock_timestamp();
    BEGIN
        UPDATE {prefix}sessions SET sid = p_new_sid WHERE pk = v_pk;
    EXCEPTION WHEN unique_violation THEN
        RETURN 1;
    END;
    PERFORM {prefix}released(p_app, p_sid);
    RETURN 2;
END $$;
