//! The schema of one issuer's identity store, applied to every issuer schema.

use idm_db::Migration;

pub const STORE: &[Migration] = &[
    Migration {
        version: 1,
        name: "users and sessions",
        sql: "
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
    ",
    },
    Migration {
        version: 2,
        name: "refresh tokens and personal tokens",
        sql: "
        CREATE TABLE refresh_tokens (
            token_hash text PRIMARY KEY,
            session_id text NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            created_at timestamptz NOT NULL DEFAULT now(),
            consumed_at timestamptz,
            successor_hash text,
            successor_sealed text,
            invalidated_at timestamptz
        );
        CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);
        CREATE TABLE personal_tokens (
            id text PRIMARY KEY,
            user_id text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            name text NOT NULL,
            scopes jsonb NOT NULL,
            token_hash text NOT NULL UNIQUE,
            created_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz,
            revoked_at timestamptz,
            last_used_at timestamptz
        );
        CREATE INDEX personal_tokens_by_user ON personal_tokens (user_id);
    ",
    },
    Migration {
        version: 3,
        name: "totp and backup codes",
        sql: "
            ALTER TABLE users
                ADD COLUMN totp_pending_sealed text,
                ADD COLUMN totp_secret_sealed text,
                ADD COLUMN totp_last_step bigint;
            CREATE TABLE backup_codes (
                code_hash text PRIMARY KEY,
                user_id text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                created_at timestamptz NOT NULL DEFAULT now(),
                used_at timestamptz
            );
            CREATE INDEX backup_codes_by_user ON backup_codes (user_id);
        ",
    },
    Migration {
        version: 4,
        name: "revoked sessions index",
        // Edges rebuild their revocation sets from the revocations of the
        // last day (the longest token lifetime); this keeps that read small
        // however many sessions the issuer has.
        sql: "
            CREATE INDEX sessions_revoked ON sessions (revoked_at, id) WHERE revoked_at IS NOT NULL;
        ",
    },
];
