-- Residency evidence: why and when each user was placed in their region.
-- Rows from before this migration keep a null reason ('unrecorded' in the
-- API) and their creation time as the placement time.
ALTER TABLE users
    ADD COLUMN placement_reason text
        CHECK (placement_reason IN ('country', 'hint', 'default', 'fallback')),
    ADD COLUMN unavailable_region text,
    ADD COLUMN placed_at timestamptz;
