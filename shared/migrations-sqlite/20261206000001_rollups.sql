-- Rollup tiers and the buckets waiting to be recomputed (see
-- shared/migrations/20261206000001_rollups.sql). Times are integer
-- milliseconds; warming is 0 or 1.
CREATE TABLE IF NOT EXISTS rollups (
    device_id      TEXT NOT NULL,
    metric         TEXT NOT NULL,
    window_seconds INTEGER NOT NULL CHECK (window_seconds > 0),
    window_start   INTEGER NOT NULL,
    source_seconds INTEGER NOT NULL CHECK (source_seconds > 0),
    count          INTEGER NOT NULL CHECK (count > 0),
    min            REAL NOT NULL,
    max            REAL NOT NULL,
    mean           REAL NOT NULL,
    stddev         REAL NOT NULL,
    p50            REAL NOT NULL,
    p95            REAL NOT NULL,
    p99            REAL NOT NULL,
    anomaly_score  REAL NOT NULL CHECK (anomaly_score >= 0 AND anomaly_score <= 1),
    model          TEXT NOT NULL,
    expected_low   REAL,
    expected_high  REAL,
    warming        INTEGER NOT NULL DEFAULT 0 CHECK (warming IN (0, 1)),
    PRIMARY KEY (device_id, metric, window_seconds, window_start)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rollups_tier_start ON rollups (window_seconds, window_start);

CREATE TABLE IF NOT EXISTS rollup_dirty (
    window_seconds INTEGER NOT NULL,
    device_id      TEXT NOT NULL,
    metric         TEXT NOT NULL,
    window_start   INTEGER NOT NULL,
    PRIMARY KEY (window_seconds, device_id, metric, window_start)
) WITHOUT ROWID;
