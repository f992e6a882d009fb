-- The fleet list (results::listing) pages through devices in the order of a
-- time with the device id (byte order) breaking ties: these indexes give both
-- in one scan, in either direction, so a page deep in a fleet of 10,000 steps
-- over index entries instead of sorting the fleet. They replace the index on
-- last_seen alone, which the first serves too.
CREATE INDEX IF NOT EXISTS devices_last_seen_id ON devices (last_seen, device_id COLLATE "C");
CREATE INDEX IF NOT EXISTS devices_first_seen_id ON devices (first_seen, device_id COLLATE "C");
DROP INDEX IF EXISTS devices_last_seen;
-- A device's alerts not resolved (its count on the list, the "alerting" filter).
CREATE INDEX IF NOT EXISTS alerts_unresolved_device ON alerts (device_id) WHERE state <> 'resolved';
