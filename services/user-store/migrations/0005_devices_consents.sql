-- Users (issue 11): the devices sessions are opened from, and the consent
-- history. Every table carries `user_id` (the deletion cascade removes a
-- user's rows table by table with `DELETE ... WHERE user_id = $1`).
CREATE TABLE devices (
    id text PRIMARY KEY,
    user_id text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- SHA-256 of (user agent, IP network): one row per distinct pair.
    fingerprint text NOT NULL,
    user_agent text,
    -- The network only (/24 for IPv4, /48 for IPv6), never the full address.
    ip_network text,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, fingerprint)
);
CREATE INDEX devices_by_user ON devices (user_id, last_seen_at DESC, id DESC);

ALTER TABLE sessions ADD COLUMN device_id text REFERENCES devices(id) ON DELETE SET NULL;
CREATE INDEX sessions_by_device ON sessions (device_id) WHERE device_id IS NOT NULL;
-- A user's sessions newest first, a page at a time.
CREATE INDEX sessions_by_user_created ON sessions (user_id, created_at DESC, id DESC);

-- Append-only: a decision is never changed, a new one is added.
CREATE TABLE consents (
    id text PRIMARY KEY,
    user_id text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    purpose text NOT NULL,
    version text NOT NULL,
    granted boolean NOT NULL,
    session_id text,
    device_id text,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX consents_by_user ON consents (user_id, recorded_at DESC, id DESC);
CREATE INDEX consents_by_purpose ON consents (user_id, purpose, recorded_at DESC, id DESC);

CREATE FUNCTION consents_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'consent records are append-only';
END;
$$;
CREATE TRIGGER consents_no_update BEFORE UPDATE ON consents
    FOR EACH ROW EXECUTE FUNCTION consents_append_only();

-- A user's personal tokens newest first, a page at a time.
CREATE INDEX personal_tokens_by_user_created ON personal_tokens (user_id, created_at DESC, id DESC);
