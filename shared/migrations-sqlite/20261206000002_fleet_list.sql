-- As shared/migrations/20261206000002_fleet_list.sql: the fleet list's
-- orders served by an index (time, then device id; SQLite's text order is
-- byte order already), and a device's alerts not resolved.
CREATE INDEX IF NOT EXISTS devices_last_seen_id ON devices (last_seen, device_id);
CREATE INDEX IF NOT EXISTS devices_first_seen_id ON devices (first_seen, device_id);
DROP INDEX IF EXISTS devices_last_seen;
CREATE INDEX IF NOT EXISTS alerts_unresolved_device ON alerts (device_id) WHERE state <> 'resolved';
