-- NACHA returns and notifications of change (issue 15).
--
-- Every valid item of a NACHA batch, by trace number, so that a return (Addenda 99) or a
-- notification of change (Addenda 98) finds the item it is about: written when the batch's
-- validation ends in `processing`. Trace numbers repeat across batches (and files), so the key
-- holds the batch and index too; matching takes the newest.
CREATE TABLE nacha_traces (
    tenant BLOB NOT NULL,
    trace  TEXT NOT NULL,
    batch  BLOB NOT NULL,
    idx    INTEGER NOT NULL,
    PRIMARY KEY (tenant, trace, batch, idx)
) WITHOUT ROWID;

-- A return or NOC entry (an item of its own batch) and the original item it is about.
CREATE TABLE batch_item_links (
    batch          BLOB NOT NULL,     -- the return or NOC item
    idx            INTEGER NOT NULL,
    tenant         BLOB NOT NULL,
    kind           TEXT NOT NULL,     -- return, change
    original_batch BLOB NOT NULL,
    original_idx   INTEGER NOT NULL,
    code           TEXT NOT NULL,     -- R-code or C-code
    detail         TEXT,              -- corrected data (NOC) or addenda information (return)
    amount         INTEGER NOT NULL,  -- the original's amount (NOC: 0)
    currency       TEXT NOT NULL,
    -- A return holds its original while active: one active return per original (the index
    -- below). A later return of an original whose reversal failed takes the hold over.
    active         INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (batch, idx)
) WITHOUT ROWID;
CREATE INDEX batch_item_links_original ON batch_item_links (original_batch, original_idx);
CREATE UNIQUE INDEX batch_item_links_one_return ON batch_item_links (original_batch, original_idx)
    WHERE kind = 'return' AND active = 1;
