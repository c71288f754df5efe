-- FX: a tenant's rates, its fee, quotes, and the quoted side of cross-currency payments.
CREATE TABLE fx_rates (
    tenant     BLOB NOT NULL,
    base       TEXT NOT NULL,
    quote      TEXT NOT NULL,
    rate       TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, base, quote)
) WITHOUT ROWID;

CREATE TABLE fx_settings (
    tenant     BLOB PRIMARY KEY,
    fee_bps    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE fx_quotes (
    id            BLOB PRIMARY KEY,
    tenant        BLOB NOT NULL,
    from_currency TEXT NOT NULL,
    to_currency   TEXT NOT NULL,
    rate          TEXT NOT NULL,
    source_amount INTEGER NOT NULL,
    target_amount INTEGER NOT NULL,
    fee           INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_by       BLOB
) WITHOUT ROWID;

ALTER TABLE payments ADD COLUMN fx_quote BLOB;
ALTER TABLE payments ADD COLUMN fx_rate TEXT;
ALTER TABLE payments ADD COLUMN fx_currency TEXT;
ALTER TABLE payments ADD COLUMN fx_amount INTEGER;
ALTER TABLE payments ADD COLUMN fx_fee INTEGER;
