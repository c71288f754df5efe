-- A batch's items in blocks: one row per chunk of up to 256 consecutive items, their fields
-- encoded one after the other in `data` (crates/store/src/sqlite/blocks.rs), instead of one
-- `batch_items` row per item. SQLite's cost of an item row was per row (~10k instructions: ~17
-- values bound, the record built, the B-tree insert), whatever its width; a million items are
-- now ~3 900 inserts. An item's status is still derived when read, from `batch_results`
-- (migration 0006); a block holds only what validation wrote.
-- A rowid table with the key in an index, not a WITHOUT ROWID table keyed by (batch, first): a
-- block is ~28 KB, mostly on overflow pages, and SQLite compares an index B-tree's keys on the
-- whole cell, so every step of a seek in a WITHOUT ROWID table of such rows read a block's
-- whole overflow chain (`sqlite3BtreeIndexMoveto` → `accessPayload`: 10-12 % of the server's
-- CPU samples in a 1M-line batch). Here a seek compares the small index entries, and a block's
-- overflow pages are read only when its `data` is.
CREATE TABLE batch_item_blocks (
    batch   BLOB NOT NULL,
    first   INTEGER NOT NULL,  -- index of the block's first item
    last    INTEGER NOT NULL,  -- index of its last item: a batch's blocks never overlap
    invalid INTEGER NOT NULL,  -- how many of its items are invalid (the invalid listing reads only these blocks)
    data    BLOB NOT NULL      -- last: the columns before it are read without its overflow pages
);
CREATE UNIQUE INDEX batch_item_blocks_key ON batch_item_blocks (batch, first);

-- The rows of `batch_items` are then moved into blocks, and the table dropped, by
-- `blocks::convert` (Rust: the encoding is there), in this migration's transaction.
