-- 0004: read, acquire and commit become plain SQL statements sent by the client (see
-- src/postgres/mod.rs), each still one statement in one round trip: a PL/pgSQL call costs tens
-- of microseconds more than the statement it runs, and on the common path these three now run
-- no function at all. Their rare paths call the two functions below, or 0003's acquire, from
-- inside the same statement, only when needed:
--
-- * read: one index lookup of one row; where a write is due (a slide, or the initialize flag to
--   clear) the statement calls {prefix}read_write on that row, which decides again under the row
--   lock on the latest version (0003's rule).
-- * acquire: one UPDATE ... RETURNING takes a free, own or stale lock of an initialized session;
--   otherwise (missing, locked by another, uninitialized) the statement calls 0003's acquire.
-- * commit: one UPDATE ... RETURNING applies the delta (a changed item's value is replaced in place
--   when it is the only change), unlocks and notifies; where it matches nothing, the statement
--   calls {prefix}settled, whose fresh snapshot tells a retried commit from a lost lock.
--
-- 0003's read and commit functions stay (unused by this version): nothing is dropped, so an older
-- process still running against this schema keeps working.

-- The write of a read that found a slide due or the initialize flag to clear, under the row lock,
-- on the latest row version. Binds: the session's pk, window percent. Reply: 0 the session is gone
-- (expired or removed meanwhile); 1 live; 2 live, and this call cleared the initialize flag (the
-- read reports it: exactly once).
CREATE OR REPLACE FUNCTION {prefix}read_write(p_pk BIGINT, p_pct INT)
RETURNS INT LANGUAGE plpgsql AS $$
DECLARE
    t TIMESTAMPTZ;
    v_expires TIMESTAMPTZ;
    v_timeout BIGINT;
    v_token BYTEA;
    v_init BOOLEAN;
BEGIN
    SELECT expires_at, timeout_ms, lock_token, initialize
      INTO v_expires, v_timeout, v_token, v_init
      FROM {prefix}sessions WHERE pk = p_pk AND expires_at > clock_timestamp() FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    t := clock_timestamp();
    IF p_pct = 0 OR v_expires < t + v_timeout * INTERVAL '1 millisecond'
       OR (v_init AND v_token IS NULL) THEN
        UPDATE {prefix}sessions
           SET expires_at = t + (v_timeout + v_timeout * p_pct / 100) * INTERVAL '1 millisecond',
               initialize = initialize AND lock_token IS NOT NULL
         WHERE pk = p_pk;
    END IF;
    RETURN CASE WHEN v_init AND v_token IS NULL THEN 2 ELSE 1 END;
END $$;

-- Whether (token, fingerprint) is the commit that settled this live session: a retry of it is
-- reported as committed and applies nothing. A function, so that it reads with a snapshot taken
-- after the calling statement's UPDATE waited for any concurrent writer (READ COMMITTED).
-- Binds: app, sid, token, fingerprint. Reply: 1 settled by this commit / 0 lock lost.
CREATE OR REPLACE FUNCTION {prefix}settled(p_app BYTEA, p_sid BYTEA, p_token BYTEA, p_fp BIGINT)
RETURNS INT LANGUAGE plpgsql AS $$
BEGIN
    PERFORM FROM {prefix}sessions
      WHERE app = p_app AND sid = p_sid AND expires_at > clock_timestamp()
        AND settled_token = p_token AND settled_kind = 1 AND settled_fp = p_fp;
    RETURN CASE WHEN FOUND THEN 1 ELSE 0 END;
END $$;
