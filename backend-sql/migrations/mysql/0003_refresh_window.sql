-- 0003: the refresh window (docs/contract.md §1) and pure reads. Replaces the procedures that
-- slide (read, acquire, commit, release, create, touch, write_concurrent); the tables and every
-- session stay as they are.
--
-- Each of these takes `p_pct`, the window in percent of the session's timeout: a slide sets
-- expires_at = now + timeout + (timeout * p_pct DIV 100) ms (integer division, as
-- RefreshWindow::window_ms). A slide is due when expires_at < now + timeout, or always with
-- p_pct = 0. read, touch and a refused acquire write nothing when no slide is due; release and an
-- acquire that takes the lock move expires_at only when a slide is due.
--
-- read and acquire first try one consistent (non-locking, autocommit) SELECT that answers only
-- when nothing needs writing: no transaction, no lock. When it returns no row (a slide is due,
-- the initialize flag must be cleared, the session is missing, or acquire may take the lock),
-- FOUND_ROWS() is 0 and the locking path of 0001 runs, window-aware; its result set follows the
-- fast path's empty one. Reply rows: (status, token, age_ms, timeout_ms, init, name, value); a
-- row whose status is not NULL carries the session's header, a row whose name is not NULL an
-- item (the fast path repeats the header on every item row of its join).

-- Binds: app, sid, window percent.
DROP PROCEDURE IF EXISTS {prefix}read;
CREATE PROCEDURE {prefix}read(IN p_app VARBINARY(128), IN p_sid VARBINARY(64), IN p_pct INT)
BEGIN
    DECLARE v_pk BIGINT DEFAULT NULL;
    DECLARE v_expires DATETIME(6);
    DECLARE v_timeout BIGINT;
    DECLARE v_token VARBINARY(16);
    DECLARE v_locked DATETIME(6);
    DECLARE v_init BOOLEAN;
    DECLARE t DATETIME(6);
    DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN END;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SELECT CAST(IF(s.lock_token IS NULL, 2, 1) AS SIGNED) AS status, s.lock_token AS token,
           CAST(IF(s.lock_token IS NULL, NULL,
                   GREATEST(0, TIMESTAMPDIFF(MICROSECOND, s.locked_at, UTC_TIMESTAMP(6)) DIV 1000)) AS SIGNED) AS age_ms,
           CAST(IF(s.lock_token IS NULL, s.timeout_ms, NULL) AS SIGNED) AS timeout_ms,
           CAST(0 AS SIGNED) AS init, i.name AS name, i.value AS value
      FROM {prefix}sessions s
      LEFT JOIN {prefix}items i ON i.session_pk = s.pk AND s.lock_token IS NULL
     WHERE s.app = p_app AND s.sid = p_sid AND p_pct > 0
       AND s.expires_at >= UTC_TIMESTAMP(6) + INTERVAL (s.timeout_ms * 1000) MICROSECOND
       AND NOT (s.initialize AND s.lock_token IS NULL);
    IF FOUND_ROWS() = 0 THEN
        SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
        START TRANSACTION;
        SELECT pk, expires_at, timeout_ms, lock_token, locked_at, initialize
          INTO v_pk, v_expires, v_timeout, v_token, v_locked, v_init
          FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > UTC_TIMESTAMP(6) FOR UPDATE;
        SET t = UTC_TIMESTAMP(6);
        IF v_pk IS NOT NULL AND (p_pct = 0 OR v_expires < t + INTERVAL (v_timeout * 1000) MICROSECOND
                                 OR (v_init AND v_token IS NULL)) THEN
            UPDATE {prefix}sessions
               SET expires_at = t + INTERVAL ((v_timeout + (v_timeout * p_pct) DIV 100) * 1000) MICROSECOND,
                   initialize = initialize AND lock_token IS NOT NULL
             WHERE pk = v_pk;
        END IF;
        IF v_pk IS NULL THEN
            SELECT CAST(0 AS SIGNED) AS status, CAST(NULL AS BINARY) AS token, CAST(NULL AS SIGNED) AS age_ms, CAST(NULL AS SIGNED) AS timeout_ms, CAST(0 AS SIGNED) AS init, CAST(NULL AS BINARY) AS name, CAST(NULL AS BINARY) AS value;
        ELSEIF v_token IS NOT NULL THEN
            SELECT CAST(1 AS SIGNED) AS status, v_token AS token, CAST(GREATEST(0, TIMESTAMPDIFF(MICROSECOND, v_locked, t) DIV 1000) AS SIGNED) AS age_ms, CAST(NULL AS SIGNED) AS timeout_ms, CAST(0 AS SIGNED) AS init, CAST(NULL AS BINARY) AS name, CAST(NULL AS BINARY) AS value;
        ELSE
            SELECT CAST(2 AS SIGNED) AS status, CAST(NULL AS BINARY) AS token, CAST(NULL AS SIGNED) AS age_ms, CAST(v_timeout AS SIGNED) AS timeout_ms, CAST(v_init AS SIGNED) AS init, CAST(NULL AS BINARY) AS name, CAST(NULL AS BINARY) AS value
            UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, i.name, i.value FROM {prefix}items i WHERE i.session_pk = v_pk;
        END IF;
        COMMIT;
    END IF;
