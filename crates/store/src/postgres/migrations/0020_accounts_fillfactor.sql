-- Every commit rewrites the balances of the accounts it touched, and a bulk batch touches most
-- of a page's accounts at once: a page filled to the brim has room for few of the new row
-- versions, and each version that does not fit its page is a non-HOT update, with a new entry
-- in every index of `accounts` (primary key, tenant). Half-filled pages keep a whole batch's
-- new versions beside the old ones (pruned when the next batch comes), so every balance
-- update is HOT. Priced in psql (crates/bench/NOTES.md, "PostgreSQL bulk commit"): 7 900 of
-- 10 000 accounts updated by one statement, 9 600–9 900 WAL records and 27–44 ms at
-- fillfactor 100 (a fifth of the updates not HOT), 7 900–8 300 records and 18–24 ms at 50.
-- CLUSTER rewrites the table now, so that existing rows get the room too.
ALTER TABLE accounts SET (fillfactor = 50);
CLUSTER accounts USING accounts_pkey;
