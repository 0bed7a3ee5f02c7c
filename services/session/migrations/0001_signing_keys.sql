CREATE TABLE keys (
    kid text PRIMARY KEY,
    issuer_id text NOT NULL,
    sealed_secret bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz
);
CREATE INDEX keys_by_issuer ON keys (issuer_id, created_at DESC);
