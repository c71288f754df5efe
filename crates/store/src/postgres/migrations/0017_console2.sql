-- The batch list (`BatchStore::batches`, `GET /v1/batches`, the console's batches page): a
-- tenant's batches newest first (ids are time-ordered), read from this index.
CREATE INDEX batches_tenant_id ON batches (tenant, id);
