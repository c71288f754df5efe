-- Batch refunds (format `refunds`): the free-text reason given with a refund, by the API's
-- `reason` or a refunds file's `reason` column. NULL for a refund made before, or without one.
ALTER TABLE refunds ADD COLUMN reason TEXT;
