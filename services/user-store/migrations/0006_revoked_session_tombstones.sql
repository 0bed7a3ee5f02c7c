-- When a user is deleted their session rows go, but a revoked session's
-- token can verify statelessly until it expires: edges rebuilding their
-- revocation sets must still learn of it. A tombstone keeps the session id
-- and its times only (no user, no device) until the token's end.
CREATE TABLE revoked_session_tombstones (
    id text PRIMARY KEY,
    revoked_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    revoke_reason text
);
CREATE INDEX revoked_session_tombstones_revoked ON revoked_session_tombstones (revoked_at, id);
