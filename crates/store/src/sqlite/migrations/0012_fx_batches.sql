-- Cross-currency batch items: the batch's quote per currency pair (a `fx_quotes` row that
-- names its batch), and each cross-currency item's payer side, fixed at validation.
ALTER TABLE fx_quotes ADD COLUMN batch BLOB;
CREATE INDEX fx_quotes_batch ON fx_quotes (batch) WHERE batch IS NOT NULL;

CREATE TABLE batch_item_fx (
    batch         BLOB NOT NULL,
    idx           INTEGER NOT NULL,
    quote         BLOB NOT NULL,
    source_amount INTEGER NOT NULL,
    fee           INTEGER NOT NULL,
    PRIMARY KEY (batch, idx)
) WITHOUT ROWID;
