-- Users (issue 11): `GET /v1/users` reads an issuer's active users newest
-- first, a page at a time, optionally within one region: both walk one of
-- these indexes from the cursor, so a page costs the same at a million users.
CREATE INDEX users_by_issuer_created ON users (issuer_id, created_at DESC, id DESC)
    WHERE status = 'active';
CREATE INDEX users_by_issuer_region_created ON users (issuer_id, region, created_at DESC, id DESC)
    WHERE status = 'active';
