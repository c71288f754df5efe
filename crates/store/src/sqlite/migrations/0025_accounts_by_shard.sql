-- `accounts` keyed by the balance shard first, then the id (`store::verify::balance_shard`:
-- the low four bits of the id's two 64-bit halves, XORed). A shard's checkpoint
-- (`meta.balances_through/N`) rewrites the balances of the accounts of one shard; keyed by the
-- id alone, those rows were spread over every page of the table (10 000 accounts: a shard of
-- ~650 rows dirtied 177 of its 185 pages, so sixteen shard checkpoints a second wrote the
-- whole table sixteen times). Keyed by the shard first, a shard's rows share ~1/16 of the pages.
--
-- The shard is computed here from the id's text in hexadecimal: character 16 is the low
-- nibble of the high half, character 32 the low nibble of the low half; a ^ b = (a | b) - (a & b).
CREATE TABLE accounts_by_shard (
    shard                   INTEGER NOT NULL,
    id                      BLOB NOT NULL,
    tenant                  BLOB NOT NULL,
    currency                TEXT NOT NULL,
    overdraft_limit         INTEGER,           -- NULL: unlimited
    reference               TEXT,
    metadata                TEXT,              -- JSON object, opaque to the ledger
    debits_posted           INTEGER NOT NULL,
    credits_posted          INTEGER NOT NULL,
    debits_pending          INTEGER NOT NULL,
    credits_pending         INTEGER NOT NULL,
    created_at              INTEGER NOT NULL,
    status                  TEXT NOT NULL DEFAULT 'active',  -- active | frozen | closed
    max_payment             INTEGER,           -- NULL: no limit
    daily_outflow           INTEGER,           -- NULL: no limit
    velocity_count          INTEGER,           -- both NULL: no velocity limit
    velocity_window_seconds INTEGER,
    PRIMARY KEY (shard, id)
) WITHOUT ROWID;

INSERT INTO accounts_by_shard
SELECT ((h + l) - 2 * (h & l)), id, tenant, currency, overdraft_limit, reference, metadata,
       debits_posted, credits_posted, debits_pending, credits_pending, created_at,
       status, max_payment, daily_outflow, velocity_count, velocity_window_seconds
FROM (SELECT *,
             instr('0123456789ABCDEF', substr(hex(id), 16, 1)) - 1 AS h,
             instr('0123456789ABCDEF', substr(hex(id), 32, 1)) - 1 AS l
      FROM accounts);

DROP TABLE accounts;
ALTER TABLE accounts_by_shard RENAME TO accounts;
-- A reference names at most one account per currency (as in 0001).
CREATE UNIQUE INDEX accounts_reference ON accounts (tenant, reference, currency) WHERE reference IS NOT NULL;
