-- A release records nothing (docs/contract.md §2, "Repeated calls"): the settled record is the
-- session's last successful commit, written by {prefix}commit (0001) and replaced only by the next
-- commit; acquire and release leave it. A repeat of a release whose reply was lost finds its lock
-- gone and gets 0 (lock lost), which the retry layer reads as released. Since this migration
-- settled_kind is always 1 (commit); rows released under 0001 may still hold kind 2, which no
-- commit matches. The columns stay: an upgrade loses nothing.
--
-- One autocommit statement: InnoDB locks the row and checks the WHERE clause on its latest
-- version. ROW_COUNT() is 1 exactly when it matched (it always changes lock_token).
-- Binds: app, sid, token. Reply: 1 released / 0 lock lost.
DROP PROCEDURE IF EXISTS {prefix}release;
CREATE PROCEDURE {prefix}release(IN p_app VARBINARY(128), IN p_sid VARBINARY(64), IN p_token VARBINARY(16))
BEGIN
    UPDATE {prefix}sessions SET expires_at = UTC_TIMESTAMP(6) + INTERVAL (timeout_ms * 1000) MICROSECOND,
           lock_token = NULL, locked_at = NULL
     WHERE app = p_app AND sid = p_sid AND lock_token = p_token AND expires_at > UTC_TIMESTAMP(6);
    SELECT CAST(IF(ROW_COUNT() > 0, 1, 0) AS SIGNED) AS status;
END;
