CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    account_id bigint REFERENCES accounts (id),
    note text,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION audit_note(n text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN 'audit: ' || n; -- a semicolon inside a dollar-quoted body
END
$$;
