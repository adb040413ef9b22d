-- Versions of what every node keeps a copy of: the tasks (their pins decide the claims,
-- their policies the drops) and the API keys. Each transaction that writes the tasks or the
-- keys bumps its row first (so on PostgreSQL the row is also the first lock it takes), and a
-- node's membership tick reads both versions with its heartbeat: it reads the tasks or the
-- keys again only when their version moved, instead of every tick.
-- Keep in step with ../postgres/0018_catalog_versions.sql.
CREATE TABLE catalog_versions (
    name    TEXT    NOT NULL PRIMARY KEY,
    version INTEGER NOT NULL
) STRICT;
INSERT INTO catalog_versions (name, version) VALUES ('tasks', 1), ('keys', 1);
