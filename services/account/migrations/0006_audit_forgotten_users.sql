-- Users whose networks the audit log must no longer keep (a step of their
-- deletion). Events about them can still arrive after the step ran (the
-- audit consumer reads EVENTS asynchronously, and the cascade's own events
-- come later): those rows are stored without a network. The step and every
-- insert take the same per-user advisory lock, so a row is either committed
-- before the step clears it or sees the user as forgotten when inserted.
CREATE TABLE audit_forgotten_users (
    issuer_id text NOT NULL,
    user_id text NOT NULL,
    forgotten_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issuer_id, user_id)
);

CREATE FUNCTION audit_subject_lock(issuer text, subject text) RETURNS void
    LANGUAGE sql AS $$ SELECT pg_advisory_xact_lock(hashtext('audit:' || issuer || ':' || subject)) $$;

CREATE FUNCTION audit_events_forget_network() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.network IS NULL THEN
        RETURN NEW;
    END IF;
    PERFORM account.audit_subject_lock(NEW.issuer_id, NEW.actor);
    IF NEW.data->>'user_id' IS NOT NULL THEN
        PERFORM account.audit_subject_lock(NEW.issuer_id, NEW.data->>'user_id');
    END IF;
    IF EXISTS (SELECT 1 FROM account.audit_forgotten_users f
                WHERE f.issuer_id = NEW.issuer_id
                  AND f.user_id IN (NEW.actor, NEW.data->>'user_id')) THEN
        NEW.network := NULL;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER audit_events_forget_network BEFORE INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_forget_network();
