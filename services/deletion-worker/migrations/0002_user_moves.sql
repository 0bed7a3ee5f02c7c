-- Regions at scale: the worker also runs user moves (docs/REGIONS.md
-- "Moving a user"), with the same queue, leases, steps and retries. A user
-- has at most one deletion ever and at most one unfinished move.
ALTER TABLE jobs
    ADD COLUMN kind text NOT NULL DEFAULT 'deletion' CHECK (kind IN ('deletion', 'move')),
    -- A move's target region (`region` is where the data was).
    ADD COLUMN target_region text,
    ADD CONSTRAINT jobs_move_has_target CHECK ((kind = 'move') = (target_region IS NOT NULL));
ALTER TABLE jobs DROP CONSTRAINT jobs_issuer_id_user_id_key;
CREATE UNIQUE INDEX jobs_one_deletion_per_user ON jobs (issuer_id, user_id) WHERE kind = 'deletion';
CREATE UNIQUE INDEX jobs_one_unfinished_move_per_user ON jobs (issuer_id, user_id)
    WHERE kind = 'move' AND status <> 'completed';
