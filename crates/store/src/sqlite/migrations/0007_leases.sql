-- Leases (cluster mode's rule, kept by the embedded store too): a batch job runs where its
-- lease is held, and a webhook delivery is attempted by the worker that claimed it. The data
-- folder is locked to one process, so opening it frees every lease a previous process left.

ALTER TABLE batches ADD COLUMN lease_owner TEXT;     -- the node id running the batch's job
ALTER TABLE batches ADD COLUMN lease_until INTEGER;  -- ns since the epoch; lapsed after it

ALTER TABLE webhook_deliveries ADD COLUMN claimed_until INTEGER;  -- NULL: not claimed
