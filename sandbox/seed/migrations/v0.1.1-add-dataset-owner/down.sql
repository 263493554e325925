DROP INDEX datasets_owner_idx;
ALTER TABLE datasets DROP COLUMN owner;
