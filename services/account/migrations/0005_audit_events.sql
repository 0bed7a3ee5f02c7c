-- The audit log: every event on EVENTS, as the account service's durable
-- consumer `audit` receives it. Ids only (event payloads carry ids and
-- non-personal fields); `network` is the caller's /24 or /48.
-- Append-only: rows are never changed or deleted, except that the user
-- deletion cascade may clear `network` (personal data) and nothing else.
CREATE TABLE audit_events (
    id text PRIMARY KEY,
    issuer_id text NOT NULL,
    type text NOT NULL,
    actor text NOT NULL,
    request_id text,
    network text,
    data jsonb NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_issuer ON audit_events (issuer_id, id);
CREATE INDEX audit_events_actor ON audit_events (actor);

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.network IS NULL
        AND (NEW.id, NEW.issuer_id, NEW.type, NEW.actor, NEW.request_id, NEW.data,
             NEW.occurred_at, NEW.recorded_at)
            IS NOT DISTINCT FROM
            (OLD.id, OLD.issuer_id, OLD.type, OLD.actor, OLD.request_id, OLD.data,
             OLD.occurred_at, OLD.recorded_at)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit events are append-only';
END
$$;

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
