-- Interest-bearing accounts: their terms and where their accrual stands (see store::interest).
-- Decimals are text (rust_decimal's exact form), dates are days since 1970-01-01 (UTC),
-- amounts minor units.
CREATE TABLE account_interest (
    account           BYTEA PRIMARY KEY,
    tenant            BYTEA NOT NULL,
    currency          TEXT NOT NULL,
    annual_rate       TEXT NOT NULL,     -- a fraction per year: 0.035 is 3.5 %
    day_count         TEXT NOT NULL,     -- act/365, act/360
    compounding       TEXT NOT NULL,     -- daily, monthly, none
    posting           TEXT NOT NULL,     -- daily, monthly
    min_balance       BIGINT NOT NULL,  -- minor units; a day closing below it earns nothing
    debit_rate        TEXT,              -- charged on negative balances; NULL: nothing
    since             BIGINT NOT NULL,  -- the first day accrued
    accrued_through   BIGINT NOT NULL,  -- the last day accrued and posted
    credit_exact      TEXT NOT NULL,     -- cumulative exact credit interest, minor units
    credit_compounded TEXT NOT NULL,     -- the part of it that earns interest
    credit_posted     BIGINT NOT NULL,  -- round(credit_exact) as of the last posting
    debit_exact       TEXT NOT NULL,
    debit_compounded  TEXT NOT NULL,
    debit_posted      BIGINT NOT NULL,
    last_batch        BYTEA,              -- the batch that last posted
    updated_at        BIGINT NOT NULL
);
CREATE INDEX account_interest_tenant ON account_interest (tenant, account);
