-- A refresh that rotates (the common case) in one statement: the session
-- lock, the read and the four writes in one function, so the store sends
-- one statement in autocommit instead of BEGIN, the lock, the rotation and
-- COMMIT (docs/PERFORMANCE.md, "refresh rotation in one round trip").
--
-- The function is shared by every issuer schema of the regional database
-- and names its tables unqualified: they resolve through the caller's
-- search_path, which an issuer handle sets to that issuer's schema only
-- (the plan cache replans when the path differs, as for every statement of
-- the store). Every schema's migration runs this; it is created once, under
-- a lock, since schemas migrate in parallel.
--
-- It rotates only when nothing would refuse the token or treat it as a
-- replay (live session, token neither spent nor invalidated, within the
-- absolute and idle limits) and returns the touched session; otherwise it
-- writes nothing and returns no row, and the store takes the transactional
-- path that decides replays and reuse (storage/sessions.rs).
SELECT pg_advisory_xact_lock(hashtext('idmesh.refresh_rotate'));

CREATE OR REPLACE FUNCTION public.idm_refresh_rotate(
    presented_hash text,
    idle_seconds double precision,
    successor text,
    sealed_successor text,
    agent text,
    address text
) RETURNS TABLE (
    id text,
    user_id text,
    created_at timestamptz,
    last_active_at timestamptz,
    expires_at timestamptz,
    revoked_at timestamptz,
    revoke_reason text,
    user_agent text,
    ip text,
    device_id text
)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    -- Lock first, read second: a VOLATILE function's next statement takes a
    -- new snapshot, so the read below sees whatever committed before the
    -- lock was granted (a revocation, a concurrent rotation).
    PERFORM 1 FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
     WHERE t.token_hash = presented_hash FOR UPDATE OF s;
    RETURN QUERY
    WITH ok AS (
        SELECT s.id, s.device_id
          FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
         WHERE t.token_hash = presented_hash
           AND s.revoked_at IS NULL
           AND t.consumed_at IS NULL AND t.invalidated_at IS NULL
           AND s.expires_at > now()
           AND s.last_active_at >= now() - make_interval(secs => idle_seconds)
    ), spend AS (
        UPDATE refresh_tokens SET consumed_at = now(), successor_hash = successor,
                                  successor_sealed = sealed_successor
         WHERE token_hash = presented_hash AND EXISTS (SELECT 1 FROM ok)
    ), born AS (
        INSERT INTO refresh_tokens (token_hash, session_id) SELECT successor, ok.id FROM ok
    ), device AS (
        UPDATE devices d SET last_seen_at = now() FROM ok WHERE d.id = ok.device_id
    )
    UPDATE sessions s SET last_active_at = now(), user_agent = COALESCE(agent, s.user_agent),
                          ip = COALESCE(address, s.ip)
      FROM ok WHERE s.id = ok.id
    RETURNING s.id, s.user_id, s.created_at, s.last_active_at, s.expires_at, s.revoked_at,
              s.revoke_reason, s.user_agent, s.ip, s.device_id;
END
$$;
