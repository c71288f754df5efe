-- FX: a tenant's rates, its fee, quotes, and the quoted side of cross-currency payments.
CREATE TABLE fx_rates (
    tenant     BYTEA NOT NULL,
    base       TEXT NOT NULL,
    quote      TEXT NOT NULL,
    rate       TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, base, quote)
);

CREATE TABLE fx_settings (
    tenant     BYTEA PRIMARY KEY,
    fee_bps    BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE fx_quotes (
    id            BYTEA PRIMARY KEY,
    tenant        BYTEA NOT NULL,
    from_currency TEXT NOT NULL,
    to_currency   TEXT NOT NULL,
    rate          TEXT NOT NULL,
    source_amount BIGINT NOT NULL,
    target_amount BIGINT NOT NULL,
    fee           BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    used_by       BYTEA
);

ALTER TABLE payments ADD COLUMN fx_quote BYTEA;
ALTER TABLE payments ADD COLUMN fx_rate TEXT;
ALTER TABLE payments ADD COLUMN fx_currency TEXT;
ALTER TABLE payments ADD COLUMN fx_amount BIGINT;
ALTER TABLE payments ADD COLUMN fx_fee BIGINT;
