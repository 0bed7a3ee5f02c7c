-- Edges rebuild their revocation sets from the revocations of the
-- last day (the longest token lifetime); this keeps that read small
-- however many sessions the issuer has.
CREATE INDEX sessions_revoked ON sessions (revoked_at, id) WHERE revoked_at IS NOT NULL;
