-- API keys expire, and rotate with an overlap: for a while after a rotation both the new
-- secret (`hash`) and the one it replaced (`previous_hash`, until `previous_expires_at`) work.
-- Times are nanoseconds since the Unix epoch; NULL `expires_at`: the key never expires.
ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;
ALTER TABLE api_keys ADD COLUMN previous_hash BYTEA;
ALTER TABLE api_keys ADD COLUMN previous_expires_at BIGINT;
CREATE UNIQUE INDEX api_keys_previous_hash ON api_keys (previous_hash);

-- Each key's shared rate-limit bucket (`AdminStore::take_rate_tokens`): micro-tokens left as
-- of `refilled_at`. Cluster mode's API nodes take tokens from it in leases.
CREATE TABLE rate_limits (
    key          TEXT PRIMARY KEY,   -- the API key's id
    micro_tokens BIGINT NOT NULL,
    refilled_at  BIGINT NOT NULL
);
