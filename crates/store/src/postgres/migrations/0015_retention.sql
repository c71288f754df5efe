-- Retention (store::retention): the pruner finds old rows through these indexes instead of
-- scanning the tables.
CREATE INDEX idempotency_created ON idempotency (created_at);
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at);
CREATE INDEX webhook_deliveries_seq ON webhook_deliveries (seq);
CREATE INDEX outbox_created ON outbox (created_at);
CREATE INDEX batches_files ON batches (created_at) WHERE file IS NOT NULL;
