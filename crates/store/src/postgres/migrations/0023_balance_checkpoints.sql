-- Balances checkpointed, not written by every commit (postgres/balances.rs).
--
-- Until now every commit rewrote the balances of every account it touched: a bulk batch of
-- 8 189 transfers updated ~8 000 rows of `accounts`, 25–40 ms of its ~50 ms commit
-- (crates/bench/NOTES.md, "Session 22"). Now a partition's leader writes the balances it
-- changed about once a second, in a commit's transaction, and moves `balances_through` to that
-- commit's clock. The rows of a partition's accounts hold their balances as of
-- `balances_through`; every transfer after it is replayed on them by whoever reads a balance
-- (in the same snapshot), as the SQLite store's recovery replays its tail.
ALTER TABLE partitions ADD COLUMN balances_through BIGINT NOT NULL DEFAULT 0;
-- Until now every commit wrote its balances: the rows are current as of each clock.
UPDATE partitions SET balances_through = last_timestamp;
