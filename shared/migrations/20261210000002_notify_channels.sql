-- Alert notification channels (shared/src/notify): where alerts are POSTed,
-- in which format, for which groups and severities. `secret` signs
-- deliveries (PagerDuty: the routing key); the API never returns it.
CREATE TABLE IF NOT EXISTS notify_channels (
    channel_id   TEXT PRIMARY KEY,
    url          TEXT NOT NULL,
    format       TEXT NOT NULL CHECK (format IN ('generic', 'slack', 'teams', 'pagerduty')),
    secret       TEXT,
    groups       JSONB NOT NULL DEFAULT '[]'::jsonb,
    min_severity TEXT NOT NULL CHECK (min_severity IN ('info', 'warning', 'critical')),
    enabled      BOOLEAN NOT NULL DEFAULT true,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);

-- Deliveries given up on, one per (channel, alert record), for operators.
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
    failed_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (channel_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS notify_dead_letters_newest ON notify_dead_letters (channel_id, failed_at DESC);

-- Operators manage channels from the dashboard, which connects as this role.
GRANT SELECT, INSERT, UPDATE, DELETE ON notify_channels TO tributary_readonly;
GRANT SELECT, DELETE ON notify_dead_letters TO tributary_readonly;
