//! Interest terms and runs in SQLite (see [`crate::interest`]).

use super::codec::{account_from, id_blob, int, shard_key, transfer_from};
use super::fresh::poisoned;
use super::reader::SqliteReader;
use crate::interest::{BalanceHistory, InterestColumns, InterestRecord, InterestRun, InterestStore, INTEREST_COLUMNS};
use crate::{Result, StoreError};
use paycore_ledger::{AccountId, TenantId};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use std::collections::HashSet;

fn columns_from(row: &Row) -> rusqlite::Result<InterestColumns> {
    Ok(InterestColumns {
        account: row.get(0)?,
        tenant: row.get(1)?,
        currency: row.get(2)?,
        annual_rate: row.get(3)?,
        day_count: row.get(4)?,
        compounding: row.get(5)?,
        posting: row.get(6)?,
        min_balance: row.get(7)?,
        debit_rate: row.get(8)?,
        since: row.get(9)?,
        accrued_through: row.get(10)?,
        credit_exact: row.get(11)?,
        credit_compounded: row.get(12)?,
        credit_posted: row.get(13)?,
        debit_exact: row.get(14)?,
        debit_compounded: row.get(15)?,
        debit_posted: row.get(16)?,
        last_batch: row.get(17)?,
        updated_at: row.get(18)?,
    })
}

fn read_one(conn: &Connection, tenant: TenantId, account: AccountId) -> Result<Option<InterestRecord>> {
    conn.prepare_cached(&format!("SELECT {INTEREST_COLUMNS} FROM account_interest WHERE account = ?1 AND tenant = ?2"))?
        .query_row(params![id_blob(account.0), id_blob(tenant.0)], columns_from)
        .optional()?
        .map(InterestColumns::decode)
        .transpose()
}

/// Writes every column of the row (insert or replace).
fn write(conn: &Connection, c: &InterestColumns) -> Result<()> {
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO account_interest ({INTEREST_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"
    ))?
    .execute(params![
        c.account,
        c.tenant,
        c.currency,
        c.annual_rate,
        c.day_count,
        c.compounding,
        c.posting,
        c.min_balance,
        c.debit_rate,
        c.since,
        c.accrued_through,
        c.credit_exact,
        c.credit_compounded,
        c.credit_posted,
        c.debit_exact,
        c.debit_compounded,
        c.debit_posted,
        c.last_batch,
        c.updated_at,
    ])?;
    Ok(())
}

/// Every row, by account (for `verify`).
pub(super) fn all_rows(conn: &Connection) -> Result<Vec<InterestRecord>> {
    let mut stmt = conn.prepare(&format!("SELECT {INTEREST_COLUMNS} FROM account_interest ORDER BY account"))?;
    let rows = stmt.query_map([], columns_from)?;
    rows.map(|r| r.map_err(StoreError::from).and_then(InterestColumns::decode)).collect()
}

impl InterestStore for SqliteReader {
    fn set_interest(&self, record: &InterestRecord) -> Result<InterestRecord> {
        self.with(|conn| {
            let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
            let row = match read_one(&tx, record.tenant, record.account)? {
                Some(stored) => InterestRecord { terms: record.terms, updated_at: record.updated_at, ..stored },
                None => record.clone(),
            };
            write(&tx, &InterestColumns::encode(&row))?;
            tx.commit()?;
            Ok(row)
        })
    }

    fn remove_interest(&self, tenant: TenantId, account: AccountId) -> Result<bool> {
        self.with(|conn| {
            let n = conn.execute(
                "DELETE FROM account_interest WHERE account = ?1 AND tenant = ?2",
                params![id_blob(account.0), id_blob(tenant.0)],
            )?;
            Ok(n > 0)
        })
    }

    fn interest(&self, tenant: TenantId, account: AccountId) -> Result<Option<InterestRecord>> {
        self.with(|conn| read_one(conn, tenant, account))
    }

