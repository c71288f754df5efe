-- Balances in `accounts` are written by checkpoints, not by every commit (see SqliteStore):
-- `balances_through` is the timestamp they are valid at; transfers after it are replayed on
-- them at start. Until now every commit wrote them, so they are valid at the last timestamp.
INSERT INTO meta (key, value)
SELECT 'balances_through', value FROM meta WHERE key = 'last_timestamp'
ON CONFLICT (key) DO NOTHING;
