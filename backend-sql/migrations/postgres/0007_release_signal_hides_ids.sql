-- 0007: the release signal no longer carries the session's id.
--
-- Since 0003 a lock's end sent pg_notify('{prefix}release', hex(app) || ':' || hex(sid)). Postgres
-- has no privilege on LISTEN: any role that can connect to this database could learn the whole id
-- of every session as it was used, and an id is all a cookie needs (docs/security.md). The payload
-- is now the SHA-256 of the session's key, length(app) as 4 big-endian bytes, then app, then sid
-- (unambiguous whatever the bytes), in hex: a waiter, who knows the key, computes the same value;
-- a listener learns nothing it can use. sha256(bytea) is Postgres 11 and later.

CREATE OR REPLACE FUNCTION {prefix}released(p_app BYTEA, p_sid BYTEA)
RETURNS VOID LANGUAGE sql AS $$
    SELECT pg_notify('{prefix}release',
                     encode(sha256(int4send(length(p_app)) || p_app || p_sid), 'hex'));
$$;
