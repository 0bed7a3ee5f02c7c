use idm_db::Migration;

pub const SESSION_KEYS: &[Migration] = &[
    Migration {
        version: 1,
        name: "signing keys",
        sql: "
            CREATE TABLE keys (
                kid text PRIMARY KEY,
                issuer_id text NOT NULL,
                sealed_secret bytea NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now(),
                retired_at timestamptz
            );
            CREATE INDEX keys_by_issuer ON keys (issuer_id, created_at DESC);
        ",
    },
    Migration {
        version: 2,
        name: "session index",
        sql: "
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
        ",
    },
    Migration {
        version: 3,
        name: "emergency key revocation",
        sql: "
            -- A revoked key never verifies again (a retired one verifies for a
            -- day); the latest revoked_at of an issuer is the instant before
            -- which none of its sessions may be refreshed.
            ALTER TABLE keys ADD COLUMN revoked_at timestamptz;
        ",
    },
];
