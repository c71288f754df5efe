-- Account statements (camt.053) write a batch item's remittance information beside its
-- end-to-end id: kept from the file (pain.001 `RmtInf/Ustrd`), NULL for other formats.
ALTER TABLE batch_items ADD COLUMN remittance TEXT;
