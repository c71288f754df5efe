-- Batch item results as runs: the engine's commit appends one row per run of consecutive items
-- with the same outcome (most of a chunk: every item succeeded) instead of rewriting each item
-- row and moving its entry in a status index. `batch_items` is written once, at validation; an
-- item's status is derived (see crates/store/src/batches.rs): `invalid` from its row, else the
-- result of its latest phase, else, once the batch ended, what the end made of items never sent
-- (cancelled, or voided for an aborted atomic batch), else `pending`.

CREATE TABLE batch_results (
    batch  BLOB NOT NULL,
    phase  INTEGER NOT NULL,  -- 0: pay or hold; 1: post or void (atomic batches)
    first  INTEGER NOT NULL,  -- index of the run's first item
    last   INTEGER NOT NULL,  -- index of its last item: every index from first to last has this result
    status TEXT NOT NULL,     -- succeeded, failed, held, voided
    code   TEXT,              -- failure code of failed and voided items
    PRIMARY KEY (batch, phase, first)
) WITHOUT ROWID;

-- Results stored on the items before this migration, one run per item.
INSERT INTO batch_results (batch, phase, first, last, status, code)
    SELECT batch, 0, idx, idx, status, failure_code FROM batch_items
    WHERE status IN ('succeeded', 'failed', 'held', 'voided');

-- An item row now holds only its validation: `invalid` (with its code and message) or `pending`.
UPDATE batch_items SET status = 'pending', failure_code = NULL WHERE status <> 'invalid';
DROP INDEX batch_items_status;
CREATE INDEX batch_items_invalid ON batch_items (batch, idx) WHERE status = 'invalid';
