-- A release records nothing (docs/contract.md §2, "Repeated calls"): the settled record is the
-- session's last successful commit, written by {prefix}commit (0001) and replaced only by the next
-- commit; acquire and release leave it. A repeat of a release whose reply was lost finds its lock
-- gone and gets 0 (lock lost), which the retry layer reads as released. Since this migration
-- settled_kind is always 1 (commit); rows released under 0001 may still hold kind 2, which no
-- commit matches. The columns stay: an upgrade loses nothing.
--
-- One statement: the row lock the UPDATE takes, and its re-check of the WHERE clause on the
-- latest row version under READ COMMITTED, make it atomic.
-- Binds: app, sid, token. Reply: 1 released / 0 lock lost.
CREATE OR REPLACE FUNCTION {prefix}release(p_app BYTEA, p_sid BYTEA, p_token BYTEA)
RETURNS INT LANGUAGE plpgsql AS $$
BEGIN
    UPDATE {prefix}sessions
       SET expires_at = clock_timestamp() + timeout_ms * INTERVAL '1 millisecond',
           lock_token = NULL, locked_at = NULL
     WHERE app = p_app AND sid = p_sid AND lock_token = p_token AND expires_at > clock_timestamp();
    RETURN CASE WHEN FOUND THEN 1 ELSE 0 END;
END $$;
