-- Versioned deploys (issue 17): every upload of new code under a component's name stores a
-- new version. `components.version` is the current one (new calls run it), whose digest, size
-- and upload time the `components` row copies; `latest_version` is the highest number given
-- so far (a number is never given twice, even after a deletion). The bytes of every version
-- live in `component_versions`. An invocation is bound to the version current at its first
-- claim (`invocations.component_version`); its retries and its re-run after a crash keep it,
-- and each task instance records the version it ran. A version is deleted only when it is
-- not current and no unfinished invocation is bound to it.
CREATE TABLE component_versions (
    component   TEXT    NOT NULL REFERENCES components (name) ON DELETE CASCADE,
    version     BIGINT NOT NULL,
    digest      TEXT    NOT NULL,
    size_bytes  BIGINT NOT NULL,
    bytes       BYTEA   NOT NULL,
    uploaded_at BIGINT NOT NULL,
    PRIMARY KEY (component, version)
);
INSERT INTO component_versions (component, version, digest, size_bytes, bytes, uploaded_at)
    SELECT name, 1, digest, size_bytes, bytes, uploaded_at FROM components;
ALTER TABLE components ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE components ADD COLUMN latest_version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE components DROP COLUMN bytes;
ALTER TABLE invocations ADD COLUMN component_version BIGINT;
ALTER TABLE task_instances ADD COLUMN component_version BIGINT;
