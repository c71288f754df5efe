-- Account history built off the commit (postgres/history.rs), as the SQLite store's is.
--
-- Until now every transfer took an entry in two per-account B-trees, `transfers_debit` and
-- `transfers_credit`, inside the commit: random pages of two indexes that grow with the table,
-- each written to the WAL whole once per checkpoint. A bulk batch of 8 189 transfers spent
-- more than half of its commit there (crates/bench/NOTES.md, "Session 21"). Now a background
-- indexer in each engine process reads what its partitions committed since their watermark and
-- writes each account's entries of the pass as runs of up to 48: one row and one index entry a
-- run instead of one index entry a transfer and side. A run's entries are in time order, and
-- the runs of one account never overlap in time, so `(account, last_ts)` orders them all.
CREATE TABLE account_runs (
    account    BYTEA NOT NULL,
    first_ts   BIGINT NOT NULL,
    last_ts    BIGINT NOT NULL,
    timestamps BIGINT[] NOT NULL,
    ids        BYTEA[] NOT NULL,
    PRIMARY KEY (account, last_ts)
);

-- Per partition: every transfer of its tenants up to `through` is in `account_runs`, and none
-- after it. A read takes the runs up to its partition's watermark and the transfers after it
-- (the unindexed tail, found by `transfers_timestamp`). No row yet: nothing indexed (0).
-- Existing transfers are indexed by the first passes after this migration, not by it.
CREATE TABLE history_watermarks (
    partition INTEGER PRIMARY KEY,
    through   BIGINT NOT NULL
);

DROP INDEX transfers_debit;
DROP INDEX transfers_credit;

-- The tail and the indexer's passes are read by time, on every listing: a B-tree again
-- (0019 made it BRIN). Timestamps only grow, so each insert lands on the rightmost leaf. The
-- BRIN index was planned as a sequential scan until `ANALYZE` had measured the column's
-- correlation (a fresh or fast-growing table), and the pages it had not summarized yet
-- (inserted since the last vacuum) were read whole; a B-tree range is exact from the start.
DROP INDEX transfers_timestamp;
CREATE INDEX transfers_timestamp ON transfers (timestamp);
