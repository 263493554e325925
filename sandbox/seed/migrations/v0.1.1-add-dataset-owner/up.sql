ALTER TABLE datasets ADD COLUMN owner text NOT NULL DEFAULT 'unassigned';
CREATE INDEX datasets_owner_idx ON datasets (owner);
