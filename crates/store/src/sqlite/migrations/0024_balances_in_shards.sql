-- Balances are checkpointed a shard of the accounts at a time: `meta.balances_through/N` is
-- the timestamp the rows of shard N are valid at (`meta.balances_through`, all shards, when a
-- shard has no key of its own). Nothing in the tables changes; the version alone keeps an
-- older paycore, which would replay the transfers after `meta.balances_through` on every row
-- and count some twice, from opening a data folder checkpointed this way.
SELECT 1;
