-- Claims handed back before they started; see ../sqlite/0017_unstarted_claims.sql.
ALTER TABLE invocations ADD COLUMN unstarted BIGINT NOT NULL DEFAULT 0;
