-- The results tables of shared/migrations, for the embedded SQLite store of
-- the all-in-one mode. Times are integer milliseconds since the Unix epoch
-- (UTC), so comparisons and ordering are exact; JSON is TEXT.

CREATE TABLE IF NOT EXISTS devices (
    device_id   TEXT PRIMARY KEY,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    last_values TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(last_values))
);
CREATE INDEX IF NOT EXISTS devices_last_seen ON devices (last_seen DESC);

CREATE TABLE IF NOT EXISTS aggregates (
    device_id      TEXT NOT NULL,
    metric         TEXT NOT NULL,
    window_seconds INTEGER NOT NULL CHECK (window_seconds > 0),
    window_start   INTEGER NOT NULL,
    window_end     INTEGER NOT NULL,
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
    written_at     INTEGER NOT NULL,
    PRIMARY KEY (device_id, metric, window_seconds, window_start)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS aggregates_window_start ON aggregates (window_start);

CREATE TABLE IF NOT EXISTS alerts (
    id              TEXT PRIMARY KEY,
    device_id       TEXT NOT NULL,
    metric          TEXT NOT NULL,
    model           TEXT NOT NULL,
    score           REAL NOT NULL,
    value           REAL NOT NULL,
    reason          TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    opened_at       INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    resolved_at     INTEGER,
    acknowledged_at INTEGER,
    acknowledged_by TEXT
);
CREATE INDEX IF NOT EXISTS alerts_updated_at ON alerts (updated_at DESC);
CREATE INDEX IF NOT EXISTS alerts_device ON alerts (device_id, updated_at DESC);
