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
-- A leader of the version before writes its balances with every commit and never moves
-- `balances_through`: every reader of this version would replay its transfers on rows that
-- already hold them. A new epoch fences such a leader at its next commit (its build refuses
-- to open this schema again, so it cannot take the partition back).
UPDATE partitions SET epoch = epoch + 1;
