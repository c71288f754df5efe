-- Interest-bearing accounts: their terms and where their accrual stands (see store::interest).
-- Decimals are text (rust_decimal's exact form), dates are days since 1970-01-01 (UTC),
-- amounts minor units.
CREATE TABLE account_interest (
    account           BLOB PRIMARY KEY,
    tenant            BLOB NOT NULL,
    currency          TEXT NOT NULL,
    annual_rate       TEXT NOT NULL,     -- a fraction per year: 0.035 is 3.5 %
    day_count         TEXT NOT NULL,     -- act/365, act/360
    compounding       TEXT NOT NULL,     -- daily, monthly, none
    posting           TEXT NOT NULL,     -- daily, monthly
    min_balance       INTEGER NOT NULL,  -- minor units; a day closing below it earns nothing
    debit_rate        TEXT,              -- charged on negative balances; NULL: nothing
    since             INTEGER NOT NULL,  -- the first day accrued
    accrued_through   INTEGER NOT NULL,  -- the last day accrued and posted
    credit_exact      TEXT NOT NULL,     -- cumulative exact credit interest, minor units
    credit_compounded TEXT NOT NULL,     -- the part of it that earns interest
    credit_posted     INTEGER NOT NULL,  -- round(credit_exact) as of the last posting
    debit_exact       TEXT NOT NULL,
    debit_compounded  TEXT NOT NULL,
    debit_posted      INTEGER NOT NULL,
    last_batch        BLOB,              -- the batch that last posted
    updated_at        INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX account_interest_tenant ON account_interest (tenant, account);
