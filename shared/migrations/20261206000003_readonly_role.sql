-- The dashboard's database role, so that no one creates it by hand: it reads
-- the results and may change only an alert's state (acknowledge, resolve).
-- Created here without a password and unable to log in; process gives it its
-- password and LOGIN at start when it is configured with the dashboard's URL
-- (TRIBUTARY_READONLY_DATABASE_URL), so the password lives in one place
-- (Key Vault's database-url-readonly) and never in a migration.
-- Roles are per server, not per database: a second database on the same
-- server (or two migrating at once) finds it there already.
DO $$
BEGIN
    CREATE ROLE tributary_readonly NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
GRANT SELECT ON devices, aggregates, alerts, rollups TO tributary_readonly;
GRANT UPDATE (state, acknowledged_at, acknowledged_by, resolved_at) ON alerts TO tributary_readonly;
