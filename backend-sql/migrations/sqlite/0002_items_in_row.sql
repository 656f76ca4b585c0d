-- 0002: a session's items move into its own row, packed into one BLOB (`items`), so that a read
-- is ONE row (0001: the session row, then one row per item). Keeps every session.
--
-- The packing: for each item, its name's length as 4 bytes big-endian, the name, its value's
-- length the same way, the value (src/sqlite/mod.rs `pack`, `unpack`). A commit still takes only
-- the delta: the store merges it into the blob inside the operation's write transaction
-- (docs/contract.md §2; SQLite runs in process, so the merge costs no round trip).

ALTER TABLE {prefix}sessions ADD COLUMN items BLOB NOT NULL DEFAULT x'';

-- Existing sessions keep their items (the migration runs inside one write transaction).
UPDATE {prefix}sessions
   SET items = (SELECT unhex(group_concat(
                           printf('%08X', length(CAST(i.name AS BLOB))) || hex(i.name)
                        || printf('%08X', length(CAST(i.value AS BLOB))) || hex(i.value), ''))
                  FROM {prefix}items i WHERE i.session_pk = {prefix}sessions.pk)
 WHERE pk IN (SELECT session_pk FROM {prefix}items);

DROP TABLE IF EXISTS {prefix}items;
