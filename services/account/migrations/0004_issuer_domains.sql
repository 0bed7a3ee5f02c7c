-- A tenant's custom domains (docs/EDGE.md, "Per-issuer hosts"). A domain
-- serves at most one issuer; it is usable only once verified_at is set.
CREATE TABLE issuer_domains (
    domain text PRIMARY KEY,
    issuer_id text NOT NULL REFERENCES issuers(id),
    cookie_domain text,
    -- Published in DNS by the tenant, so not a secret.
    token text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    verified_at timestamptz
);
CREATE INDEX issuer_domains_by_issuer ON issuer_domains (issuer_id);
