-- `transfers_timestamp` serves ranges only: the transfers after a clearing window's last close,
-- an interest accrual's transfers after its last day, `verify`'s walk. Transfers are only
-- ever appended, in the order of their timestamps (each partition's clock moves forward, and
-- partitions commit at about the same wall time), so the heap is already in timestamp order
-- and a BRIN index (the least and greatest timestamp of each range of 128 pages) finds the same
-- rows for a few pages of index, where the B-tree took an entry per transfer: measured on a bulk
-- commit of 8 189 transfers, the INSERT took 74–77 ms with the B-tree and 66–68 ms with this
-- (crates/bench/NOTES.md, "Cluster mode, round two").
DROP INDEX transfers_timestamp;
CREATE INDEX transfers_timestamp ON transfers USING brin (timestamp);
