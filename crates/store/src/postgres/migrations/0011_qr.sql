-- Scan to pay: a payment can be made without a payer; the scan of its QR code names one.
ALTER TABLE payments ALTER COLUMN payer DROP NOT NULL;
-- The merchant a payment's QR code names (EMVCo tags 59, 60, 58 and 52). NULL for a payment
-- made before.
ALTER TABLE payments ADD COLUMN qr_merchant_name TEXT;
ALTER TABLE payments ADD COLUMN qr_merchant_city TEXT;
ALTER TABLE payments ADD COLUMN qr_country TEXT;
ALTER TABLE payments ADD COLUMN qr_category_code TEXT;
