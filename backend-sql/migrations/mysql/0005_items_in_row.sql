-- 0005: a session's items move into its own row, packed into one LONGBLOB (`items`), as SQLite
-- 0002 did: a read is ONE row (0001: the session row joined to a row per item), a commit writes
-- one row, and the purge deletes one row per session (0004 deleted its items by the foreign key's
-- cascade: 70 % of a purge's time with 10 items per session). Keeps every session and its items.
--
-- The packing, as the deltas already travel: for each item, its name's length as 4 bytes
-- big-endian, the name, its value's length the same way, the value (src/mysql/mod.rs `pack`;
-- read back by src/dialect.rs `unpack`). NULL holds no items, like ''. A commit still sends only
-- the delta: `merge_items` applies it to the blob inside the operation's transaction, in the
-- server (docs/contract.md §2: cleared first, then removed, then set).
--
-- Replaced: read, acquire (the items are the row's `items` column), create, commit,
-- write_concurrent (the merged blob is written by the same UPDATE as the rest of the row);
-- apply_delta is dropped for merge_items. Reply rows of read and acquire:
-- (status, token, age_ms, timeout_ms, init, items), one per result set.

ALTER TABLE {prefix}sessions ADD COLUMN items LONGBLOB NULL;

-- Existing sessions keep their items. GROUP_CONCAT stops at group_concat_max_len (1 MB by
-- default): raised for this connection (the migration's own), then set back.
SET SESSION group_concat_max_len = 4294967295;
UPDATE {prefix}sessions s
  JOIN (SELECT session_pk,
               GROUP_CONCAT(CONCAT(UNHEX(LPAD(HEX(LENGTH(name)), 8, '0')), name,
                                   UNHEX(LPAD(HEX(LENGTH(value)), 8, '0')), value)
                            ORDER BY name SEPARATOR '') AS packed
          FROM {prefix}items GROUP BY session_pk) i ON i.session_pk = s.pk
   SET s.items = i.packed;
SET SESSION group_concat_max_len = DEFAULT;

-- Every session's blob holds every byte of its items before their table goes (GROUP_CONCAT and
-- CONCAT give up past max_allowed_packet with a mere warning): otherwise the migration fails
-- here, with the items table intact.
DROP PROCEDURE IF EXISTS {prefix}check_items_moved;
CREATE PROCEDURE {prefix}check_items_moved()
BEGIN
    IF EXISTS (SELECT 1 FROM {prefix}sessions s
                 JOIN (SELECT session_pk, SUM(8 + LENGTH(name) + LENGTH(value)) AS bytes
                         FROM {prefix}items GROUP BY session_pk) i ON i.session_pk = s.pk
                WHERE COALESCE(LENGTH(s.items), 0) <> i.bytes) THEN
        SIGNAL SQLSTATE '45000'
            SET MESSAGE_TEXT = 'migration 0005: the items of a session do not fit max_allowed_packet; raise it and connect again';
    END IF;
END;
CALL {prefix}check_items_moved();
DROP PROCEDURE {prefix}check_items_moved;

DROP TABLE IF EXISTS {prefix}items;
DROP PROCEDURE IF EXISTS {prefix}apply_delta;

-- `p_items` after a delta: the items neither removed nor set (runs of them copied whole), then the
-- set ones (`p_set` is packed the same way: name, value, ...). Called inside the caller's
-- transaction, on the row it locked. The delta's names are gathered first, each in hex between
-- commas, so that one LOCATE tells whether an item is among them (hex digits and commas cannot
-- run into one another): a pass over the items costs a few statements per item. A blob that does
-- not split into items is copied through as far as it goes (the reads report such a row as
-- corrupt before a commit can reach it).
DROP PROCEDURE IF EXISTS {prefix}merge_items;
CREATE PROCEDURE {prefix}merge_items(IN p_items LONGBLOB, IN p_cleared BOOLEAN, IN p_set LONGBLOB, IN p_removed LONGBLOB, OUT p_out LONGBLOB)
BEGIN
    DECLARE pos BIGINT DEFAULT 1;
    DECLARE run BIGINT DEFAULT 1;
    DECLARE total BIGINT DEFAULT 0;
    DECLARE nlen BIGINT;
    DECLARE len BIGINT;
    DECLARE v_names LONGBLOB DEFAULT ',';
    WHILE pos <= LENGTH(p_removed) DO
        SET len = CONV(HEX(SUBSTRING(p_removed, pos, 4)), 16, 10);
        SET v_names = CONCAT(v_names, HEX(SUBSTRING(p_removed, pos + 4, len)), ',');
        SET pos = pos + 4 + len;
    END WHILE;
    SET pos = 1;
    WHILE pos <= LENGTH(p_set) DO
        SET len = CONV(HEX(SUBSTRING(p_set, pos, 4)), 16, 10);
        SET v_names = CONCAT(v_names, HEX(SUBSTRING(p_set, pos + 4, len)), ',');
        SET pos = pos + 4 + len;
        SET pos = pos + 4 + CONV(HEX(SUBSTRING(p_set, pos, 4)), 16, 10);
    END WHILE;
    IF NOT COALESCE(p_cleared, FALSE) AND p_items IS NOT NULL THEN
        SET total = LENGTH(p_items);
    END IF;
    SET p_out = '';
    SET pos = 1;
    IF v_names = ',' THEN
        -- Nothing replaced or removed: every item stays.
        SET pos = total + 1;
    END IF;
    WHILE pos <= total DO
        SET nlen = CONV(HEX(SUBSTRING(p_items, pos, 4)), 16, 10);
        SET len = 8 + nlen + CONV(HEX(SUBSTRING(p_items, pos + 4 + nlen, 4)), 16, 10);
        IF LOCATE(CONCAT(',', HEX(SUBSTRING(p_items, pos + 4, nlen)), ','), v_names) > 0 THEN
            SET p_out = CONCAT(p_out, SUBSTRING(p_items, run, pos - run));
            SET run = pos + len;
        END IF;
        SET pos = pos + len;
    END WHILE;
    IF total > 0 THEN
        SET p_out = CONCAT(p_out, SUBSTRING(p_items, run));
    END IF;
    SET p_out = CONCAT(p_out, COALESCE(p_set, ''));
    -- CONCAT answers NULL (with a mere warning) past max_allowed_packet: that must never be
    -- written as "no items".
    IF p_out IS NULL THEN
        SIGNAL SQLSTATE '45000'
            SET MESSAGE_TEXT = 'the items of the session would exceed max_allowed_packet: nothing written';
    END IF;
END;

-- Binds: app, sid, window percent (0003). The fast path's row, or the locking path's.
DROP PROCEDURE IF EXISTS {prefix}read;
CREATE PROCEDURE {prefix}read(IN p_app VARBINARY(128), IN p_sid VARBINARY(64), IN p_pct INT)
BEGIN
    DECLARE v_pk BIGINT DEFAULT NULL;
    DECLARE v_expires DATETIME(6);
    DECLARE v_timeout BIGINT;
    DECLARE v_token VARBINARY(16);
    DECLARE v_locked DATETIME(6);
    DECLARE v_init BOOLEAN;
    DECLARE v_items LONGBLOB;
    DECLARE t DATETIME(6);
    DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN END;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SELECT CAST(IF(s.lock_token IS NULL, 2, 1) AS SIGNED) AS status, s.lock_token AS token,
           CAST(IF(s.lock_token IS NULL, NULL,
                   GREATEST(0, TIMESTAMPDIFF(MICROSECOND, s.locked_at, UTC_TIMESTAMP(6)) DIV 1000)) AS SIGNED) AS age_ms,
           CAST(IF(s.lock_token IS NULL, s.timeout_ms, NULL) AS SIGNED) AS timeout_ms,
           CAST(0 AS SIGNED) AS init, IF(s.lock_token IS NULL, s.items, NULL) AS items
      FROM {prefix}sessions s
     WHERE s.app = p_app AND s.sid = p_sid AND p_pct > 0
       AND s.expires_at >= UTC_TIMESTAMP(6) + INTERVAL (s.timeout_ms * 1000) MICROSECOND
       AND NOT (s.initialize AND s.lock_token IS NULL);
    IF FOUND_ROWS() = 0 THEN
        SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
        START TRANSACTION;
        SELECT pk, expires_at, timeout_ms, lock_token, locked_at, initialize, items
          INTO v_pk, v_expires, v_timeout, v_token, v_locked, v_init, v_items
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
            SELECT CAST(0 AS SIGNED) AS status, CAST(NULL AS BINARY) AS token, CAST(NULL AS SIGNED) AS age_ms, CAST(NULL AS SIGNED) AS timeout_ms, CAST(0 AS SIGNED) AS init, CAST(NULL AS BINARY) AS items;
        ELSEIF v_token IS NOT NULL THEN
            SELECT CAST(1 AS SIGNED) AS status, v_token AS token, CAST(GREATEST(0, TIMESTAMPDIFF(MICROSECOND, v_locked, t) DIV 1000) AS SIGNED) AS age_ms, CAST(NULL AS SIGNED) AS timeout_ms, CAST(0 AS SIGNED) AS init, CAST(NULL AS BINARY) AS items;
        ELSE
            SELECT CAST(2 AS SIGNED) AS status, CAST(NULL AS BINARY) AS token, CAST(NULL AS SIGNED) AS age_ms, CAST(v_timeout AS SIGNED) AS timeout_ms, CAST(v_init AS SIGNED) AS init, v_items AS items;
        END IF;
        COMMIT;
    END IF;
END;

-- Binds: app, sid, token, lock ttl ms, window percent (0003). Reply as read's: 0 missing /
-- 1 locked / 2 acquired with the items.
DROP PROCEDURE IF EXISTS {prefix}acquire;
CREATE PROCEDURE {prefix}acquire(IN p_app VARBINARY(128), IN p_sid VARBINARY(64), IN p_token VARBINARY(16), IN p_ttl_ms BIGINT, IN p_pct INT)
BEGIN
    DECLARE v_pk BIGINT DEFAULT NULL;
    DECLARE v_expires DATETIME(6);
    DECLARE v_timeout BIGINT;
    DECLARE v_token VARBINARY(16);
    DECLARE v_locked DATETIME(6);
    DECLARE v_init BOOLEAN;
    DECLARE v_items LONGBLOB;
    DECLARE t DATETIME(6);
    DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN END;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    -- Locked by another, fresh, no slide due: answered by a plain SELECT (waiters poll with this).
    SELECT CAST(1 AS SIGNED) AS status, s.lock_token AS token,
           CAST(GREATEST(0, TIMESTAMPDIFF(MICROSECOND, s.locked_at, UTC_TIMESTAMP(6)) DIV 1000) AS SIGNED) AS age_ms,
           CAST(NULL AS SIGNED) AS timeout_ms, CAST(0 AS SIGNED) AS init, CAST(NULL AS BINARY) AS items
      FROM {prefix}sessions s
     WHERE s.app = p_app AND s.sid = p_sid AND p_pct > 0
       AND s.expires_at >= UTC_TIMESTAMP(6) + INTERVAL (s.timeout_ms * 1000) MICROSECOND
       AND s.lock_token IS NOT NULL AND s.lock_token <> p_token
       AND TIMESTAMPDIFF(MICROSECOND, s.locked_at, UTC_TIMESTAMP(6)) DIV 1000 < p_ttl_ms;
    IF FOUND_ROWS() = 0 THEN
        SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
        START TRANSACTION;
        SELECT pk, expires_at, timeout_ms, lock_token, locked_at, initialize, items
          INTO v_pk, v_expires, v_timeout, v_token, v_locked, v_init, v_items
          FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > UTC_TIMESTAMP(6) FOR UPDATE;
        SET t = UTC_TIMESTAMP(6);
        IF v_pk IS NULL THEN
            SELECT CAST(0 AS SIGNED) AS status, CAST(NULL AS BINARY) AS token, CAST(NULL AS SIGNED) AS age_ms, CAST(NULL AS SIGNED) AS timeout_ms, CAST(0 AS SIGNED) AS init, CAST(NULL AS BINARY) AS items;
        ELSEIF v_token IS NOT NULL AND v_token <> p_token AND TIMESTAMPDIFF(MICROSECOND, v_locked, t) DIV 1000 < p_ttl_ms THEN
            IF p_pct = 0 OR v_expires < t + INTERVAL (v_timeout * 1000) MICROSECOND THEN
                UPDATE {prefix}sessions
                   SET expires_at = t + INTERVAL ((v_timeout + (v_timeout * p_pct) DIV 100) * 1000) MICROSECOND
                 WHERE pk = v_pk;
            END IF;
            SELECT CAST(1 AS SIGNED) AS status, v_token AS token, CAST(GREATEST(0, TIMESTAMPDIFF(MICROSECOND, v_locked, t) DIV 1000) AS SIGNED) AS age_ms, CAST(NULL AS SIGNED) AS timeout_ms, CAST(0 AS SIGNED) AS init, CAST(NULL AS BINARY) AS items;
        ELSE
            -- Ours already (a retried acquire keeps the lock's age), free, or stale and taken over here.
            UPDATE {prefix}sessions
               SET expires_at = IF(p_pct = 0 OR v_expires < t + INTERVAL (v_timeout * 1000) MICROSECOND,
                                   t + INTERVAL ((v_timeout + (v_timeout * p_pct) DIV 100) * 1000) MICROSECOND,
                                   v_expires),
                   locked_at = IF(v_token <=> p_token, v_locked, t), lock_token = p_token, initialize = FALSE
             WHERE pk = v_pk;
            SELECT CAST(2 AS SIGNED) AS status, CAST(NULL AS BINARY) AS token, CAST(NULL AS SIGNED) AS age_ms, CAST(v_timeout AS SIGNED) AS timeout_ms, CAST(v_init AS SIGNED) AS init, v_items AS items;
        END IF;
        COMMIT;
    END IF;
END;

-- Binds: app, sid, token, fingerprint, timeout ms, window percent, cleared, packed set, packed
-- removed (0003). Reply: status 1 committed (or a retry of the settled commit, not applied
-- again) / 0 lock lost.
DROP PROCEDURE IF EXISTS {prefix}commit;
CREATE PROCEDURE {prefix}commit(IN p_app VARBINARY(128), IN p_sid VARBINARY(64), IN p_token VARBINARY(16), IN p_fp BIGINT, IN p_timeout_ms BIGINT, IN p_pct INT, IN p_cleared BOOLEAN, IN p_set LONGBLOB, IN p_removed LONGBLOB)
BEGIN
    DECLARE v_pk BIGINT DEFAULT NULL;
    DECLARE v_token VARBINARY(16);
    DECLARE v_stoken VARBINARY(16);
    DECLARE v_skind SMALLINT;
    DECLARE v_sfp BIGINT;
    DECLARE v_items LONGBLOB;
    DECLARE v_merged LONGBLOB;
    DECLARE t DATETIME(6);
    DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN END;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    SELECT pk, lock_token, settled_token, settled_kind, settled_fp, items
      INTO v_pk, v_token, v_stoken, v_skind, v_sfp, v_items
      FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > UTC_TIMESTAMP(6) FOR UPDATE;
    SET t = UTC_TIMESTAMP(6);
    IF v_pk IS NOT NULL AND v_token <=> p_token THEN
        CALL {prefix}merge_items(v_items, p_cleared, p_set, p_removed, v_merged);
        UPDATE {prefix}sessions SET items = v_merged, timeout_ms = p_timeout_ms,
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

-- Insert if absent (0003), the items in the same INSERT. Binds: app, sid, timeout ms, window
-- percent, initialize, packed items. Reply: 1 created / 0 already exists.
DROP PROCEDURE IF EXISTS {prefix}create;
CREATE PROCEDURE {prefix}create(IN p_app VARBINARY(128), IN p_sid VARBINARY(64), IN p_timeout_ms BIGINT, IN p_pct INT, IN p_init BOOLEAN, IN p_set LONGBLOB)
BEGIN
    DECLARE t DATETIME(6) DEFAULT UTC_TIMESTAMP(6);
    DECLARE EXIT HANDLER FOR 1062 BEGIN ROLLBACK; SELECT CAST(0 AS SIGNED) AS status; END;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    DELETE FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at <= t;
    INSERT INTO {prefix}sessions (app, sid, expires_at, timeout_ms, initialize, created_at, items)
    VALUES (p_app, p_sid, t + INTERVAL ((p_timeout_ms + (p_timeout_ms * p_pct) DIV 100) * 1000) MICROSECOND,
            p_timeout_ms, p_init, t, p_set);
    COMMIT;
    SELECT CAST(1 AS SIGNED) AS status;
END;

-- Binds: app, sid, timeout ms, window percent, cleared, packed set, packed removed (0003). The
-- lock is untouched. Reply: 1 committed / 0 missing.
DROP PROCEDURE IF EXISTS {prefix}write_concurrent;
CREATE PROCEDURE {prefix}write_concurrent(IN p_app VARBINARY(128), IN p_sid VARBINARY(64), IN p_timeout_ms BIGINT, IN p_pct INT, IN p_cleared BOOLEAN, IN p_set LONGBLOB, IN p_removed LONGBLOB)
BEGIN
    DECLARE v_pk BIGINT DEFAULT NULL;
    DECLARE v_items LONGBLOB;
    DECLARE v_merged LONGBLOB;
    DECLARE t DATETIME(6);
    DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN END;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    SELECT pk, items INTO v_pk, v_items
      FROM {prefix}sessions WHERE app = p_app AND sid = p_sid AND expires_at > UTC_TIMESTAMP(6) FOR UPDATE;
    SET t = UTC_TIMESTAMP(6);
    IF v_pk IS NULL THEN
        SELECT CAST(0 AS SIGNED) AS status;
    ELSE
        CALL {prefix}merge_items(v_items, p_cleared, p_set, p_removed, v_merged);
        UPDATE {prefix}sessions SET items = v_merged, timeout_ms = p_timeout_ms,
               expires_at = t + INTERVAL ((p_timeout_ms + (p_timeout_ms * p_pct) DIV 100) * 1000) MICROSECOND
         WHERE pk = v_pk;
        SELECT CAST(1 AS SIGNED) AS status;
    END IF;
    COMMIT;
END;
