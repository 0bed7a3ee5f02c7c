CREATE TABLE issuer_keys (
    issuer_id text PRIMARY KEY,
    sealed_key bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE users (
    id text PRIMARY KEY,
    issuer_id text NOT NULL,
    region text NOT NULL,
    email_index bytea NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'active')),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (issuer_id, email_index)
);