    fn interest_accounts(&self, tenant: TenantId) -> Result<Vec<InterestRecord>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {INTEREST_COLUMNS} FROM account_interest WHERE tenant = ?1 ORDER BY account"
            ))?;
            let rows = stmt.query_map([id_blob(tenant.0)], columns_from)?;
            rows.map(|r| r.map_err(StoreError::from).and_then(InterestColumns::decode)).collect()
        })
    }

    fn balance_history(
        &self,
        tenant: TenantId,
        accounts: &[AccountId],
        exclude: &[AccountId],
        after: paycore_ledger::interest::Date,
    ) -> Result<BalanceHistory> {
        self.with(|conn| {
            // The balances in memory and the rows are one snapshot only while no commit can
            // become visible: the engine publishes a commit under the write lock of `fresh`.
            let fresh_balances = self.fresh();
            let fresh = fresh_balances.read().map_err(|_| poisoned())?;
            let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Deferred)?;
            let mut history = BalanceHistory::default();
            let mut account_stmt =
                tx.prepare_cached("SELECT * FROM accounts WHERE shard = ?3 AND id = ?1 AND tenant = ?2")?;
            for &id in accounts {
                let found = account_stmt
                    .query_row(params![id_blob(id.0), id_blob(tenant.0), shard_key(id)], account_from)
                    .optional()?;
                if let Some(account) = found {
                    let balances = fresh.get(&id).copied().unwrap_or(account.balances);
                    history.balances.insert(id, balances.posted());
                }
            }
            drop(account_stmt);
            let mut stmt = tx.prepare_cached(
                "SELECT * FROM transfers WHERE timestamp > ?1 AND tenant = ?2 AND kind IN ('single', 'post_pending')",
            )?;
            let transfers = stmt
                .query_map(params![int(after.end_ns()), id_blob(tenant.0)], transfer_from)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            drop(stmt);
            tx.commit()?;
            drop(fresh);
            let wanted: HashSet<AccountId> = accounts.iter().copied().collect();
            let exclude: HashSet<AccountId> = exclude.iter().copied().collect();
            history.add_transfers(&transfers, &wanted, &exclude);
            Ok(history)
        })
    }

    fn create_interest_run(&self, run: &InterestRun<'_>) -> Result<()> {
        self.with(|conn| {
            let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
            let b = run.batch;
            let batch = id_blob(b.id.0);
            for advance in run.advances {
                let n = tx
                    .prepare_cached(
                        "UPDATE account_interest SET accrued_through = ?3, credit_exact = ?4, credit_compounded = ?5,
                             credit_posted = ?6, debit_exact = ?7, debit_compounded = ?8, debit_posted = ?9,
                             last_batch = COALESCE(?10, last_batch), updated_at = ?11
                         WHERE account = ?1 AND accrued_through = ?2 AND tenant = ?12",
                    )?
                    .execute(params![
                        id_blob(advance.account.0),
                        advance.from.days(),
                        advance.accrued_through.days(),
                        advance.accrual.credit.exact.to_string(),
                        advance.accrual.credit.compounded.to_string(),
                        int(advance.accrual.credit.posted),
                        advance.accrual.debit.exact.to_string(),
                        advance.accrual.debit.compounded.to_string(),
                        int(advance.accrual.debit.posted),
                        (!run.items.is_empty()).then_some(batch),
                        int(b.created_at),
                        id_blob(b.tenant.0),
                    ])?;
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
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    params![
                        batch,
                        id_blob(b.tenant.0),
                        b.status.as_str(),
                        b.format.as_str(),
                        b.mode.as_str(),
                        b.on_invalid.as_str(),
                        b.payer,
                        b.currency,
                        int(b.total),
                        int(b.created_at),
                        b.validated_at.map(int),
                    ],
                )?;
                super::blocks::insert(&tx, b.id, b.payer.as_deref(), run.items)?;
                for t in run.totals {
                    tx.execute(
                        "INSERT INTO batch_totals (batch, currency, count, sum) VALUES (?1, ?2, ?3, ?4)",
                        params![batch, t.currency.code(), int(t.count), t.sum.to_string()],
                    )?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }
}
