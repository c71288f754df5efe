-- Account history leaves the engine's commit (see src/history.rs): the two per-account indexes
-- put every transfer at a random place in two B-trees, and their upkeep was most of the cost of
-- a commit. `history.db`, kept by a background indexer, answers account history instead.
-- The timestamp index grows at its end only; it covers what the indexer reads (and what a
-- listing filters on in the unindexed tail).
DROP INDEX transfers_debit;
DROP INDEX transfers_credit;
CREATE INDEX transfers_timestamp ON transfers (timestamp, debit_account, credit_account);
