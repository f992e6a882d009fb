-- What the anomaly models expected of each window and whether they were still
-- learning the series (see shared/migrations/20261205000001_expected_band.sql).
-- warming is 0 or 1.
ALTER TABLE aggregates ADD COLUMN expected_low REAL;
ALTER TABLE aggregates ADD COLUMN expected_high REAL;
ALTER TABLE aggregates ADD COLUMN warming INTEGER NOT NULL DEFAULT 0 CHECK (warming IN (0, 1));
