-- Leases: a batch job runs on the node whose lease it holds (claimed with `FOR UPDATE SKIP
-- LOCKED`, renewed while it runs, taken over by another node once lapsed), and a webhook
-- delivery is attempted by the worker that claimed it, until `claimed_until`.

ALTER TABLE batches ADD COLUMN lease_owner TEXT,     -- the node id running the batch's job
                    ADD COLUMN lease_until BIGINT;   -- ns since the epoch; lapsed after it

ALTER TABLE webhook_deliveries ADD COLUMN claimed_until BIGINT;  -- NULL: not claimed
