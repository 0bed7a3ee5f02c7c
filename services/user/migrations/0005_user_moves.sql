-- Regions at scale: moving a user to another region (docs/REGIONS.md
-- "Moving a user"). While the move job copies and verifies, the user is
-- `moving` (reads, writes, sign-in and deletion wait for it); the switch
-- points the row at the new region and records the evidence.
ALTER TABLE users DROP CONSTRAINT users_status_check;
ALTER TABLE users ADD CONSTRAINT users_status_check
    CHECK (status IN ('pending', 'active', 'deleting', 'moving'));
ALTER TABLE users DROP CONSTRAINT users_placement_reason_check;
ALTER TABLE users ADD CONSTRAINT users_placement_reason_check
    CHECK (placement_reason IN ('country', 'hint', 'default', 'fallback', 'moved'));
ALTER TABLE users
    -- The running move (its job id) and where it goes.
    ADD COLUMN move_id text,
    ADD COLUMN move_to text,
    -- The evidence of the last completed move.
    ADD COLUMN moved_from text,
    ADD COLUMN moved_at timestamptz;
