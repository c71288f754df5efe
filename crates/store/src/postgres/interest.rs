//! Interest terms and runs in PostgreSQL (see [`crate::interest`]).

use super::batches::snapshot;
use super::codec::{account_from, all, get, id_bytes, int, transfer_from};
use super::reader::PostgresReader;
use crate::interest::{BalanceHistory, InterestColumns, InterestRecord, InterestRun, InterestStore, INTEREST_COLUMNS};
use crate::{Result, StoreError};
use paycore_ledger::interest::Date;
use paycore_ledger::{AccountId, Currency, TenantId};
use postgres::{GenericClient, Row};
use std::collections::HashSet;

fn bytes16(row: &Row, column: &str) -> Result<[u8; 16]> {
    let bytes: &[u8] = get(row, column)?;
    <[u8; 16]>::try_from(bytes).map_err(|_| super::codec::corrupt(column, "an id of wrong length"))
}

fn columns_from(row: &Row) -> Result<InterestColumns> {
    let last_batch: Option<&[u8]> = get(row, "last_batch")?;
    Ok(InterestColumns {
        account: bytes16(row, "account")?,
        tenant: bytes16(row, "tenant")?,
        currency: get(row, "currency")?,
        annual_rate: get(row, "annual_rate")?,
        day_count: get(row, "day_count")?,
        compounding: get(row, "compounding")?,
        posting: get(row, "posting")?,
        min_balance: get(row, "min_balance")?,
        debit_rate: get(row, "debit_rate")?,
        since: get(row, "since")?,
        accrued_through: get(row, "accrued_through")?,
        credit_exact: get(row, "credit_exact")?,
        credit_compounded: get(row, "credit_compounded")?,
        credit_posted: get(row, "credit_posted")?,
        debit_exact: get(row, "debit_exact")?,
        debit_compounded: get(row, "debit_compounded")?,
        debit_posted: get(row, "debit_posted")?,
        last_batch: last_batch
            .map(|b| <[u8; 16]>::try_from(b).map_err(|_| super::codec::corrupt("last_batch", "an id of wrong length")))
            .transpose()?,
        updated_at: get(row, "updated_at")?,
    })
}

fn decode(row: &Row) -> Result<InterestRecord> {
    columns_from(row)?.decode()
}

fn read_one(
    client: &mut impl GenericClient,
    tenant: TenantId,
    account: AccountId,
    lock: bool,
) -> Result<Option<InterestRecord>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    client
        .query_opt(
            &format!("SELECT {INTEREST_COLUMNS} FROM account_interest WHERE account = $1 AND tenant = $2{lock}"),
            &[&id_bytes(account.0), &id_bytes(tenant.0)],
        )?
        .map(|row| decode(&row))
        .transpose()
}

/// Every row, by account (for `verify`).
pub(super) fn all_rows(client: &mut impl GenericClient) -> Result<Vec<InterestRecord>> {
    let rows = client.query(&format!("SELECT {INTEREST_COLUMNS} FROM account_interest ORDER BY account"), &[])?;
    super::codec::all(&rows, decode)
}

impl InterestStore for PostgresReader {
    fn set_interest(&self, record: &InterestRecord) -> Result<InterestRecord> {
        self.with(|client| {
            let mut tx = client.transaction()?;
            let row = match read_one(&mut tx, record.tenant, record.account, true)? {
                Some(stored) => InterestRecord { terms: record.terms, updated_at: record.updated_at, ..stored },
                None => record.clone(),
            };
            let c = InterestColumns::encode(&row);
            tx.execute(
                &format!(
                    "INSERT INTO account_interest ({INTEREST_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
                     ON CONFLICT (account) DO UPDATE SET annual_rate = excluded.annual_rate,
                         day_count = excluded.day_count, compounding = excluded.compounding,
                         posting = excluded.posting, min_balance = excluded.min_balance,
                         debit_rate = excluded.debit_rate, updated_at = excluded.updated_at
                     WHERE account_interest.tenant = excluded.tenant"
                ),
                &[
                    &&c.account[..],
                    &&c.tenant[..],
                    &c.currency,
                    &c.annual_rate,
                    &c.day_count,
                    &c.compounding,
                    &c.posting,
                    &c.min_balance,
                    &c.debit_rate,
                    &c.since,
                    &c.accrued_through,
                    &c.credit_exact,
                    &c.credit_compounded,
                    &c.credit_posted,
                    &c.debit_exact,
                    &c.debit_compounded,
                    &c.debit_posted,
                    &c.last_batch.as_ref().map(|b| &b[..]),
                    &c.updated_at,
                ],
            )?;
            tx.commit()?;
            Ok(row)
        })
    }

    fn remove_interest(&self, tenant: TenantId, account: AccountId) -> Result<bool> {
        self.with(|client| {
            let n = client.execute(
                "DELETE FROM account_interest WHERE account = $1 AND tenant = $2",
                &[&id_bytes(account.0), &id_bytes(tenant.0)],
            )?;
            Ok(n > 0)
        })
    }

    fn interest(&self, tenant: TenantId, account: AccountId) -> Result<Option<InterestRecord>> {
        self.with(|client| read_one(client, tenant, account, false))
    }

