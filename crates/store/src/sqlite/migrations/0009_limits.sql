-- Account status and risk limits (changed at run time by the engine's UpdateAccount), and the
-- audit of every change: who (the API key's id), when (the engine's batch time), the changed
-- fields before and after (JSON objects).

ALTER TABLE accounts ADD COLUMN status TEXT NOT NULL DEFAULT 'active';  -- active | frozen | closed
ALTER TABLE accounts ADD COLUMN max_payment INTEGER;               -- NULL: no limit
ALTER TABLE accounts ADD COLUMN daily_outflow INTEGER;             -- NULL: no limit
ALTER TABLE accounts ADD COLUMN velocity_count INTEGER;            -- both NULL: no velocity limit
ALTER TABLE accounts ADD COLUMN velocity_window_seconds INTEGER;

CREATE TABLE account_audit (
    account BLOB NOT NULL,
    at      INTEGER NOT NULL,      -- unique across the ledger (the engine's timestamps are)
    tenant  BLOB NOT NULL,
    actor   TEXT NOT NULL,
    before  TEXT NOT NULL,
    after   TEXT NOT NULL,
    PRIMARY KEY (account, at)
) WITHOUT ROWID;
