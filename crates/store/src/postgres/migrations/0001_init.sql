-- paycore schema for PostgreSQL, version 1: the same tables as the embedded store's
-- (src/sqlite/migrations), in PostgreSQL's dialect, as that schema stands after its migrations.
-- Ids are 16-byte big-endian BYTEA (time-ordered, so inserts append to the B-trees).
-- Amounts and balance counters are BIGINT in minor units, at most 2^63 - 1.
-- Timestamps are nanoseconds since the Unix epoch, as BIGINT.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('last_timestamp', 0), ('webhook_outbox_seq', 0);

CREATE TABLE tenants (
    id         BYTEA PRIMARY KEY,
    name       TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    tenant     BYTEA NOT NULL REFERENCES tenants (id),
    hash       BYTEA NOT NULL UNIQUE,   -- SHA-256 of the secret; the secret is never stored
    scopes     TEXT NOT NULL,           -- space-separated
    created_at BIGINT NOT NULL,
    revoked    BOOLEAN NOT NULL DEFAULT false
);

-- Balances are written by every commit, in the same transaction as the transfers that move
-- them (see postgres/commit.rs).
CREATE TABLE accounts (
    id              BYTEA PRIMARY KEY,
    tenant          BYTEA NOT NULL,
    currency        TEXT NOT NULL,
    overdraft_limit BIGINT,            -- NULL: unlimited
    reference       TEXT,
    metadata        TEXT,              -- JSON object, opaque to the ledger
    debits_posted   BIGINT NOT NULL,
    credits_posted  BIGINT NOT NULL,
    debits_pending  BIGINT NOT NULL,
    credits_pending BIGINT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE UNIQUE INDEX accounts_reference ON accounts (tenant, reference, currency) WHERE reference IS NOT NULL;

-- Immutable: rows are inserted, never updated or deleted. Account history is read on the two
-- per-account indexes (no separate history store).
CREATE TABLE transfers (
    id             BYTEA PRIMARY KEY,
    tenant         BYTEA NOT NULL,
    debit_account  BYTEA NOT NULL,
    credit_account BYTEA NOT NULL,
    amount         BIGINT NOT NULL,
    currency       TEXT NOT NULL,
    kind           TEXT NOT NULL,
    pending_id     BYTEA,
    expires_at     BIGINT,
    timestamp      BIGINT NOT NULL
);
CREATE INDEX transfers_debit ON transfers (debit_account, timestamp);
CREATE INDEX transfers_credit ON transfers (credit_account, timestamp);
CREATE INDEX transfers_timestamp ON transfers (timestamp);

-- What became of each pending transfer (hold); the transfer row itself never changes.
CREATE TABLE holds (
    id      BYTEA PRIMARY KEY,
    status  TEXT NOT NULL,
    payment BYTEA
);
CREATE INDEX holds_open ON holds (status) WHERE status = 'pending';

CREATE TABLE payments (
    id              BYTEA PRIMARY KEY,
    tenant          BYTEA NOT NULL,
    payer           BYTEA NOT NULL,
    payee           BYTEA NOT NULL,
    amount          BIGINT NOT NULL,
    currency        TEXT NOT NULL,
    capture_method  TEXT NOT NULL,
    status          TEXT NOT NULL,
    description     TEXT,
    failure_code    TEXT,
    amount_captured BIGINT NOT NULL,
    amount_refunded BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    transfer        BYTEA
);
CREATE INDEX payments_open ON payments (status) WHERE status IN ('requires_confirmation', 'requires_capture');

CREATE TABLE refunds (
    id           BYTEA PRIMARY KEY,
    tenant       BYTEA NOT NULL,
    payment      BYTEA NOT NULL,
    amount       BIGINT NOT NULL,
    currency     TEXT NOT NULL,
    status       TEXT NOT NULL,
    failure_code TEXT,
    transfer     BYTEA NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX refunds_payment ON refunds (payment, created_at);

-- Saved responses of requests sent with an Idempotency-Key, written in the same transaction
-- as their effect.
CREATE TABLE idempotency (
    tenant      BYTEA NOT NULL,
    key         TEXT NOT NULL,
    fingerprint BYTEA NOT NULL,
    status      INTEGER NOT NULL,
    body        BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, key)
);

CREATE TABLE batches (
    id               BYTEA PRIMARY KEY,
    tenant           BYTEA NOT NULL,
    status           TEXT NOT NULL,     -- validating, rejected, processing, completed, cancelled
    format           TEXT NOT NULL,
    mode             TEXT NOT NULL,
    on_invalid       TEXT NOT NULL,
    payer            TEXT,
    currency         TEXT,
    expected_count   BIGINT,
    expected_total   TEXT,
    file             TEXT,
    variant          TEXT,
    message_id       TEXT,
    total            BIGINT NOT NULL DEFAULT 0,
    invalid          BIGINT NOT NULL DEFAULT 0,
    succeeded        BIGINT NOT NULL DEFAULT 0,
    failed           BIGINT NOT NULL DEFAULT 0,
    held             BIGINT NOT NULL DEFAULT 0,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    rejection        TEXT,
    created_at       BIGINT NOT NULL,
    validated_at     BIGINT,
    completed_at     BIGINT,
    idempotency_key  TEXT,
    fingerprint      BYTEA
);
CREATE UNIQUE INDEX batches_idempotency ON batches (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX batches_active ON batches (status) WHERE status IN ('validating', 'processing');
CREATE INDEX batches_tenant ON batches (tenant, created_at);

CREATE TABLE batch_totals (
    batch    BYTEA NOT NULL,
    currency TEXT NOT NULL,
    count    BIGINT NOT NULL,
    sum      TEXT NOT NULL,     -- decimal integer of minor units (may pass 2^63)
    PRIMARY KEY (batch, currency)
);

-- Written once, at validation: `invalid` (with its code and message) or `pending`; the rest
-- of an item's status is derived from `batch_results` (see crates/store/src/batches.rs).
CREATE TABLE batch_items (
    batch                  BYTEA NOT NULL,
    idx                    BIGINT NOT NULL,
    line                   BIGINT NOT NULL,
    location               TEXT NOT NULL,
    reference              TEXT,
    instruction_id         TEXT,
    payment_information_id TEXT,
    payer_text             TEXT,
    payee_text             TEXT,
    payer                  BYTEA,
    payee                  BYTEA,
    amount                 BIGINT,
    currency               TEXT,
    status                 TEXT NOT NULL,
    failure_code           TEXT,
    message                TEXT,
    PRIMARY KEY (batch, idx)
);
CREATE INDEX batch_items_invalid ON batch_items (batch, idx) WHERE status = 'invalid';

CREATE TABLE batch_results (
    batch  BYTEA NOT NULL,
    phase  SMALLINT NOT NULL,  -- 0: pay or hold; 1: post or void (atomic batches)
    first  BIGINT NOT NULL,
    last   BIGINT NOT NULL,
    status TEXT NOT NULL,
    code   TEXT,
    PRIMARY KEY (batch, phase, first)
);

-- Events for webhooks, written in the same transaction as the change they describe. Every
-- writer takes the outbox's advisory lock first, so that `seq` grows in commit order and the
-- fan-out's cursor never passes an event that is not committed yet.
CREATE TABLE outbox (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant     BYTEA NOT NULL,
    type       TEXT NOT NULL,
    object     BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE webhook_endpoints (
    id         BYTEA PRIMARY KEY,
    tenant     BYTEA NOT NULL,
    url        TEXT NOT NULL,
    events     TEXT NOT NULL,      -- space-separated event types
    secret     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    deleted    BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant, created_at);

CREATE TABLE webhook_deliveries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint        BYTEA NOT NULL,
    tenant          BYTEA NOT NULL,
    seq             BIGINT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    BIGINT,
    created_at      BIGINT NOT NULL,
    UNIQUE (endpoint, seq)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint, seq);
