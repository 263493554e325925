CREATE TABLE datasets (
    id serial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    pii_level text NOT NULL DEFAULT 'low' CHECK (pii_level IN ('none', 'low', 'high')),
    created_at timestamptz NOT NULL DEFAULT now()
);
