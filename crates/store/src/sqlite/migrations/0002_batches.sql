-- Batches (files or bulk calls) and their items, and the outbox of events.

CREATE TABLE batches (
    id               BLOB PRIMARY KEY,
    tenant           BLOB NOT NULL,
    status           TEXT NOT NULL,     -- validating, rejected, processing, completed, cancelled
    format           TEXT NOT NULL,     -- csv, jsonl, pain.001, nacha, json
    mode             TEXT NOT NULL,     -- best_effort, atomic
    on_invalid       TEXT NOT NULL,     -- reject_file, skip_invalid
    payer            TEXT,              -- batch-level payer (account id or reference), as given
    currency         TEXT,              -- batch-level currency, as given
    expected_count   INTEGER,
    expected_total   TEXT,              -- decimal text, as given
    file             TEXT,              -- path of the stored upload, relative to the data folder
    variant          TEXT,              -- e.g. pain.001.001.03
    message_id       TEXT,              -- pain.001 GrpHdr/MsgId
    total            INTEGER NOT NULL DEFAULT 0,  -- items in the file
    invalid          INTEGER NOT NULL DEFAULT 0,
    succeeded        INTEGER NOT NULL DEFAULT 0,
    failed           INTEGER NOT NULL DEFAULT 0,
    held             INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    rejection        TEXT,              -- JSON: why the whole batch was rejected
    created_at       INTEGER NOT NULL,
    validated_at     INTEGER,
    completed_at     INTEGER,
    idempotency_key  TEXT,              -- the upload's Idempotency-Key, if any
    fingerprint      BLOB               -- SHA-256 of the upload (format, parameters and bytes)
) WITHOUT ROWID;
CREATE UNIQUE INDEX batches_idempotency ON batches (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX batches_active ON batches (status) WHERE status IN ('validating', 'processing');
CREATE INDEX batches_tenant ON batches (tenant, created_at);

-- Control totals of the valid items, per currency.
CREATE TABLE batch_totals (
    batch    BLOB NOT NULL,
    currency TEXT NOT NULL,
    count    INTEGER NOT NULL,
    sum      TEXT NOT NULL,     -- decimal integer of minor units (may pass 2^63)
    PRIMARY KEY (batch, currency)
) WITHOUT ROWID;

CREATE TABLE batch_items (
    batch                  BLOB NOT NULL,
    idx                    INTEGER NOT NULL,
    line                   INTEGER NOT NULL,
    location               TEXT NOT NULL,
    reference              TEXT,
    instruction_id         TEXT,
    payment_information_id TEXT,
    payer_text             TEXT,
    payee_text             TEXT,
    payer                  BLOB,           -- resolved account id
    payee                  BLOB,
    amount                 INTEGER,
    currency               TEXT,
    status                 TEXT NOT NULL,  -- invalid, pending, held, succeeded, failed, voided, cancelled
    failure_code           TEXT,
    message                TEXT,
    PRIMARY KEY (batch, idx)
) WITHOUT ROWID;
CREATE INDEX batch_items_status ON batch_items (batch, status, idx);

-- Events for webhooks, written in the same transaction as the change they describe.
CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant     BLOB NOT NULL,
    type       TEXT NOT NULL,
    object     BLOB NOT NULL,  -- id of the object the event is about
    created_at INTEGER NOT NULL
);
