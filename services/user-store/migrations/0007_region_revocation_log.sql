-- Edges catch up on revocations every 10 s. Reading every issuer schema for
-- that made the cost grow with the number of tenants in a region, not with
-- revocations (docs/PERFORMANCE.md, "Regions at scale"). One log per
-- regional database, outside the issuer schemas, written by triggers in the
-- same transaction as each revocation, read by one indexed statement.
--
-- Every schema's migration runs this; the shared table and function are
-- created once, under a lock, since schemas migrate in parallel.
SELECT pg_advisory_xact_lock(hashtext('idmesh.revocation_log'));

CREATE TABLE IF NOT EXISTS public.idm_revocation_log (
    -- The issuer's schema (iss_…), which names the issuer.
    schema_name text COLLATE "C" NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    revoked_at timestamptz NOT NULL,
    -- When the session's tokens stop verifying anyway: after it the row
    -- is of no use and is pruned.
    expires_at timestamptz NOT NULL,
    compromised boolean NOT NULL,
    PRIMARY KEY (schema_name, session_id)
);
CREATE INDEX IF NOT EXISTS idm_revocation_log_revoked ON public.idm_revocation_log (revoked_at);
CREATE INDEX IF NOT EXISTS idm_revocation_log_expires ON public.idm_revocation_log (expires_at);

CREATE OR REPLACE FUNCTION public.idm_log_revocation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.idm_revocation_log AS log
        (schema_name, session_id, revoked_at, expires_at, compromised)
    VALUES (TG_TABLE_SCHEMA, NEW.id, NEW.revoked_at, NEW.expires_at,
            NEW.revoke_reason IS NOT DISTINCT FROM 'compromised')
    ON CONFLICT (schema_name, session_id) DO UPDATE
        SET revoked_at = EXCLUDED.revoked_at,
            expires_at = EXCLUDED.expires_at,
            compromised = EXCLUDED.compromised;
    RETURN NULL;
END
$$;

-- A session revoked (or copied in revoked, by a move), and a deleted
-- user's revoked session kept as a tombstone.
CREATE TRIGGER sessions_revocation_log
    AFTER INSERT OR UPDATE OF revoked_at, revoke_reason, expires_at ON sessions
    FOR EACH ROW WHEN (NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION public.idm_log_revocation();
CREATE TRIGGER tombstones_revocation_log
    AFTER INSERT OR UPDATE ON revoked_session_tombstones
    FOR EACH ROW
    EXECUTE FUNCTION public.idm_log_revocation();

-- The revocations made before this migration whose tokens may still verify.
INSERT INTO public.idm_revocation_log (schema_name, session_id, revoked_at, expires_at, compromised)
SELECT current_schema(), id, revoked_at, expires_at, revoke_reason IS NOT DISTINCT FROM 'compromised'
  FROM sessions WHERE revoked_at IS NOT NULL AND expires_at > now()
UNION ALL
SELECT current_schema(), id, revoked_at, expires_at, revoke_reason IS NOT DISTINCT FROM 'compromised'
  FROM revoked_session_tombstones WHERE expires_at > now()
ON CONFLICT (schema_name, session_id) DO NOTHING;
