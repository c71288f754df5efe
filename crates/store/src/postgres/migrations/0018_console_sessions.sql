-- Console sessions signed out before they expire (`AdminStore::end_console_session`): every
-- API node refuses their cookies. `id` is the session's random 16 bytes; `expires_at` (ns since
-- the Unix epoch) is when the cookie would have expired anyway, after which the row is pruned
-- (`RetentionStore::prune`).
CREATE TABLE console_sessions_ended (
    id         BYTEA PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX console_sessions_ended_expires_at ON console_sessions_ended (expires_at);
