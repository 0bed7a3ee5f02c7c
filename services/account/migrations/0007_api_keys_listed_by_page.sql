-- `GET /v1/api_keys` reads a page at a time, newest first, after a cursor
-- key: the index serves that order within one issuer, so a page costs the
-- same with ten keys or a hundred thousand. It replaces the plain issuer
-- index (its leading column serves the same lookups).
CREATE INDEX api_keys_by_issuer_newest ON api_keys (issuer_id, created_at DESC, id DESC);
DROP INDEX api_keys_by_issuer;
