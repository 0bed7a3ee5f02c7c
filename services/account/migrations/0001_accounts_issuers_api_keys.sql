CREATE TABLE accounts (
    id text PRIMARY KEY,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE issuers (
    id text PRIMARY KEY,
    account_id text NOT NULL REFERENCES accounts(id),
    name text NOT NULL,
    mode text NOT NULL CHECK (mode IN ('live', 'test')),
    allowed_origins jsonb NOT NULL DEFAULT '[]'::jsonb,
    policy jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX issuers_by_account ON issuers (account_id);
CREATE TABLE api_keys (
    id text PRIMARY KEY,
    issuer_id text NOT NULL REFERENCES issuers(id),
    kind text NOT NULL CHECK (kind IN ('secret', 'restricted')),
    mode text NOT NULL CHECK (mode IN ('live', 'test')),
    name text NOT NULL,
    key_hash text NOT NULL UNIQUE,
    hint text NOT NULL,
    scopes jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX api_keys_by_issuer ON api_keys (issuer_id);
