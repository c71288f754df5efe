-- Tenant names, webhook endpoints and the delivery state of each event to each endpoint.

ALTER TABLE tenants ADD COLUMN name TEXT;

CREATE TABLE webhook_endpoints (
    id         BLOB PRIMARY KEY,
    tenant     BLOB NOT NULL,
    url        TEXT NOT NULL,
    events     TEXT NOT NULL,      -- space-separated event types
    secret     TEXT NOT NULL,      -- the signing secret (whsec_…); HMAC needs it in clear
    created_at INTEGER NOT NULL,
    deleted    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant, created_at);

-- One row per (endpoint, event) once the delivery worker has fanned the event out.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint        BLOB NOT NULL,
    tenant          BLOB NOT NULL,
    seq             INTEGER NOT NULL,  -- outbox.seq of the event
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,           -- NULL once delivered or given up
    last_status     INTEGER,           -- HTTP status of the last attempt
    last_error      TEXT,
    delivered_at    INTEGER,
    created_at      INTEGER NOT NULL,
    UNIQUE (endpoint, seq)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint, seq);

-- How far the worker has fanned out the outbox.
INSERT INTO meta (key, value) VALUES ('webhook_outbox_seq', 0);
