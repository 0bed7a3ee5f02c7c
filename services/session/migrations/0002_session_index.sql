-- Routing only (ids and region): which store holds a session, so a
-- backend can revoke it by id. The session itself stays in region.
CREATE TABLE session_index (
    session_id text PRIMARY KEY,
    issuer_id text NOT NULL,
    user_id text NOT NULL,
    region text NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX session_index_by_user ON session_index (issuer_id, user_id);
