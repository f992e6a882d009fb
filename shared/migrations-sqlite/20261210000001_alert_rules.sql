-- The alert rules of shared/migrations, for the embedded SQLite store.
-- Times are integer milliseconds since the Unix epoch (UTC).
CREATE TABLE IF NOT EXISTS alert_rules (
    rule_id      TEXT PRIMARY KEY,
    metric       TEXT NOT NULL,
    condition    TEXT NOT NULL CHECK (condition IN ('>', '>=', '<', '<=')),
    threshold    REAL NOT NULL,
    hold_seconds INTEGER NOT NULL CHECK (hold_seconds >= 0),
    severity     TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    scope_kind   TEXT NOT NULL CHECK (scope_kind IN ('group', 'device')),
    scope        TEXT NOT NULL,
    description  TEXT,
    revision     INTEGER NOT NULL DEFAULT 1 CHECK (revision >= 1),
    deleted      INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

ALTER TABLE alerts ADD COLUMN severity TEXT NOT NULL DEFAULT 'warning'
    CHECK (severity IN ('info', 'warning', 'critical'));
