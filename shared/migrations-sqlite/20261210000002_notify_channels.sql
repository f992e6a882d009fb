-- The notification channels of shared/migrations, for the embedded SQLite
-- store. Times are integer milliseconds; JSON is TEXT.
CREATE TABLE IF NOT EXISTS notify_channels (
    channel_id   TEXT PRIMARY KEY,
    url          TEXT NOT NULL,
    format       TEXT NOT NULL CHECK (format IN ('generic', 'slack', 'teams', 'pagerduty')),
    secret       TEXT,
    groups       TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(groups)),
    min_severity TEXT NOT NULL CHECK (min_severity IN ('info', 'warning', 'critical')),
    enabled      INTEGER NOT NULL DEFAULT 1,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS notify_dead_letters (
    channel_id      TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    alert_id        TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    severity        TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    status          INTEGER,
    error           TEXT NOT NULL,
    body            TEXT NOT NULL,
    failed_at       INTEGER NOT NULL,
    PRIMARY KEY (channel_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS notify_dead_letters_newest ON notify_dead_letters (channel_id, failed_at DESC);
