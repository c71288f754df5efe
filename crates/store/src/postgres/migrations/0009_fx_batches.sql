-- Cross-currency batch items: the batch's quote per currency pair (a `fx_quotes` row that
-- names its batch), and each cross-currency item's payer side, fixed at validation.
ALTER TABLE fx_quotes ADD COLUMN batch BYTEA;
CREATE INDEX fx_quotes_batch ON fx_quotes (batch) WHERE batch IS NOT NULL;

CREATE TABLE batch_item_fx (
    batch         BYTEA NOT NULL,
    idx           BIGINT NOT NULL,
    quote         BYTEA NOT NULL,
    source_amount BIGINT NOT NULL,
    fee           BIGINT NOT NULL,
    PRIMARY KEY (batch, idx)
);
