-- What the anomaly models expected of each window (the band they would have
-- scored its values below 0.5 in) and whether they were still learning the
-- series. NULL band: the models were warming up, or an older analyze wrote it.
ALTER TABLE aggregates ADD COLUMN IF NOT EXISTS expected_low DOUBLE PRECISION;
ALTER TABLE aggregates ADD COLUMN IF NOT EXISTS expected_high DOUBLE PRECISION;
ALTER TABLE aggregates ADD COLUMN IF NOT EXISTS warming BOOLEAN NOT NULL DEFAULT false;
