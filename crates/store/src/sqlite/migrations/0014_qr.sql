-- Scan to pay. A payment may wait without a payer until the scan of its QR code names one, so
-- `payer` becomes nullable; SQLite changes a column's constraint only by rebuilding the table
-- (same columns, same order, same index). The merchant its QR code names (EMVCo tags 59, 60,
-- 58 and 52): NULL for a payment made before.
CREATE TABLE payments_rebuilt (
    id              BLOB PRIMARY KEY,
    tenant          BLOB NOT NULL,
    payer           BLOB,
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
    transfer        BLOB,
    fx_quote        BLOB,
    fx_rate         TEXT,
    fx_currency     TEXT,
    fx_amount       INTEGER,
    fx_fee          INTEGER,
    qr_merchant_name TEXT,
    qr_merchant_city TEXT,
    qr_country       TEXT,
    qr_category_code TEXT
) WITHOUT ROWID;
INSERT INTO payments_rebuilt (id, tenant, payer, payee, amount, currency, capture_method, status, description,
    failure_code, amount_captured, amount_refunded, expires_at, created_at, updated_at, transfer,
    fx_quote, fx_rate, fx_currency, fx_amount, fx_fee)
SELECT id, tenant, payer, payee, amount, currency, capture_method, status, description,
    failure_code, amount_captured, amount_refunded, expires_at, created_at, updated_at, transfer,
    fx_quote, fx_rate, fx_currency, fx_amount, fx_fee
FROM payments;
DROP TABLE payments;
ALTER TABLE payments_rebuilt RENAME TO payments;
CREATE INDEX payments_open ON payments (status) WHERE status IN ('requires_confirmation', 'requires_capture');
