-- Versions of the tasks and the API keys; see ../sqlite/0018_catalog_versions.sql.
CREATE TABLE catalog_versions (
    name    TEXT   COLLATE "C" NOT NULL PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO catalog_versions (name, version) VALUES ('tasks', 1), ('keys', 1);
