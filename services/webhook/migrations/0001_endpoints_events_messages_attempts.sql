-- Webhook endpoints, the events they are sent, one message per
-- (endpoint, event) with its retry state, and every HTTP attempt.
-- Ids only: event payloads carry ids, never personal data.

CREATE TABLE endpoints (
    id text PRIMARY KEY,
    issuer_id text NOT NULL,
    url text NOT NULL,
    -- Event types delivered; empty: every type.
    events text[] NOT NULL DEFAULT '{}',
    description text,
    enabled boolean NOT NULL DEFAULT true,
    disabled_reason text,
    -- The `whsec_` secret sealed under the master key (AAD: the id).
    sealed_secret bytea NOT NULL,
    -- After a rotation, the old secret signs too until then.
    sealed_previous_secret bytea,
    previous_secret_expires_at timestamptz,
    -- Since when every attempt has failed (cleared by a success).
    failing_since timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX endpoints_issuer ON endpoints (issuer_id, id);

-- The envelopes received from EVENTS (for delivery and replay).
CREATE TABLE events (
    id text PRIMARY KEY,
    issuer_id text NOT NULL,
    type text NOT NULL,
    occurred_at timestamptz NOT NULL,
    data jsonb NOT NULL
);
CREATE INDEX events_issuer_time ON events (issuer_id, occurred_at);

CREATE TABLE messages (
    id text PRIMARY KEY,
    endpoint_id text NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    issuer_id text NOT NULL,
    event_id text NOT NULL REFERENCES events (id),
    event_type text NOT NULL,
    -- pending, delivered, failed (a dead letter)
    status text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    -- A replica delivering it holds it until then (a crash lets it go).
    locked_until timestamptz,
    last_status_code integer,
    last_error text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX messages_due ON messages (next_attempt_at) WHERE status = 'pending';
CREATE INDEX messages_issuer ON messages (issuer_id, status, id);

CREATE TABLE attempts (
    id text PRIMARY KEY,
    message_id text NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    endpoint_id text NOT NULL,
    issuer_id text NOT NULL,
    event_id text NOT NULL,
    attempt integer NOT NULL,
    outcome text NOT NULL,
    status_code integer,
    error text,
    latency_ms bigint NOT NULL,
    response_excerpt text,
    attempted_at timestamptz NOT NULL,
    next_retry_at timestamptz
);
CREATE INDEX attempts_endpoint ON attempts (endpoint_id, id);
