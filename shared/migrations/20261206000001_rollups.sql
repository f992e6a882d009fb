-- Rollup tiers: each tier summarises the tier below it (the 1-minute tier
-- summarises the finest windows whose size divides a minute) per device,
-- metric and epoch-aligned bucket, with exactly the merge of the dashboard's
-- merged points (see merge_points in shared/src/results/mod.rs). A long range
-- is read from the tier of matching resolution: one row per point.
--
-- Rollups are derived, never written from records: a batch of windows marks
-- the 1-minute buckets it touched in rollup_dirty (in the batch's own
-- transaction), and the rollup job recomputes each marked bucket from its
-- sources and marks the bucket above it. Recomputing is idempotent, so a
-- replayed or late window changes a rollup exactly as if it had come first.
CREATE TABLE IF NOT EXISTS rollups (
    device_id      TEXT NOT NULL,
    metric         TEXT NOT NULL,
    -- The tier: 60, 300, 900, 3600, 21600 or 86400.
    window_seconds INTEGER NOT NULL CHECK (window_seconds > 0),
    window_start   TIMESTAMPTZ NOT NULL,
    -- The size of the windows or rollups it was computed from.
    source_seconds INTEGER NOT NULL CHECK (source_seconds > 0),
    count          BIGINT NOT NULL CHECK (count > 0),
    min            DOUBLE PRECISION NOT NULL,
    max            DOUBLE PRECISION NOT NULL,
    mean           DOUBLE PRECISION NOT NULL,
    stddev         DOUBLE PRECISION NOT NULL,
    p50            DOUBLE PRECISION NOT NULL,
    p95            DOUBLE PRECISION NOT NULL,
    p99            DOUBLE PRECISION NOT NULL,
    anomaly_score  DOUBLE PRECISION NOT NULL CHECK (anomaly_score >= 0 AND anomaly_score <= 1),
    model          TEXT NOT NULL,
    expected_low   DOUBLE PRECISION,
    expected_high  DOUBLE PRECISION,
    warming        BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (device_id, metric, window_seconds, window_start)
);
-- Retention deletes by tier and age.
CREATE INDEX IF NOT EXISTS rollups_tier_start ON rollups (window_seconds, window_start);

-- Buckets whose sources changed since they were last computed.
CREATE TABLE IF NOT EXISTS rollup_dirty (
    window_seconds INTEGER NOT NULL,
    device_id      TEXT NOT NULL,
    metric         TEXT NOT NULL,
    window_start   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (window_seconds, device_id, metric, window_start)
);
