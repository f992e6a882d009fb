-- Each window's and each rollup row's quantile sketch
-- (see shared/migrations/20261207000001_window_sketches.sql).
ALTER TABLE aggregates ADD COLUMN sketch BLOB;
ALTER TABLE rollups ADD COLUMN sketch BLOB;
