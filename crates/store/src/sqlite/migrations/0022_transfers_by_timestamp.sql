-- `transfers` keyed by its timestamp (issue 18): the ledger gives every transfer its own
-- timestamp, increasing (`State::tick`), so it is the table's `INTEGER PRIMARY KEY`, its rowid:
-- a commit appends to a B-tree of integer keys (SQLite's cheapest insert, and a leaf split
-- that moves nothing), and the one index left is `UNIQUE (id)`, ~26 bytes an entry. The layout
-- it replaces had two B-trees of wide records per row: the `WITHOUT ROWID` table keyed by the
-- 16-byte id and the covering `transfers_timestamp (timestamp, debit_account, credit_account)`
-- index, ~57 bytes an entry. Everything that read transfers by timestamp (the history indexer,
-- listings' unindexed tail, limits, interest, clearing, replay, verify) now reads a range of
-- the table's own key. The columns keep their order, so `SELECT *` reads the same.
CREATE TABLE transfers_rebuilt (
    id             BLOB NOT NULL,
    tenant         BLOB NOT NULL,
    debit_account  BLOB NOT NULL,
    credit_account BLOB NOT NULL,
    amount         INTEGER NOT NULL,
    currency       TEXT NOT NULL,
    kind           TEXT NOT NULL,
    pending_id     BLOB,
    expires_at     INTEGER,
    timestamp      INTEGER PRIMARY KEY
);
INSERT INTO transfers_rebuilt (id, tenant, debit_account, credit_account, amount, currency, kind, pending_id,
    expires_at, timestamp)
SELECT id, tenant, debit_account, credit_account, amount, currency, kind, pending_id, expires_at, timestamp
FROM transfers ORDER BY timestamp;
DROP TABLE transfers;
ALTER TABLE transfers_rebuilt RENAME TO transfers;
CREATE UNIQUE INDEX transfers_id ON transfers (id);
