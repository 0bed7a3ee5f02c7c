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
