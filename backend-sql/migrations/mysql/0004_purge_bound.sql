-- 0004: the purge is bounded by what expired (issue 15).
--
-- 0001's purge read its candidates (the first p_batch by expiry) and then deleted
-- `WHERE pk IN (candidates) AND expires_at <= t`: MariaDB ran that DELETE as a range scan of EVERY
-- expired session, testing each against the candidates, so a batch of 100 out of 20,000 expired
-- sessions read 20,000 index entries, and purging M expired sessions cost O(M^2 / batch).
--
-- Now one statement deletes the first p_batch sessions by expiry, up to ONE bound `t` (the
-- database clock, read once per call). The candidates are a range scan of the expiry index from its
-- start to `t`, index only, stopped after p_batch entries: the index is named (FORCE INDEX) because
-- right after a batch the optimizer counts the delete-marked entries InnoDB has not purged yet and
-- may prefer a full scan of the index or the table, which reads every live session when fewer than
-- p_batch expired (measured: 2,020 rows read to find none). They are materialised (a derived table
-- with a LIMIT), read without locks, and joined to the table by primary key; the DELETE locks each
-- candidate and re-checks `expires_at <= t` on its latest version, so a session slid since is not
-- deleted. So a call reads as many index entries as it deletes sessions, and a call that finds
-- nothing expired reads none past the first. Items go by the foreign key's cascade, in the same
-- statement. One runner at a time per prefix (GET_LOCK without waiting), and a batch picked as a
-- deadlock victim is tried again, up to 5 times, as before.
--
-- Binds: batch size. Reply: how many sessions it deleted (0 while another purger runs).
DROP PROCEDURE IF EXISTS {prefix}purge;
CREATE PROCEDURE {prefix}purge(IN p_batch BIGINT)
BEGIN
    DECLARE n BIGINT DEFAULT 0;
    DECLARE tries INT DEFAULT 0;
    DECLARE deadlocked BOOLEAN DEFAULT TRUE;
    DECLARE t DATETIME(6) DEFAULT UTC_TIMESTAMP(6);
    DECLARE lock_name VARCHAR(64) DEFAULT CONCAT('bsql', SHA1(CONCAT(DATABASE(), '.{prefix}purge')));
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; DO RELEASE_LOCK(lock_name); RESIGNAL; END;
    IF GET_LOCK(lock_name, 0) = 1 THEN
        WHILE deadlocked AND tries < 5 DO
            SET tries = tries + 1;
            SET deadlocked = FALSE;
            BEGIN
                DECLARE CONTINUE HANDLER FOR 1213 SET deadlocked = TRUE;
                SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
                START TRANSACTION;
                DELETE s FROM {prefix}sessions s
                  JOIN (SELECT pk FROM {prefix}sessions FORCE INDEX ({prefix}sessions_expires)
                         WHERE expires_at <= t ORDER BY expires_at LIMIT p_batch) c USING (pk)
                 WHERE s.expires_at <= t;
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
