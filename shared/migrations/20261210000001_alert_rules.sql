-- Alert rules per device group or device (shared/src/rules), edited by
-- operators at run time and published by process's relay to the compacted
-- topic tributary.rules, which analyze follows. A deleted rule is kept,
-- marked deleted at its next revision, so followers see the deletion and an
-- id used again continues its revisions.
CREATE TABLE IF NOT EXISTS alert_rules (
    rule_id      TEXT PRIMARY KEY,
    metric       TEXT NOT NULL,
    condition    TEXT NOT NULL CHECK (condition IN ('>', '>=', '<', '<=')),
    threshold    DOUBLE PRECISION NOT NULL,
    hold_seconds INTEGER NOT NULL CHECK (hold_seconds >= 0),
    severity     TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    scope_kind   TEXT NOT NULL CHECK (scope_kind IN ('group', 'device')),
    scope        TEXT NOT NULL,
    description  TEXT,
    revision     BIGINT NOT NULL DEFAULT 1 CHECK (revision >= 1),
    deleted      BOOLEAN NOT NULL DEFAULT false,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
-- Operators edit rules from the dashboard, which connects as this role.
-- (A rule writer locks the table in SHARE ROW EXCLUSIVE mode, which needs UPDATE.)
GRANT SELECT, INSERT, UPDATE ON alert_rules TO tributary_readonly;

-- How urgent an alert is: a rule's severity for the incidents it opens,
-- 'warning' for the models'.
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS severity TEXT NOT NULL DEFAULT 'warning'
    CHECK (severity IN ('info', 'warning', 'critical'));
