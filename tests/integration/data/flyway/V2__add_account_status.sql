-- Accounts get a status; existing ones are active.
ALTER TABLE accounts ADD COLUMN status text NOT NULL DEFAULT 'active';
CREATE INDEX accounts_status_idx ON accounts (status);
