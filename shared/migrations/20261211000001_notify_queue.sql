-- The delivery queue of alert notifications (shared/src/notify/queue.rs):
-- the notifier writes one row per (channel, alert record) before it commits
-- the record's offset; per channel, a dispatcher holding the channel's lease
-- delivers the oldest undone row, retrying it on the channel's own schedule,
-- so a receiver that is down holds back only its own channel. A done row
-- (delivered or dead-lettered) is kept for a day so that a record consumed
-- again after a restart is not delivered twice nor out of order.
CREATE TABLE IF NOT EXISTS notify_queue (
    seq              BIGSERIAL PRIMARY KEY,
    channel_id       TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    alert            TEXT NOT NULL,
    group_name       TEXT NOT NULL,
    enqueued_at      TIMESTAMPTZ NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    first_attempt_at TIMESTAMPTZ,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    last_status      INTEGER,
    last_error       TEXT,
    done_at          TIMESTAMPTZ,
    UNIQUE (channel_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS notify_queue_undone ON notify_queue (channel_id, seq) WHERE done_at IS NULL;
CREATE INDEX IF NOT EXISTS notify_queue_done ON notify_queue (done_at) WHERE done_at IS NOT NULL;

-- Which process delivers a channel, until when.
CREATE TABLE IF NOT EXISTS notify_leases (
    channel_id TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

-- A dead letter keeps its alert record and group, so it can be sent again.
ALTER TABLE notify_dead_letters ADD COLUMN IF NOT EXISTS alert TEXT;
ALTER TABLE notify_dead_letters ADD COLUMN IF NOT EXISTS group_name TEXT;

-- The dashboard shows each channel's backlog and sends dead letters again.
GRANT SELECT, INSERT, UPDATE, DELETE ON notify_queue TO tributary_readonly;
GRANT USAGE ON SEQUENCE notify_queue_seq_seq TO tributary_readonly;
