-- A revoked key never verifies again (a retired one verifies for a
-- day); the latest revoked_at of an issuer is the instant before
-- which none of its sessions may be refreshed.
ALTER TABLE keys ADD COLUMN revoked_at timestamptz;
