-- The device registry of shared/migrations, for the embedded SQLite store.
-- Times are integer milliseconds since the Unix epoch (UTC); JSON is TEXT.
CREATE TABLE IF NOT EXISTS device_registry (
    device_id    TEXT PRIMARY KEY,
    display_name TEXT,
    device_group TEXT NOT NULL DEFAULT 'default',
    tags         TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(tags)),
    status       TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    key_version  INTEGER NOT NULL DEFAULT 0 CHECK (key_version >= 0),
    enrolled_by  TEXT NOT NULL CHECK (enrolled_by IN ('operator', 'first-contact')),
    revision     INTEGER NOT NULL DEFAULT 1 CHECK (revision >= 1),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS device_registry_group ON device_registry (device_group, device_id);

-- The outbox of registry changes (see shared/migrations).
CREATE TABLE IF NOT EXISTS device_registry_changes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id  TEXT NOT NULL,
    changed_at INTEGER NOT NULL
);