    fn interest_accounts(&self, tenant: TenantId) -> Result<Vec<InterestRecord>> {
        self.with(|client| {
            let rows = client.query(
                &format!("SELECT {INTEREST_COLUMNS} FROM account_interest WHERE tenant = $1 ORDER BY account"),
                &[&id_bytes(tenant.0)],
            )?;
            all(&rows, decode)
        })
    }

    fn balance_history(
        &self,
        tenant: TenantId,
        accounts: &[AccountId],
        exclude: &[AccountId],
        after: Date,
    ) -> Result<BalanceHistory> {
        self.with(|client| {
            // One snapshot: the rows, their checkpoint and the transfers since (`balances`),
            // and the history below, all as of one commit.
            let mut tx = snapshot(client)?;
            let ids: Vec<[u8; 16]> = accounts.iter().map(|a| id_bytes(a.0)).collect();
            let rows =
                tx.query("SELECT * FROM accounts WHERE id = ANY($1) AND tenant = $2", &[&ids, &id_bytes(tenant.0)])?;
            let mut now = all(&rows, account_from)?;
            super::balances::bring_up_to_date(&mut tx, &mut now)?;
            let mut history = BalanceHistory::default();
            for account in now {
                history.balances.insert(account.id, account.balances.posted());
            }
            // The accounts' history (see `history`): the runs up to the tenant's watermark,
            // the tail after it. `timestamp > $1` is `>= $1 + 1`.
            let split = super::history::split_of_tenant(&mut tx, tenant)?;
            let after = int(after.end_ns());
            let rows = tx.query(
                &format!(
                    "SELECT * FROM transfers WHERE timestamp > $4 AND timestamp > $1 AND tenant = $2
                         AND kind IN ('single', 'post_pending') AND (debit_account = ANY($3) OR credit_account = ANY($3))
                     UNION ALL
                     SELECT * FROM transfers WHERE id IN (SELECT id FROM ({}) i) AND tenant = $2
                         AND kind IN ('single', 'post_pending')",
                    super::history::indexed_since("$3", "$5", "$4")
                ),
                &[&after, &id_bytes(tenant.0), &ids, &split, &after.saturating_add(1)],
            )?;
            let transfers = all(&rows, transfer_from)?;
            tx.commit()?;
            let wanted: HashSet<AccountId> = accounts.iter().copied().collect();
            let exclude: HashSet<AccountId> = exclude.iter().copied().collect();
            history.add_transfers(&transfers, &wanted, &exclude);
            Ok(history)
        })
    }

    fn create_interest_run(&self, run: &InterestRun<'_>) -> Result<()> {
        self.with(|client| {
            let mut tx = client.transaction()?;
            let b = run.batch;
            let batch = id_bytes(b.id.0);
            let tenant = id_bytes(b.tenant.0);
            let last_batch = (!run.items.is_empty()).then_some(&batch[..]);
            for advance in run.advances {
                let n = tx.execute(
                    "UPDATE account_interest SET accrued_through = $3, credit_exact = $4, credit_compounded = $5,
                         credit_posted = $6, debit_exact = $7, debit_compounded = $8, debit_posted = $9,
                         last_batch = COALESCE($10, last_batch), updated_at = $11
                     WHERE account = $1 AND accrued_through = $2 AND tenant = $12",
                    &[
                        &id_bytes(advance.account.0),
                        &i64::from(advance.from.days()),
                        &i64::from(advance.accrued_through.days()),
                        &advance.accrual.credit.exact.to_string(),
                        &advance.accrual.credit.compounded.to_string(),
                        &int(advance.accrual.credit.posted),
                        &advance.accrual.debit.exact.to_string(),
                        &advance.accrual.debit.compounded.to_string(),
                        &int(advance.accrual.debit.posted),
                        &last_batch,
                        &int(b.created_at),
                        &tenant,
                    ],
                )?;
                if n != 1 {
                    // Dropping the transaction rolls it back.
                    return Err(StoreError::Conflict(format!(
                        "the interest of {} was accrued by another run meanwhile",
                        advance.account
                    )));
                }
            }
            if !run.items.is_empty() {
                tx.execute(
                    "INSERT INTO batches (id, tenant, status, format, mode, on_invalid, payer, currency,
                         total, created_at, validated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    &[
                        &batch,
                        &tenant,
                        &b.status.as_str(),
                        &b.format.as_str(),
                        &b.mode.as_str(),
                        &b.on_invalid.as_str(),
                        &b.payer,
                        &b.currency,
                        &int(b.total),
                        &int(b.created_at),
                        &b.validated_at.map(int),
                    ],
                )?;
                for i in run.items {
                    tx.execute(
                        "INSERT INTO batch_items (batch, idx, line, location, reference, payer_text, payee_text, payer,
                             payee, amount, currency, status)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                        &[
                            &batch,
                            &int(i.index),
                            &int(i.line),
                            &i.location,
                            &i.reference,
                            &i.payer_text,
                            &i.payee_text,
                            &i.payer.map(|a| id_bytes(a.0)),
                            &i.payee.map(|a| id_bytes(a.0)),
                            &i.amount.map(int),
                            &i.currency.map(Currency::code),
                            &i.status.as_str(),
                        ],
                    )?;
                }
                for t in run.totals {
                    tx.execute(
                        "INSERT INTO batch_totals (batch, currency, count, sum) VALUES ($1, $2, $3, $4)",
                        &[&batch, &t.currency.code(), &int(t.count), &t.sum.to_string()],
                    )?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }
}
