CREATE TABLE failure_ledger (
    issuer_id text NOT NULL,
    budget text NOT NULL,
    -- hex HMAC of the subject under a key derived from AUTH_MASTER_KEY
    subject_hash text NOT NULL,
    failures integer NOT NULL,
    locked boolean NOT NULL DEFAULT false,
    -- unix seconds (service clock) when the row stops counting;
    -- NULL for a lock that lasts until a recovery path clears it
    forget_at bigint,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issuer_id, budget, subject_hash)
);
CREATE INDEX failure_ledger_forget ON failure_ledger (forget_at);
