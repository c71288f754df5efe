//! The PostgreSQL side of [`crate::verify`]: its rows, read inside one read-only transaction
//! at `REPEATABLE READ`, so that every check sees the same snapshot while the engine goes on
//! committing.

use super::batches::{list_items, snapshot};
use super::codec::{account_from, all, id, payment_from, quote_from, refund_from, transfer_from};
use super::reader::PostgresReader;
use crate::verify::{Report, Snapshot, Verify};
use crate::{BatchItemRow, Result};
use paycore_ledger::fx::Quote;
use paycore_ledger::{Account, BatchId, Payment, Refund, Transfer};
use postgres::{Row, Transaction};

impl Verify for PostgresReader {
    fn with_snapshot(&self, check: &mut dyn FnMut(&mut dyn Snapshot) -> Result<Report>) -> Result<Report> {
        self.with(|client| {
            let mut tx = snapshot(client)?;
            let report = check(&mut Rows { tx: &mut tx });
            tx.commit()?;
            report
        })
    }
}

/// A connection inside its snapshot.
struct Rows<'a, 'b> {
    tx: &'a mut Transaction<'b>,
}

/// Rows fetched at a time by the streamed reads (transfers can be many millions).
const ROWS_PER_FETCH: i32 = 10_000;

impl Rows<'_, '_> {
    /// Streams the rows of `sql` through a portal, a page at a time, so that memory stays flat.
    fn each<T>(&mut self, sql: &str, decode: fn(&Row) -> Result<T>, each: &mut dyn FnMut(T)) -> Result<()> {
        let portal = self.tx.bind(sql, &[])?;
        loop {
            let rows = self.tx.query_portal(&portal, ROWS_PER_FETCH)?;
            for row in &rows {
                each(decode(row)?);
            }
            if rows.len() < usize::try_from(ROWS_PER_FETCH).unwrap_or(0) {
                return Ok(());
            }
        }
    }
}

impl Snapshot for Rows<'_, '_> {
    fn balances_through(&mut self) -> Result<crate::verify::Through> {
        // `accounts` brings the rows up to date itself, as every reader of the balances does
        // (see `balances`): what it returns is valid at the last transfer.
        let last: Option<i64> = self.tx.query_one("SELECT max(timestamp) FROM transfers", &[])?.try_get(0)?;
        Ok(crate::verify::Through::all(u64::try_from(last.unwrap_or(0)).unwrap_or(0)))
    }

    fn transfers(&mut self, each: &mut dyn FnMut(Transfer)) -> Result<()> {
        self.each("SELECT * FROM transfers ORDER BY timestamp, id", transfer_from, each)
    }

    fn audit(&mut self) -> Result<Vec<paycore_ledger::AuditRecord>> {
        super::limits::all_audit(self.tx)
    }

    fn accounts(&mut self) -> Result<Vec<Account>> {
        let mut accounts = all(&self.tx.query("SELECT * FROM accounts", &[])?, account_from)?;
        // The rows as of their partitions' checkpoints, and the transfers since (`balances`).
        super::balances::bring_up_to_date(&mut *self.tx, &mut accounts)?;
        Ok(accounts)
    }

    fn refunds(&mut self, each: &mut dyn FnMut(Refund)) -> Result<()> {
        self.each("SELECT * FROM refunds", refund_from, each)
    }

    fn payments(&mut self, each: &mut dyn FnMut(Payment)) -> Result<()> {
        self.each("SELECT * FROM payments", payment_from, each)
    }

    fn quotes(&mut self, each: &mut dyn FnMut(Quote)) -> Result<()> {
        self.each("SELECT * FROM fx_quotes", quote_from, each)
    }

    fn batches(&mut self) -> Result<Vec<BatchId>> {
        let rows = self.tx.query("SELECT id FROM batches ORDER BY id", &[])?;
        rows.iter().map(|row| id(row, "id").map(BatchId)).collect()
    }

    fn batch_items(&mut self, batch: BatchId, after: Option<u64>, limit: usize) -> Result<Vec<BatchItemRow>> {
        list_items(&mut *self.tx, batch, &[], after, limit)
    }

    fn batch_quotes(&mut self, batch: BatchId) -> Result<Vec<Quote>> {
        super::fx::batch_quotes(&mut *self.tx, batch)
    }

    fn batch_item_fx(&mut self, batch: BatchId) -> Result<Vec<(u64, paycore_ledger::ItemFx)>> {
        super::fx::batch_item_fx(&mut *self.tx, batch, 0, u64::MAX >> 1)
    }

    fn clearing_windows(&mut self, each: &mut dyn FnMut(paycore_ledger::ClearingWindow)) -> Result<()> {
        super::clearing::every(&mut *self.tx, each)
    }

    fn interest_accounts(&mut self) -> Result<Vec<crate::InterestRecord>> {
        super::interest::all_rows(&mut *self.tx)
    }

    fn derived_problems(&mut self) -> Result<Vec<String>> {
        let mut problems = super::history::problems(&mut *self.tx)?;
        // A checkpoint or watermark past its partition's clock would skip the transfers
        // committed up to it: readers replay only what comes after it.
        for row in self.tx.query(
            "SELECT p.id, p.last_timestamp, p.balances_through, h.through FROM partitions p
             LEFT JOIN history_watermarks h ON h.partition = p.id
             WHERE p.balances_through > p.last_timestamp OR h.through > p.last_timestamp ORDER BY p.id",
            &[],
        )? {
            let (partition, clock): (i32, i64) = (row.try_get(0)?, row.try_get(1)?);
            let (balances, history): (i64, Option<i64>) = (row.try_get(2)?, row.try_get(3)?);
            if balances > clock {
                problems.push(format!(
                    "partition {partition}: its balances are checkpointed through {balances}, past its clock {clock}"
                ));
            }
            if let Some(history) = history.filter(|h| *h > clock) {
                problems.push(format!(
                    "partition {partition}: its history is indexed through {history}, past its clock {clock}"
                ));
            }
        }
        Ok(problems)
    }
}
