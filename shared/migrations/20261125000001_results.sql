-- Results written by the process function and read by the dashboard.
-- Every write is an idempotent upsert on the record's identity, so a replayed
-- Kafka batch changes nothing.

CREATE TABLE IF NOT EXISTS devices (
    device_id   TEXT PRIMARY KEY,
    first_seen  TIMESTAMPTZ NOT NULL,
    last_seen   TIMESTAMPTZ NOT NULL,
    -- metric -> {"value": mean of the latest window, "windowStart": ..., "windowSeconds": ...}
    last_values JSONB NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS devices_last_seen ON devices (last_seen DESC);

CREATE TABLE IF NOT EXISTS aggregates (
    device_id      TEXT NOT NULL,
    metric         TEXT NOT NULL,
    window_seconds INTEGER NOT NULL CHECK (window_seconds > 0),
    window_start   TIMESTAMPTZ NOT NULL,
    window_end     TIMESTAMPTZ NOT NULL,
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
    written_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Also serves "a device's series in a time range" (device, metric, size, start range).
    PRIMARY KEY (device_id, metric, window_seconds, window_start)
);
-- Retention deletes by age.
CREATE INDEX IF NOT EXISTS aggregates_window_start ON aggregates (window_start);

CREATE TABLE IF NOT EXISTS alerts (
    id              TEXT PRIMARY KEY,
    device_id       TEXT NOT NULL,
    metric          TEXT NOT NULL,
    model           TEXT NOT NULL,
    score           DOUBLE PRECISION NOT NULL,
    value           DOUBLE PRECISION NOT NULL,
    reason          TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    opened_at       TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    resolved_at     TIMESTAMPTZ,
    acknowledged_at TIMESTAMPTZ,
    acknowledged_by TEXT
);
CREATE INDEX IF NOT EXISTS alerts_updated_at ON alerts (updated_at DESC);
CREATE INDEX IF NOT EXISTS alerts_device ON alerts (device_id, updated_at DESC);
CREATE INDEX IF NOT EXISTS alerts_unresolved ON alerts (updated_at DESC) WHERE state <> 'resolved';
