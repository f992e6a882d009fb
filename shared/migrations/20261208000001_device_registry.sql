-- The device registry (shared/src/registry): which devices the fleet has,
-- their group, whether they may send, and their current key version. Every
-- change moves `revision` up by one, so a follower of the registry can tell
-- a newer record of a device from an older one. `last_seen` is not kept
-- here: it is the devices table's, joined when read.
CREATE TABLE IF NOT EXISTS device_registry (
    device_id    TEXT PRIMARY KEY,
    display_name TEXT,
    device_group TEXT NOT NULL DEFAULT 'default',
    tags         JSONB NOT NULL DEFAULT '{}'::jsonb,
    status       TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    key_version  INTEGER NOT NULL DEFAULT 0 CHECK (key_version >= 0),
    enrolled_by  TEXT NOT NULL CHECK (enrolled_by IN ('operator', 'first-contact')),
    revision     BIGINT NOT NULL DEFAULT 1 CHECK (revision >= 1),
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
-- Listing a group, page by page in id order.
CREATE INDEX IF NOT EXISTS device_registry_group ON device_registry (device_group, device_id);
-- The dashboard shows the registry (its role is created in 20261206000003).
GRANT SELECT ON device_registry TO tributary_readonly;

-- The outbox of registry changes: a row per change of a device, written in
-- the change's transaction, so the relay (shared/src/registry/relay.rs)
-- publishes every change to tributary.devices whoever made it. Rows older
-- than a week are pruned by the relay.
CREATE TABLE IF NOT EXISTS device_registry_changes (
    seq        BIGSERIAL PRIMARY KEY,
    device_id  TEXT NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL
);
