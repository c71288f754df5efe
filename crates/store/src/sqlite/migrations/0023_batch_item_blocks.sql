-- A batch's items in blocks: one row per chunk of up to 256 consecutive items, their fields
-- encoded one after the other in `data` (crates/store/src/sqlite/blocks.rs), instead of one
-- `batch_items` row per item. SQLite's cost of an item row was per row (~10k instructions: ~17
-- values bound, the record built, the B-tree insert), whatever its width; a million items are
-- now ~3 900 inserts. An item's status is still derived when read, from `batch_results`
-- (migration 0006); a block holds only what validation wrote.
CREATE TABLE batch_item_blocks (
    batch   BLOB NOT NULL,
    first   INTEGER NOT NULL,  -- index of the block's first item
    last    INTEGER NOT NULL,  -- index of its last item: a batch's blocks never overlap
    invalid INTEGER NOT NULL,  -- how many of its items are invalid (the invalid listing reads only these blocks)
    data    BLOB NOT NULL,
    PRIMARY KEY (batch, first)
) WITHOUT ROWID;

-- The rows of `batch_items` are then moved into blocks, and the table dropped, by
-- `blocks::convert` (Rust: the encoding is there), in this migration's transaction.
