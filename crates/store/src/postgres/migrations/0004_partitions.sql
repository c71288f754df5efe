-- Tenant partitions (cluster mode): a leader per partition, and the fencing epoch every
-- commit checks (see postgres/partitions.rs).

-- The cluster's partition count, NULL until the first engine fixes it
-- (`paycore_store::cluster_partitions`); it never changes after. `last_timestamp` is the clock
-- every partition starts from: `meta.last_timestamp`, moved here so that no two partitions'
-- commits update one shared row.
CREATE TABLE cluster_partitions (
    only_row       BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
    count          INTEGER CHECK (count BETWEEN 1 AND 1024),
    last_timestamp BIGINT NOT NULL
);
INSERT INTO cluster_partitions (last_timestamp)
VALUES (COALESCE((SELECT value FROM meta WHERE key = 'last_timestamp'), 0));
DELETE FROM meta WHERE key = 'last_timestamp';

-- One row per partition: `epoch` grows by one each time a leader takes the partition, and
-- every commit updates its partition's row only where the epoch is still its own;
-- `last_timestamp` is the latest commit's clock.
CREATE TABLE partitions (
    id             INTEGER PRIMARY KEY CHECK (id >= 0),
    epoch          BIGINT NOT NULL,
    last_timestamp BIGINT NOT NULL
);

-- A partition's recovery finds the tenants with accounts by a skip scan of this index, then
-- loads its own tenants' accounts through it.
CREATE INDEX accounts_tenant ON accounts (tenant);
