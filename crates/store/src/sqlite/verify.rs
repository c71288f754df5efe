//! The SQLite side of [`crate::verify`]: its rows, read inside one read transaction.

use super::codec::{account_from, blob_id, payment_from, quote_from, refund_from, transfer_from};
use super::commit::balances_through;
use super::reader::SqliteReader;
use crate::verify::Through;
use crate::verify::{Report, Snapshot, Verify};
use crate::{BatchItemRow, Result};
use paycore_ledger::fx::Quote;
use paycore_ledger::{Account, BatchId, Payment, Refund, Transfer};
use rusqlite::{Connection, Row};

impl Verify for SqliteReader {
    fn with_snapshot(&self, check: &mut dyn FnMut(&mut dyn Snapshot) -> Result<Report>) -> Result<Report> {
        self.with(|conn| {
            conn.execute_batch("BEGIN")?;
            let report = check(&mut Rows { conn });
            conn.execute_batch("COMMIT")?;
            report
        })
    }
}

/// A connection inside its read transaction.
struct Rows<'a> {
    conn: &'a Connection,
}

impl Rows<'_> {
    fn each<T>(&self, sql: &str, decode: fn(&Row) -> rusqlite::Result<T>, each: &mut dyn FnMut(T)) -> Result<()> {
        let mut stmt = self.conn.prepare(sql)?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            each(decode(row)?);
        }
        Ok(())
    }
}

impl Snapshot for Rows<'_> {
    fn balances_through(&mut self) -> Result<Through> {
        balances_through(self.conn)
    }

    fn transfers(&mut self, each: &mut dyn FnMut(Transfer)) -> Result<()> {
        self.each("SELECT * FROM transfers ORDER BY timestamp", transfer_from, each)
    }

    fn audit(&mut self) -> Result<Vec<paycore_ledger::AuditRecord>> {
        super::limits::all_audit(self.conn)
    }

    fn accounts(&mut self) -> Result<Vec<Account>> {
        let mut stmt = self.conn.prepare("SELECT * FROM accounts")?;
        let accounts = stmt.query_map([], account_from)?.collect::<rusqlite::Result<_>>()?;
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
        let mut stmt = self.conn.prepare("SELECT id FROM batches ORDER BY id")?;
        let ids = stmt.query_map([], |row| blob_id(row, "id").map(BatchId))?.collect::<rusqlite::Result<_>>()?;
        Ok(ids)
    }

    fn batch_items(&mut self, batch: BatchId, after: Option<u64>, limit: usize) -> Result<Vec<BatchItemRow>> {
        super::batches::list_items(self.conn, batch, &[], after, limit)
    }

    fn batch_quotes(&mut self, batch: BatchId) -> Result<Vec<Quote>> {
        super::fx::batch_quotes(self.conn, batch)
    }

    fn batch_item_fx(&mut self, batch: BatchId) -> Result<Vec<(u64, paycore_ledger::ItemFx)>> {
        super::fx::batch_item_fx(self.conn, batch, 0, u64::MAX >> 1)
    }

    fn clearing_windows(&mut self, each: &mut dyn FnMut(paycore_ledger::ClearingWindow)) -> Result<()> {
        super::clearing::every(self.conn, each)
    }

    fn interest_accounts(&mut self) -> Result<Vec<crate::InterestRecord>> {
        super::interest::all_rows(self.conn)
    }
}
