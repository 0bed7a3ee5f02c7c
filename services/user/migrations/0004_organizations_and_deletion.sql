-- Organizations and their memberships (ids only: no personal data), and
-- the `deleting` state of a user whose deletion job runs.
CREATE TABLE organizations (
    id text PRIMARY KEY,
    issuer_id text NOT NULL,
    name text NOT NULL,
    roles text[] NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX organizations_by_issuer ON organizations (issuer_id, created_at DESC, id DESC);

CREATE TABLE memberships (
    organization_id text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id text NOT NULL,
    role text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX memberships_by_org ON memberships (organization_id, created_at DESC, user_id DESC);
CREATE INDEX memberships_by_user ON memberships (user_id, created_at DESC, organization_id DESC);

ALTER TABLE users DROP CONSTRAINT users_status_check;
ALTER TABLE users ADD CONSTRAINT users_status_check CHECK (status IN ('pending', 'active', 'deleting'));
ALTER TABLE users ADD COLUMN deletion_id text;
