-- Scan to pay: the merchant a payment's QR code names (EMVCo tags 59, 60, 58 and 52). NULL for
-- a payment made before. (A payment without a payer stores an empty `payer` blob: see codec.)
ALTER TABLE payments ADD COLUMN qr_merchant_name TEXT;
ALTER TABLE payments ADD COLUMN qr_merchant_city TEXT;
ALTER TABLE payments ADD COLUMN qr_country TEXT;
ALTER TABLE payments ADD COLUMN qr_category_code TEXT;
