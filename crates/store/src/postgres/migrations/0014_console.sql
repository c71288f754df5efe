-- The operator console's payment list (`Reader::payments`): a tenant's payments newest first,
-- read from this index instead of a scan of every tenant's.
CREATE INDEX payments_tenant ON payments (tenant, id);
