-- backend-sql schema, MySQL / MariaDB (InnoDB). `{prefix}` is the validated table prefix.
--
-- Each store operation is ONE round trip: `CALL {prefix}<op>(?, ...)`, a stored procedure that runs
-- one READ COMMITTED transaction and ends with one result set. (Prepared statements hold one
-- statement only and MySQL has no data-modifying CTE: the procedure is the one-round-trip batch.)
-- Times: UTC_TIMESTAMP(6), the database clock, independent of the session time zone. Names, ids and
-- values: VARBINARY/LONGBLOB, compared byte for byte whatever the collation ("Case" <> "case").
-- Deltas arrive packed as [u32 big-endian length][bytes]... (set: name, value pairs; removed: names).

CREATE TABLE IF NOT EXISTS {prefix}sessions (
    pk            BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    app           VARBINARY(128) NOT NULL,
    sid           VARBINARY(64) NOT NULL,
    expires_at    DATETIME(6)   NOT NULL,
    timeout_ms    BIGINT        NOT NULL,
    lock_token    VARBINARY(16) NULL,
    locked_at     DATETIME(6)   NULL,
    initialize    BOOLEAN       NOT NULL,
    -- How the last lock ended (token, 1 = commit / 2 = release, delta fingerprint).
    settled_token VARBINARY(16) NULL,
    settled_kind  SMALLINT      NULL,
    settled_fp    BIGINT        NULL,
    created_at    DATETIME(6)   NOT NULL,
    UNIQUE KEY {prefix}sessions_key (app, sid),
    -- The purge walks this index, oldest expiry first.
    KEY {prefix}sessions_expires (expires_at)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS {prefix}items (
    session_pk BIGINT         NOT NULL,
    name       VARBINARY(256) NOT NULL,
    value      LONGBLOB       NOT NULL,
    PRIMARY KEY (session_pk, name),
    CONSTRAINT {prefix}items_session FOREIGN KEY (session_pk) REFERENCES {prefix}sessions (pk) ON DELETE CASCADE
) ENGINE = InnoDB;

-- Binds: app, sid, keep (refresh throttle per mille; 1000 = always slide).
-- Reply: a header row (name NULL) with status 0 missing / 1 locked (token, age) / 2 found
-- (timeout, init), then one row per item.
DROP PROCEDURE IF EXISTS {prefix}read;
CREATE PROCEDURE {prefix}read(IN p_app VARBINARY(128), IN p_sid VARBINARY(64), IN p_keep INT)
BEGIN
    DECLARE v_pk BIGINT DEFAULT NULL;
    DECLARE v_expires DATETIME(6);
    DECLARE v_timeout BIGINT;
    DECLARE v_token VARBINARY(16);
    DECLARE v_locked DATETIME(6);
    DECLARE v_init BOOLEAN;
    DECLARE v_stoken VARBINARY(16);
    DECLARE v_skind SMALLINT;
    DECLARE v_sfp BIGINT;
    DECLARE t DATETIME(6);
    DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN END;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    -- Throttled path first: a consistent read, no lock and no write while enough life is left.
    SELECT pk, expires_at, timeout_ms, lock_token, locked_at, initialize
      INTO v_pk, v_expires, v_timeout, v_token, v_locked, v_init
      FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > UTC_TIMESTAMP(6);
    SET t = UTC_TIMESTAMP(6);
    IF v_pk IS NOT NULL AND (v_init OR TIMESTAMPDIFF(MICROSECOND, t, v_expires) <= v_timeout * p_keep) THEN
        SET v_pk = NULL;
        SELECT pk, expires_at, timeout_ms, lock_token, locked_at, initialize, settled_token, settled_kind, settled_fp
          INTO v_pk, v_expires, v_timeout, v_token, v_locked, v_init, v_stoken, v_skind, v_sfp
          FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > UTC_TIMESTAMP(6) FOR UPDATE;
        SET t = UTC_TIMESTAMP(6);
        IF v_pk IS NOT NULL THEN
            UPDATE {prefix}sessions SET expires_at = t + INTERVAL (v_timeout * 1000) MICROSECOND,
                   initialize = initialize AND lock_token IS NOT NULL WHERE pk = v_pk;
        END IF;
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
END;

-- Binds: app, sid, token, lock ttl ms. Reply as read: 0 missing / 1 locked / 2 acquired + items.
DROP PROCEDURE IF EXISTS {prefix}acquire;
CREATE PROCEDURE {prefix}acquire(IN p_app VARBINARY(128), IN p_sid VARBINARY(64), IN p_token VARBINARY(16), IN p_ttl_ms BIGINT)
BEGIN
    DECLARE v_pk BIGINT DEFAULT NULL;
    DECLARE v_expires DATETIME(6);
    DECLARE v_timeout BIGINT;
    DECLARE v_token VARBINARY(16);
    DECLARE v_locked DATETIME(6);
    DECLARE v_init BOOLEAN;
    DECLARE v_stoken VARBINARY(16);
    DECLARE v_skind SMALLINT;
    DECLARE v_sfp BIGINT;
    DECLARE t DATETIME(6);
    DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN END;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    SELECT pk, expires_at, timeout_ms, lock_token, locked_at, initialize, settled_token, settled_kind, settled_fp
      INTO v_pk, v_expires, v_timeout, v_token, v_locked, v_init, v_stoken, v_skind, v_sfp
      FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > UTC_TIMESTAMP(6) FOR UPDATE;
    SET t = UTC_TIMESTAMP(6);
    IF v_pk IS NULL THEN
        SELECT CAST(0 AS SIGNED) AS status, CAST(NULL AS BINARY) AS token, CAST(NULL AS SIGNED) AS age_ms, CAST(NULL AS SIGNED) AS timeout_ms, CAST(0 AS SIGNED) AS init, CAST(NULL AS BINARY) AS name, CAST(NULL AS BINARY) AS value;
    ELSEIF v_token IS NOT NULL AND v_token <> p_token AND TIMESTAMPDIFF(MICROSECOND, v_locked, t) DIV 1000 < p_ttl_ms THEN
        UPDATE {prefix}sessions SET expires_at = t + INTERVAL (v_timeout * 1000) MICROSECOND WHERE pk = v_pk;
        SELECT CAST(1 AS SIGNED) AS status, v_token AS token, CAST(GREATEST(0, TIMESTAMPDIFF(MICROSECOND, v_locked, t) DIV 1000) AS SIGNED) AS age_ms, CAST(NULL AS SIGNED) AS timeout_ms, CAST(0 AS SIGNED) AS init, CAST(NULL AS BINARY) AS name, CAST(NULL AS BINARY) AS value;
    ELSE
        -- Ours already (a retried acquire keeps the lock's age), free, or stale and taken over here.
        UPDATE {prefix}sessions SET expires_at = t + INTERVAL (v_timeout * 1000) MICROSECOND,
               locked_at = IF(v_token <=> p_token, v_locked, t), lock_token = p_token, initialize = FALSE
         WHERE pk = v_pk;
        SELECT CAST(2 AS SIGNED) AS status, CAST(NULL AS BINARY) AS token, CAST(NULL AS SIGNED) AS age_ms, CAST(v_timeout AS SIGNED) AS timeout_ms, CAST(v_init AS SIGNED) AS init, CAST(NULL AS BINARY) AS name, CAST(NULL AS BINARY) AS value
        UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, i.name, i.value FROM {prefix}items i WHERE i.session_pk = v_pk;
    END IF;
    COMMIT;
END;

-- Applies a packed delta to a locked session (called inside the caller's transaction):
-- clear, remove, upsert.
DROP PROCEDURE IF EXISTS {prefix}apply_delta;
CREATE PROCEDURE {prefix}apply_delta(IN p_pk BIGINT, IN p_cleared BOOLEAN, IN p_set LONGBLOB, IN p_removed LONGBLOB)
BEGIN
    DECLARE pos BIGINT DEFAULT 1;
    DECLARE len BIGINT;
    DECLARE nm VARBINARY(1024);
    IF p_cleared THEN
        DELETE FROM {prefix}items WHERE session_pk = p_pk;
    END IF;
    WHILE pos <= LENGTH(p_removed) DO
        SET len = CONV(HEX(SUBSTRING(p_removed, pos, 4)), 16, 10);
        DELETE FROM {prefix}items WHERE session_pk = p_pk AND name = SUBSTRING(p_removed, pos + 4, len);
        SET pos = pos + 4 + len;
    END WHILE;
    SET pos = 1;
    WHILE pos <= LENGTH(p_set) DO
        SET len = CONV(HEX(SUBSTRING(p_set, pos, 4)), 16, 10);
        SET nm = SUBSTRING(p_set, pos + 4, len);
        SET pos = pos + 4 + len;
        SET len = CONV(HEX(SUBSTRING(p_set, pos, 4)), 16, 10);
        INSERT INTO {prefix}items (session_pk, name, value) VALUES (p_pk, nm, SUBSTRING(p_set, pos + 4, len))
            ON DUPLICATE KEY UPDATE value = VALUES(value);
        SET pos = pos + 4 + len;
    END WHILE;
END;

-- Binds: app, sid, token, fingerprint, timeout ms, cleared, packed set, packed removed.
-- Reply: status 1 committed (or a retry of the settled commit, not applied again) / 0 lock lost.
DROP PROCEDURE IF EXISTS {prefix}commit;
CREATE PROCEDURE {prefix}commit(IN p_app VARBINARY(128), IN p_sid VARBINARY(64), IN p_token VARBINARY(16), IN p_fp BIGINT, IN p_timeout_ms BIGINT, IN p_cleared BOOLEAN, IN p_set LONGBLOB, IN p_removed LONGBLOB)
BEGIN
    DECLARE v_pk BIGINT DEFAULT NULL;
    DECLARE v_expires DATETIME(6);
    DECLARE v_timeout BIGINT;
    DECLARE v_token VARBINARY(16);
    DECLARE v_locked DATETIME(6);
    DECLARE v_init BOOLEAN;
    DECLARE v_stoken VARBINARY(16);
    DECLARE v_skind SMALLINT;
    DECLARE v_sfp BIGINT;
    DECLARE t DATETIME(6);
    DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN END;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    SELECT pk, expires_at, timeout_ms, lock_token, locked_at, initialize, settled_token, settled_kind, settled_fp
      INTO v_pk, v_expires, v_timeout, v_token, v_locked, v_init, v_stoken, v_skind, v_sfp
      FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > UTC_TIMESTAMP(6) FOR UPDATE;
    SET t = UTC_TIMESTAMP(6);
    IF v_pk IS NOT NULL AND v_token <=> p_token THEN
        CALL {prefix}apply_delta(v_pk, p_cleared, p_set, p_removed);
        UPDATE {prefix}sessions SET timeout_ms = p_timeout_ms,
               expires_at = t + INTERVAL (p_timeout_ms * 1000) MICROSECOND,
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

-- Binds: app, sid, token. Reply: 1 released (or a retry of the settled release) / 0 lock lost.
DROP PROCEDURE IF EXISTS {prefix}release;
CREATE PROCEDURE {prefix}release(IN p_app VARBINARY(128), IN p_sid VARBINARY(64), IN p_token VARBINARY(16))
BEGIN
    DECLARE v_pk BIGINT DEFAULT NULL;
    DECLARE v_expires DATETIME(6);
    DECLARE v_timeout BIGINT;
    DECLARE v_token VARBINARY(16);
    DECLARE v_locked DATETIME(6);
    DECLARE v_init BOOLEAN;
    DECLARE v_stoken VARBINARY(16);
    DECLARE v_skind SMALLINT;
    DECLARE v_sfp BIGINT;
    DECLARE t DATETIME(6);
    DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN END;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    SELECT pk, expires_at, timeout_ms, lock_token, locked_at, initialize, settled_token, settled_kind, settled_fp
      INTO v_pk, v_expires, v_timeout, v_token, v_locked, v_init, v_stoken, v_skind, v_sfp
      FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > UTC_TIMESTAMP(6) FOR UPDATE;
    SET t = UTC_TIMESTAMP(6);
    IF v_pk IS NOT NULL AND v_token <=> p_token THEN
        UPDATE {prefix}sessions SET expires_at = t + INTERVAL (v_timeout * 1000) MICROSECOND,
               lock_token = NULL, locked_at = NULL, settled_token = p_token, settled_kind = 2, settled_fp = NULL
         WHERE pk = v_pk;
        SELECT CAST(1 AS SIGNED) AS status;
    ELSEIF v_pk IS NOT NULL AND v_stoken <=> p_token AND v_skind = 2 THEN
        SELECT CAST(1 AS SIGNED) AS status;
    ELSE
        SELECT CAST(0 AS SIGNED) AS status;
    END IF;
    COMMIT;
END;

-- Insert if absent: a plain INSERT whose duplicate-key error (1062) means "already exists"
-- (never check-then-act, never INSERT IGNORE, which would also swallow truncation). An expired
-- row under the key is deleted first. Binds: app, sid, timeout ms, initialize, packed items.
-- Reply: 1 created / 0 already exists.
DROP PROCEDURE IF EXISTS {prefix}create;
CREATE PROCEDURE {prefix}create(IN p_app VARBINARY(128), IN p_sid VARBINARY(64), IN p_timeout_ms BIGINT, IN p_init BOOLEAN, IN p_set LONGBLOB)
BEGIN
    DECLARE t DATETIME(6) DEFAULT UTC_TIMESTAMP(6);
    DECLARE v_pk BIGINT;
    DECLARE EXIT HANDLER FOR 1062 BEGIN ROLLBACK; SELECT CAST(0 AS SIGNED) AS status; END;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    DELETE FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at <= t;
    INSERT INTO {prefix}sessions (app, sid, expires_at, timeout_ms, initialize, created_at)
    VALUES (p_app, p_sid, t + INTERVAL (p_timeout_ms * 1000) MICROSECOND, p_timeout_ms, p_init, t);
    SET v_pk = LAST_INSERT_ID();
    CALL {prefix}apply_delta(v_pk, FALSE, p_set, '');
    COMMIT;
    SELECT CAST(1 AS SIGNED) AS status;
END;

-- Binds: app, sid, token. Reply: 0 missing / 1 lock lost / 2 removed.
DROP PROCEDURE IF EXISTS {prefix}remove;
CREATE PROCEDURE {prefix}remove(IN p_app VARBINARY(128), IN p_sid VARBINARY(64), IN p_token VARBINARY(16))
BEGIN
    DECLARE v_pk BIGINT DEFAULT NULL;
    DECLARE v_expires DATETIME(6);
    DECLARE v_timeout BIGINT;
    DECLARE v_token VARBINARY(16);
    DECLARE v_locked DATETIME(6);
    DECLARE v_init BOOLEAN;
    DECLARE v_stoken VARBINARY(16);
    DECLARE v_skind SMALLINT;
    DECLARE v_sfp BIGINT;
    DECLARE t DATETIME(6);
    DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN END;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    SELECT pk, expires_at, timeout_ms, lock_token, locked_at, initialize, settled_token, settled_kind, settled_fp
      INTO v_pk, v_expires, v_timeout, v_token, v_locked, v_init, v_stoken, v_skind, v_sfp
      FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > UTC_TIMESTAMP(6) FOR UPDATE;
    SET t = UTC_TIMESTAMP(6);
    IF v_pk IS NULL THEN
        SELECT CAST(0 AS SIGNED) AS status;
    ELSEIF v_token <=> p_token THEN
        DELETE FROM {prefix}sessions WHERE pk = v_pk;
        SELECT CAST(2 AS SIGNED) AS status;
    ELSE
        SELECT CAST(1 AS SIGNED) AS status;
    END IF;
    COMMIT;
END;

-- Binds: app, sid, keep (refresh throttle per mille). Reply: 1 touched / 0 missing.
DROP PROCEDURE IF EXISTS {prefix}touch;
CREATE PROCEDURE {prefix}touch(IN p_app VARBINARY(128), IN p_sid VARBINARY(64), IN p_keep INT)
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
    ELSEIF TIMESTAMPDIFF(MICROSECOND, t, v_expires) > v_timeout * p_keep THEN
        SELECT CAST(1 AS SIGNED) AS status;
    ELSE
        -- One autocommit statement; the condition is re-checked on the row it locks.
        UPDATE {prefix}sessions SET expires_at = UTC_TIMESTAMP(6) + INTERVAL (timeout_ms * 1000) MICROSECOND
         WHERE pk = v_pk AND expires_at > UTC_TIMESTAMP(6);
        SELECT CAST(IF(ROW_COUNT() > 0, 1, 0) AS SIGNED) AS status;
    END IF;
END;

-- Binds: app, sid, timeout ms, cleared, packed set, packed removed. The lock is untouched.
-- Reply: 1 committed / 0 missing.
DROP PROCEDURE IF EXISTS {prefix}write_concurrent;
CREATE PROCEDURE {prefix}write_concurrent(IN p_app VARBINARY(128), IN p_sid VARBINARY(64), IN p_timeout_ms BIGINT, IN p_cleared BOOLEAN, IN p_set LONGBLOB, IN p_removed LONGBLOB)
BEGIN
    DECLARE v_pk BIGINT DEFAULT NULL;
    DECLARE v_expires DATETIME(6);
    DECLARE v_timeout BIGINT;
    DECLARE v_token VARBINARY(16);
    DECLARE v_locked DATETIME(6);
    DECLARE v_init BOOLEAN;
    DECLARE v_stoken VARBINARY(16);
    DECLARE v_skind SMALLINT;
    DECLARE v_sfp BIGINT;
    DECLARE t DATETIME(6);
    DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN END;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    SELECT pk, expires_at, timeout_ms, lock_token, locked_at, initialize, settled_token, settled_kind, settled_fp
      INTO v_pk, v_expires, v_timeout, v_token, v_locked, v_init, v_stoken, v_skind, v_sfp
      FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > UTC_TIMESTAMP(6) FOR UPDATE;
    SET t = UTC_TIMESTAMP(6);
    IF v_pk IS NULL THEN
        SELECT CAST(0 AS SIGNED) AS status;
    ELSE
        CALL {prefix}apply_delta(v_pk, p_cleared, p_set, p_removed);
        UPDATE {prefix}sessions SET timeout_ms = p_timeout_ms,
               expires_at = t + INTERVAL (p_timeout_ms * 1000) MICROSECOND WHERE pk = v_pk;
        SELECT CAST(1 AS SIGNED) AS status;
    END IF;
    COMMIT;
END;

-- Binds: app, sid; regardless of locks. Reply: 1 removed / 0 missing.
DROP PROCEDURE IF EXISTS {prefix}delete;
CREATE PROCEDURE {prefix}delete(IN p_app VARBINARY(128), IN p_sid VARBINARY(64))
BEGIN
    DELETE FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > UTC_TIMESTAMP(6);
    SELECT CAST(IF(ROW_COUNT() > 0, 1, 0) AS SIGNED) AS status;
END;

-- Binds: app, sid, new sid, token. Reply: 0 lock lost / 1 new id taken / 2 changed.
DROP PROCEDURE IF EXISTS {prefix}change_id;
CREATE PROCEDURE {prefix}change_id(IN p_app VARBINARY(128), IN p_sid VARBINARY(64), IN p_new_sid VARBINARY(64), IN p_token VARBINARY(16))
BEGIN
    DECLARE v_pk BIGINT DEFAULT NULL;
    DECLARE v_token VARBINARY(16);
    DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN END;
    DECLARE EXIT HANDLER FOR 1062 BEGIN ROLLBACK; SELECT CAST(1 AS SIGNED) AS status; END;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    SELECT pk, lock_token INTO v_pk, v_token FROM {prefix}sessions
     WHERE app = p_app AND sid = p_sid AND expires_at > UTC_TIMESTAMP(6) FOR UPDATE;
    IF v_pk IS NULL OR NOT (v_token <=> p_token) THEN
        ROLLBACK;
        SELECT CAST(0 AS SIGNED) AS status;
    ELSE
        DELETE FROM {prefix}sessions WHERE app = p_app AND sid = p_new_sid AND expires_at <= UTC_TIMESTAMP(6);
        UPDATE {prefix}sessions SET sid = p_new_sid WHERE pk = v_pk;
        COMMIT;
        SELECT CAST(2 AS SIGNED) AS status;
    END IF;
END;

-- Deletes up to p_batch expired sessions, oldest expiry first on the expiry index, items by
-- cascade. GET_LOCK (without waiting) makes purgers of this prefix run one at a time across
-- processes; a purger that finds another running reports 0. The
-- candidates come from a consistent (non-locking, READ COMMITTED) read of the expiry index and are
-- deleted by primary key with the expiry re-checked, so the purge never locks index records of
-- live sessions that live traffic is updating. Should InnoDB still pick it as a deadlock victim,
-- the batch is retried (up to 5 times). Binds: batch size. Reply: the count.
DROP PROCEDURE IF EXISTS {prefix}purge;
CREATE PROCEDURE {prefix}purge(IN p_batch BIGINT)
BEGIN
    DECLARE n BIGINT DEFAULT 0;
    DECLARE tries INT DEFAULT 0;
    DECLARE deadlocked BOOLEAN DEFAULT TRUE;
    DECLARE t DATETIME(6);
    DECLARE lock_name VARCHAR(64) DEFAULT CONCAT('bsql', SHA1(CONCAT(DATABASE(), '.{prefix}purge')));
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; DO RELEASE_LOCK(lock_name); RESIGNAL; END;
    -- Never waits: while another process purges, this one reports 0 and its sweeper moves on,
    -- instead of holding a pool connection for the other's whole run.
    IF GET_LOCK(lock_name, 0) = 1 THEN
        WHILE deadlocked AND tries < 5 DO
            SET tries = tries + 1;
            SET deadlocked = FALSE;
            BEGIN
                DECLARE CONTINUE HANDLER FOR 1213 SET deadlocked = TRUE;
                SET t = UTC_TIMESTAMP(6);
                SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
                START TRANSACTION;
                DELETE FROM {prefix}sessions
                 WHERE pk IN (SELECT pk FROM (SELECT pk FROM {prefix}sessions WHERE expires_at <= t
                                              ORDER BY expires_at LIMIT p_batch) AS candidates)
                   AND expires_at <= t;
                IF deadlocked THEN
                    ROLLBACK;
                    SET n = 0;
                ELSE
                    SET n = ROW_COUNT();
                    COMMIT;
                END IF;
            END;
        END WHILE;
        DO RELEASE_LOCK(lock_name);
    END IF;
    SELECT CAST(n AS SIGNED) AS status;
END;
