-- Clearing (settlement) windows. Per tenant and currency one window is open at all times; it is
-- implicit (opened at the last close, or at the beginning of time) and holds no row. A close
-- writes the closed window and its positions in the engine's commit (see src/clearing.rs).
-- Timestamps are the engine's clock, in nanoseconds; a window holds the posted transfers of its
-- tenant and currency with opened_at < timestamp <= closed_at.
CREATE TABLE clearing_windows (
    id           BYTEA PRIMARY KEY,
    tenant       BYTEA NOT NULL,
    currency     TEXT NOT NULL,
    sequence     BIGINT NOT NULL,     -- 1, 2, … per tenant and currency
    opened_at    BIGINT NOT NULL,     -- the previous window's closed_at; 0 for the first
    closed_at    BIGINT NOT NULL,
    gross_volume BIGINT NOT NULL,     -- the sum of the positions' debits
    accounts     BIGINT NOT NULL      -- the number of positions
);
CREATE UNIQUE INDEX clearing_windows_sequence ON clearing_windows (tenant, currency, sequence);
CREATE INDEX clearing_windows_closed ON clearing_windows (tenant, closed_at);

-- One row per account that moved posted money in a closed window; amounts in minor units,
-- balances posted (credits - debits): net = credits - debits, closing = opening + net.
CREATE TABLE clearing_positions (
    window_id BYTEA NOT NULL,
    account   BYTEA NOT NULL,
    opening   BIGINT NOT NULL,
    debits    BIGINT NOT NULL,
    credits   BIGINT NOT NULL,
    net       BIGINT NOT NULL,
    closing   BIGINT NOT NULL,
    PRIMARY KEY (window_id, account)
);
