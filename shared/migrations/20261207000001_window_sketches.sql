-- Each window's quantile sketch (QuantileSketch::to_bytes, shared/src/sketch.rs)
-- and each rollup row's merge of its sources' sketches: the rollup job
-- computes p50/p95/p99 from the merged sketch, within the sketch's 1%
-- relative error. NULL: an analyze from before sketches wrote the window, or
-- a source of the rollup row had none (its quantiles are then approximations).
ALTER TABLE aggregates ADD COLUMN IF NOT EXISTS sketch BYTEA;
ALTER TABLE rollups ADD COLUMN IF NOT EXISTS sketch BYTEA;
