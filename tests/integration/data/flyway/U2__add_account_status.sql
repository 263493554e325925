DROP INDEX accounts_status_idx;
ALTER TABLE accounts DROP COLUMN status;
