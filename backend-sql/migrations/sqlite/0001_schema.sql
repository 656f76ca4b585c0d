-- backend-sql schema, SQLite. `{prefix}` is the validated table prefix.
-- Times are milliseconds since the Unix epoch on the database clock (julianday('now')).
-- Names, ids and values are BLOBs: compared byte for byte, stored verbatim (NUL included).
CREATE TABLE IF NOT EXISTS {prefix}sessions (
    -- AUTOINCREMENT: a pk is never reused, so items can never attach to a later session.
    pk            INTEGER PRIMARY KEY AUTOINCREMENT,
    app           BLOB    NOT NULL,
    sid           BLOB    NOT NULL,
    expires_at    INTEGER NOT NULL,
    timeout_ms    INTEGER NOT NULL,
    lock_token    BLOB,
    locked_at     INTEGER,
    initialize    INTEGER NOT NULL,
    -- How the last lock ended (token, 1 = commit / 2 = release, delta fingerprint): recognises
    -- a retried commit or release.
    settled_token BLOB,
    settled_kind  INTEGER,
    settled_fp    INTEGER,
    created_at    INTEGER NOT NULL,
    UNIQUE (app, sid)
);
-- The purge walks this index, oldest expiry first.
CREATE INDEX IF NOT EXISTS {prefix}sessions_expires ON {prefix}sessions (expires_at);
CREATE TABLE IF NOT EXISTS {prefix}items (
    session_pk INTEGER NOT NULL REFERENCES {prefix}sessions (pk) ON DELETE CASCADE,
    name       BLOB    NOT NULL,
    value      BLOB    NOT NULL,
    PRIMARY KEY (session_pk, name)
) WITHOUT ROWID;
