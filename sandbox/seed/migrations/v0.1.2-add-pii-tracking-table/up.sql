CREATE TABLE pii_access_tracking (
    id bigserial PRIMARY KEY,
    dataset_id integer NOT NULL REFERENCES datasets (id),
    accessed_by text NOT NULL,
    accessed_at timestamptz NOT NULL DEFAULT now()
);
