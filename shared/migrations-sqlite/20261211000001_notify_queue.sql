-- The notification delivery queue of shared/migrations, for the embedded
-- SQLite store. Times are integer milliseconds.
CREATE TABLE IF NOT EXISTS notify_queue (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id       TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    alert            TEXT NOT NULL,
    group_name       TEXT NOT NULL,
    enqueued_at      INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    first_attempt_at INTEGER,
    next_attempt_at  INTEGER NOT NULL,
    last_status      INTEGER,
    last_error       TEXT,
    done_at          INTEGER,
    UNIQUE (channel_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS notify_queue_undone ON notify_queue (channel_id, seq) WHERE done_at IS NULL;
CREATE INDEX IF NOT EXISTS notify_queue_done ON notify_queue (done_at) WHERE done_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS notify_leases (
    channel_id TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);

ALTER TABLE notify_dead_letters ADD COLUMN alert TEXT;
ALTER TABLE notify_dead_letters ADD COLUMN group_name TEXT;
