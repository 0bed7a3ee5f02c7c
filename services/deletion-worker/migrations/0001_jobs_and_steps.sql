-- One job per user deletion (ever: a second request finds the first), and
-- its steps in order. The job keeps the user id and the receipt (ids and
-- counts only) as the record that the deletion happened.
CREATE TABLE jobs (
    id text PRIMARY KEY,
    issuer_id text NOT NULL,
    user_id text NOT NULL,
    region text NOT NULL,
    status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'stalled', 'completed')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    stalled_at timestamptz,
    completed_at timestamptz,
    receipt jsonb,
    -- A worker holds the job while it runs an attempt (a duplicate delivery
    -- waits); it lapses by itself if the worker dies.
    lease_until timestamptz,
    UNIQUE (issuer_id, user_id)
);
CREATE INDEX jobs_unfinished ON jobs (updated_at) WHERE status <> 'completed';

CREATE TABLE steps (
    job_id text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    position int NOT NULL,
    name text NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'failing', 'completed')),
    attempts int NOT NULL DEFAULT 0,
    last_error text,
    failing_since timestamptz,
    completed_at timestamptz,
    location text,
    removed jsonb,
    PRIMARY KEY (job_id, position)
);
