-- paycore schema, version 1.
-- Ids are 16-byte big-endian blobs (time-ordered, so inserts append to the B-tree).
-- Amounts and balance counters are integers in minor units, at most 2^63 - 1.
-- Timestamps are nanoseconds since the Unix epoch.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE tenants (
    id         BLOB PRIMARY KEY,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    tenant     BLOB NOT NULL REFERENCES tenants (id),
    hash       BLOB NOT NULL UNIQUE,   -- SHA-256 of the secret; the secret is never stored
    scopes     TEXT NOT NULL,          -- space-separated
    created_at INTEGER NOT NULL,
    revoked    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE accounts (
    id              BLOB PRIMARY KEY,
    tenant          BLOB NOT NULL,
    currency        TEXT NOT NULL,
    overdraft_limit INTEGER,           -- NULL: unlimited
    reference       TEXT,
    metadata        TEXT,              -- JSON object, opaque to the ledger
    debits_posted   INTEGER NOT NULL,
    credits_posted  INTEGER NOT NULL,
    debits_pending  INTEGER NOT NULL,
    credits_pending INTEGER NOT NULL,
    created_at      INTEGER NOT NULL
) WITHOUT ROWID;
-- A reference names at most one account per currency (a multi-currency IBAN is one account per
-- currency).
CREATE UNIQUE INDEX accounts_reference ON accounts (tenant, reference, currency) WHERE reference IS NOT NULL;

-- Immutable: rows are inserted, never updated or deleted.
CREATE TABLE transfers (
    id             BLOB PRIMARY KEY,
    tenant         BLOB NOT NULL,
    debit_account  BLOB NOT NULL,
    credit_account BLOB NOT NULL,
    amount         INTEGER NOT NULL,
    currency       TEXT NOT NULL,
    kind           TEXT NOT NULL,
    pending_id     BLOB,
    expires_at     INTEGER,
    timestamp      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX transfers_debit ON transfers (debit_account, timestamp);
CREATE INDEX transfers_credit ON transfers (credit_account, timestamp);

-- What became of each pending transfer (hold); the transfer row itself never changes.
CREATE TABLE holds (
    id      BLOB PRIMARY KEY REFERENCES transfers (id),
    status  TEXT NOT NULL,
    payment BLOB
) WITHOUT ROWID;
CREATE INDEX holds_open ON holds (status) WHERE status = 'pending';

CREATE TABLE payments (
    id              BLOB PRIMARY KEY,
    tenant          BLOB NOT NULL,
    payer           BLOB NOT NULL,
    payee           BLOB NOT NULL,
    amount          INTEGER NOT NULL,
    currency        TEXT NOT NULL,
    capture_method  TEXT NOT NULL,
    status          TEXT NOT NULL,
    description     TEXT,
    failure_code    TEXT,
    amount_captured INTEGER NOT NULL,
    amount_refunded INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    transfer        BLOB
) WITHOUT ROWID;
CREATE INDEX payments_open ON payments (status) WHERE status IN ('requires_confirmation', 'requires_capture');

CREATE TABLE refunds (
    id           BLOB PRIMARY KEY,
    tenant       BLOB NOT NULL,
    payment      BLOB NOT NULL,
    amount       INTEGER NOT NULL,
    currency     TEXT NOT NULL,
    status       TEXT NOT NULL,
    failure_code TEXT,
    transfer     BLOB NOT NULL,
    created_at   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX refunds_payment ON refunds (payment, created_at);

-- Saved responses of requests sent with an Idempotency-Key, written in the same transaction
-- as their effect.
CREATE TABLE idempotency (
    tenant      BLOB NOT NULL,
    key         TEXT NOT NULL,
    fingerprint BLOB NOT NULL,
    status      INTEGER NOT NULL,
    body        BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;
