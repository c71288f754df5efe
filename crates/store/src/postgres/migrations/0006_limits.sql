-- Account status and risk limits (changed at run time by the engine's UpdateAccount), and the
-- audit of every change: who (the API key's id), when (the engine's batch time), the changed
-- fields before and after (JSON objects).

ALTER TABLE accounts ADD COLUMN status TEXT NOT NULL DEFAULT 'active'
    CHECK (status IN ('active', 'frozen', 'closed'));
ALTER TABLE accounts ADD COLUMN max_payment BIGINT;                -- NULL: no limit
ALTER TABLE accounts ADD COLUMN daily_outflow BIGINT;              -- NULL: no limit
ALTER TABLE accounts ADD COLUMN velocity_count BIGINT;             -- both NULL: no velocity limit
ALTER TABLE accounts ADD COLUMN velocity_window_seconds BIGINT;
ALTER TABLE accounts ADD CONSTRAINT accounts_velocity_whole
    CHECK ((velocity_count IS NULL) = (velocity_window_seconds IS NULL));

CREATE TABLE account_audit (
    account BYTEA NOT NULL,
    at      BIGINT NOT NULL,       -- unique across the ledger (the engine's timestamps are)
    tenant  BYTEA NOT NULL,
    actor   TEXT NOT NULL,
    before  TEXT NOT NULL,
    after   TEXT NOT NULL,
    PRIMARY KEY (account, at)
);
