CREATE TABLE users (
    id text PRIMARY KEY,
    email text NOT NULL,
    email_canonical text NOT NULL UNIQUE,
    email_verified boolean NOT NULL DEFAULT false,
    name text,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    password_hash text,
    mfa_enabled boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE sessions (
    id text PRIMARY KEY,
    user_id text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_active_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    revoke_reason text,
    user_agent text,
    ip text
);
CREATE INDEX sessions_by_user ON sessions (user_id);