END;

-- Binds: app, sid, token, lock ttl ms, window percent. Reply as read's: 0 missing / 1 locked /
-- 2 acquired + items.
DROP PROCEDURE IF EXISTS {prefix}acquire;
CREATE PROCEDURE {prefix}acquire(IN p_app VARBINARY(128), IN p_sid VARBINARY(64), IN p_token VARBINARY(16), IN p_ttl_ms BIGINT, IN p_pct INT)
BEGIN
    DECLARE v_pk BIGINT DEFAULT NULL;
    DECLARE v_expires DATETIME(6);
    DECLARE v_timeout BIGINT;
    DECLARE v_token VARBINARY(16);
    DECLARE v_locked DATETIME(6);
    DECLARE v_init BOOLEAN;
    DECLARE t DATETIME(6);
    DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN END;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    -- Locked by another, fresh, no slide due: answered by a plain SELECT (waiters poll with this).
    SELECT CAST(1 AS SIGNED) AS status, s.lock_token AS token,
           CAST(GREATEST(0, TIMESTAMPDIFF(MICROSECOND, s.locked_at, UTC_TIMESTAMP(6)) DIV 1000) AS SIGNED) AS age_ms,
           CAST(NULL AS SIGNED) AS timeout_ms, CAST(0 AS SIGNED) AS init, CAST(NULL AS BINARY) AS name, CAST(NULL AS BINARY) AS value
      FROM {prefix}sessions s
     WHERE s.app = p_app AND s.sid = p_sid AND p_pct > 0
       AND s.expires_at >= UTC_TIMESTAMP(6) + INTERVAL (s.timeout_ms * 1000) MICROSECOND
       AND s.lock_token IS NOT NULL AND s.lock_token <> p_token
       AND TIMESTAMPDIFF(MICROSECOND, s.locked_at, UTC_TIMESTAMP(6)) DIV 1000 < p_ttl_ms;
    IF FOUND_ROWS() = 0 THEN
        SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
        START TRANSACTION;
        SELECT pk, expires_at, timeout_ms, lock_token, locked_at, initialize
          INTO v_pk, v_expires, v_timeout, v_token, v_locked, v_init
          FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > UTC_TIMESTAMP(6) FOR UPDATE;
        SET t = UTC_TIMESTAMP(6);
        IF v_pk IS NULL THEN
            SELECT CAST(0 AS SIGNED) AS status, CAST(NULL AS BINARY) AS token, CAST(NULL AS SIGNED) AS age_ms, CAST(NULL AS SIGNED) AS timeout_ms, CAST(0 AS SIGNED) AS init, CAST(NULL AS BINARY) AS name, CAST(NULL AS BINARY) AS value;
        ELSEIF v_token IS NOT NULL AND v_token <> p_token AND TIMESTAMPDIFF(MICROSECOND, v_locked, t) DIV 1000 < p_ttl_ms THEN
            IF p_pct = 0 OR v_expires < t + INTERVAL (v_timeout * 1000) MICROSECOND THEN
                UPDATE {prefix}sessions
                   SET expires_at = t + INTERVAL ((v_timeout + (v_timeout * p_pct) DIV 100) * 1000) MICROSECOND
                 WHERE pk = v_pk;
            END IF;
            SELECT CAST(1 AS SIGNED) AS status, v_token AS token, CAST(GREATEST(0, TIMESTAMPDIFF(MICROSECOND, v_locked, t) DIV 1000) AS SIGNED) AS age_ms, CAST(NULL AS SIGNED) AS timeout_ms, CAST(0 AS SIGNED) AS init, CAST(NULL AS BINARY) AS name, CAST(NULL AS BINARY) AS value;
        ELSE
            -- Ours already (a retried acquire keeps the lock's age), free, or stale and taken over here.
            UPDATE {prefix}sessions
               SET expires_at = IF(p_pct = 0 OR v_expires < t + INTERVAL (v_timeout * 1000) MICROSECOND,
                                   t + INTERVAL ((v_timeout + (v_timeout * p_pct) DIV 100) * 1000) MICROSECOND,
                                   v_expires),
                   locked_at = IF(v_token <=> p_token, v_locked, t), lock_token = p_token, initialize = FALSE
             WHERE pk = v_pk;
            SELECT CAST(2 AS SIGNED) AS status, CAST(NULL AS BINARY) AS token, CAST(NULL AS SIGNED) AS age_ms, CAST(v_timeout AS SIGNED) AS timeout_ms, CAST(v_init AS SIGNED) AS init, CAST(NULL AS BINARY) AS name, CAST(NULL AS BINARY) AS value
            UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, i.name, i.value FROM {prefix}items i WHERE i.session_pk = v_pk;
        END IF;
        COMMIT;
    END IF;
END;

-- Binds: app, sid, token, fingerprint, timeout ms, window percent, cleared, packed set, packed
-- removed. Reply: status 1 committed (or a retry of the settled commit, not applied again) / 0
-- lock lost.
DROP PROCEDURE IF EXISTS {prefix}commit;
CREATE PROCEDURE {prefix}commit(IN p_app VARBINARY(128), IN p_sid VARBINARY(64), IN p_token VARBINARY(16), IN p_fp BIGINT, IN p_timeout_ms BIGINT, IN p_pct INT, IN p_cleared BOOLEAN, IN p_set LONGBLOB, IN p_removed LONGBLOB)
BEGIN
    DECLARE v_pk BIGINT DEFAULT NULL;
    DECLARE v_token VARBINARY(16);
    DECLARE v_stoken VARBINARY(16);
    DECLARE v_skind SMALLINT;
    DECLARE v_sfp BIGINT;
    DECLARE t DATETIME(6);
    DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN END;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    SELECT pk, lock_token, settled_token, settled_kind, settled_fp
      INTO v_pk, v_token, v_stoken, v_skind, v_sfp
      FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > UTC_TIMESTAMP(6) FOR UPDATE;
    SET t = UTC_TIMESTAMP(6);
    IF v_pk IS NOT NULL AND v_token <=> p_token THEN
        CALL {prefix}apply_delta(v_pk, p_cleared, p_set, p_removed);
        UPDATE {prefix}sessions SET timeout_ms = p_timeout_ms,
               expires_at = t + INTERVAL ((p_timeout_ms + (p_timeout_ms * p_pct) DIV 100) * 1000) MICROSECOND,
               lock_token = NULL, locked_at = NULL, settled_token = p_token, settled_kind = 1, settled_fp = p_fp
         WHERE pk = v_pk;
        SELECT CAST(1 AS SIGNED) AS status;
    ELSEIF v_pk IS NOT NULL AND v_stoken <=> p_token AND v_skind = 1 AND v_sfp = p_fp THEN
        SELECT CAST(1 AS SIGNED) AS status;
    ELSE
        SELECT CAST(0 AS SIGNED) AS status;
    END IF;
    COMMIT;
END;

-- A release records nothing (0002). One autocommit statement: InnoDB locks the row and checks the
-- WHERE clause on its latest version. expires_at moves only when a slide is due. ROW_COUNT() is
-- 1 exactly when it matched (it always changes lock_token).
-- Binds: app, sid, token, window percent. Reply: 1 released / 0 lock lost.
DROP PROCEDURE IF EXISTS {prefix}release;
CREATE PROCEDURE {prefix}release(IN p_app VARBINARY(128), IN p_sid VARBINARY(64), IN p_token VARBINARY(16), IN p_pct INT)
BEGIN
    DECLARE t DATETIME(6) DEFAULT UTC_TIMESTAMP(6);
    UPDATE {prefix}sessions
       SET expires_at = IF(p_pct = 0 OR expires_at < t + INTERVAL (timeout_ms * 1000) MICROSECOND,
                           t + INTERVAL ((timeout_ms + (timeout_ms * p_pct) DIV 100) * 1000) MICROSECOND,
                           expires_at),
           lock_token = NULL, locked_at = NULL
     WHERE app = p_app AND sid = p_sid AND lock_token = p_token AND expires_at > t;
    SELECT CAST(IF(ROW_COUNT() > 0, 1, 0) AS SIGNED) AS status;
END;

-- Insert if absent: a plain INSERT whose duplicate-key error (1062) means "already exists"
-- (never check-then-act, never INSERT IGNORE, which would also swallow truncation). An expired
-- row under the key is deleted first. Binds: app, sid, timeout ms, window percent, initialize,
-- packed items. Reply: 1 created / 0 already exists.
DROP PROCEDURE IF EXISTS {prefix}create;
CREATE PROCEDURE {prefix}create(IN p_app VARBINARY(128), IN p_sid VARBINARY(64), IN p_timeout_ms BIGINT, IN p_pct INT, IN p_init BOOLEAN, IN p_set LONGBLOB)
BEGIN
    DECLARE t DATETIME(6) DEFAULT UTC_TIMESTAMP(6);
    DECLARE v_pk BIGINT;
    DECLARE EXIT HANDLER FOR 1062 BEGIN ROLLBACK; SELECT CAST(0 AS SIGNED) AS status; END;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    DELETE FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at <= t;
    INSERT INTO {prefix}sessions (app, sid, expires_at, timeout_ms, initialize, created_at)
    VALUES (p_app, p_sid, t + INTERVAL ((p_timeout_ms + (p_timeout_ms * p_pct) DIV 100) * 1000) MICROSECOND,
            p_timeout_ms, p_init, t);
    SET v_pk = LAST_INSERT_ID();
    CALL {prefix}apply_delta(v_pk, FALSE, p_set, '');
    COMMIT;
    SELECT CAST(1 AS SIGNED) AS status;
END;

-- Binds: app, sid, window percent. Reply: 1 touched / 0 missing.
DROP PROCEDURE IF EXISTS {prefix}touch;
CREATE PROCEDURE {prefix}touch(IN p_app VARBINARY(128), IN p_sid VARBINARY(64), IN p_pct INT)
BEGIN
    DECLARE v_pk BIGINT DEFAULT NULL;
    DECLARE v_expires DATETIME(6);
    DECLARE v_timeout BIGINT;
    DECLARE t DATETIME(6) DEFAULT UTC_TIMESTAMP(6);
    DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN END;
    SELECT pk, expires_at, timeout_ms INTO v_pk, v_expires, v_timeout
      FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > t;
    IF v_pk IS NULL THEN
        SELECT CAST(0 AS SIGNED) AS status;
    ELSEIF p_pct > 0 AND v_expires >= t + INTERVAL (v_timeout * 1000) MICROSECOND THEN
        SELECT CAST(1 AS SIGNED) AS status;
    ELSE
        -- One autocommit statement; the condition is re-checked on the row it locks.
        SET t = UTC_TIMESTAMP(6);
        UPDATE {prefix}sessions
           SET expires_at = t + INTERVAL ((timeout_ms + (timeout_ms * p_pct) DIV 100) * 1000) MICROSECOND
         WHERE pk = v_pk AND expires_at > t;
        SELECT CAST(IF(ROW_COUNT() > 0, 1, 0) AS SIGNED) AS status;
    END IF;
END;

-- Binds: app, sid, timeout ms, window percent, cleared, packed set, packed removed. The lock is
-- untouched. Reply: 1 committed / 0 missing.
DROP PROCEDURE IF EXISTS {prefix}write_concurrent;
CREATE PROCEDURE {prefix}write_concurrent(IN p_app VARBINARY(128), IN p_sid VARBINARY(64), IN p_timeout_ms BIGINT, IN p_pct INT, IN p_cleared BOOLEAN, IN p_set LONGBLOB, IN p_removed LONGBLOB)
BEGIN
    DECLARE v_pk BIGINT DEFAULT NULL;
    DECLARE t DATETIME(6);
    DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN END;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    SELECT pk INTO v_pk
      FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > UTC_TIMESTAMP(6) FOR UPDATE;
    SET t = UTC_TIMESTAMP(6);
    IF v_pk IS NULL THEN
        SELECT CAST(0 AS SIGNED) AS status;
    ELSE
        CALL {prefix}apply_delta(v_pk, p_cleared, p_set, p_removed);
        UPDATE {prefix}sessions SET timeout_ms = p_timeout_ms,
               expires_at = t + INTERVAL ((p_timeout_ms + (p_timeout_ms * p_pct) DIV 100) * 1000) MICROSECOND
         WHERE pk = v_pk;
        SELECT CAST(1 AS SIGNED) AS status;
    END IF;
    COMMIT;
END;
