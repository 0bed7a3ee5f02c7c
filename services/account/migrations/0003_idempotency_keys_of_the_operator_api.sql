CREATE TABLE idempotency_keys (
    key_hash text PRIMARY KEY,
    fingerprint text NOT NULL,
    -- The answer, sealed; NULL while the first request runs.
    sealed bytea,
    expires_at timestamptz NOT NULL
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
