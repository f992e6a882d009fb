-- Operators manage the device registry from the dashboard too (add,
-- disable, enable, rotate a key), so the dashboard's role may register a
-- device and change the columns an operator changes, and record each change
-- in the outbox for the relay. It still cannot delete a device, write
-- results or read anything but what the dashboard shows.
GRANT INSERT, UPDATE (display_name, device_group, tags, status, key_version, enrolled_by, revision, updated_at)
    ON device_registry TO tributary_readonly;
GRANT INSERT ON device_registry_changes TO tributary_readonly;
GRANT USAGE ON SEQUENCE device_registry_changes_seq_seq TO tributary_readonly;
