//! Batches in the SQLite store: the records the API writes while it takes in and validates a
//! file, and the item results the engine commits with the transfers they made.

use crate::sqlite::{account_from, blob_id, id_blob, int, opt_blob_id, opt_uint, uint, SqliteReader};
use crate::{Result, StoreError};
use paycore_ledger::{Account, AccountId, BatchEnd, BatchId, BatchItemState, ChangeSet, Currency, TenantId};
use rusqlite::{params, OptionalExtension, Row, Transaction, TransactionBehavior};
use std::collections::HashMap;

/// A batch as stored. Statuses: `validating`, `rejected`, `processing`, `completed`,
/// `cancelled`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRecord {
    pub id: BatchId,
    pub tenant: TenantId,
    pub status: String,
    pub format: String,
    pub mode: String,
    pub on_invalid: String,
    pub payer: Option<String>,
    pub currency: Option<String>,
    pub expected_count: Option<u64>,
    pub expected_total: Option<String>,
    /// The stored upload, relative to the data folder.
    pub file: Option<String>,
    pub variant: Option<String>,
    pub message_id: Option<String>,
    pub total: u64,
    pub invalid: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub held: u64,
    pub cancel_requested: bool,
    /// JSON: why the whole batch was rejected.
    pub rejection: Option<String>,
    pub created_at: u64,
    pub validated_at: Option<u64>,
    pub completed_at: Option<u64>,
    /// The upload's `Idempotency-Key` and the SHA-256 of what was uploaded under it.
    pub idempotency_key: Option<String>,
    pub fingerprint: Option<[u8; 32]>,
}

impl BatchRecord {
    /// A batch just taken in: `validating`, best effort, rejecting the file on an invalid
    /// item, no file, nothing counted yet. Callers set what their batch asks for.
    pub fn new(id: BatchId, tenant: TenantId, format: &str, created_at: u64) -> BatchRecord {
        BatchRecord {
            id,
            tenant,
            status: "validating".into(),
            format: format.to_owned(),
            mode: "best_effort".into(),
            on_invalid: "reject_file".into(),
            payer: None,
            currency: None,
            expected_count: None,
            expected_total: None,
            file: None,
            variant: None,
            message_id: None,
            total: 0,
            invalid: 0,
            succeeded: 0,
            failed: 0,
            held: 0,
            cancel_requested: false,
            rejection: None,
            created_at,
            validated_at: None,
            completed_at: None,
            idempotency_key: None,
            fingerprint: None,
        }
    }
}

/// One item of a batch. Statuses: `invalid`, `pending`, `held`, `succeeded`, `failed`,
/// `voided`, `cancelled`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchItemRow {
    pub index: u64,
    pub line: u64,
    pub location: String,
    pub reference: Option<String>,
    pub instruction_id: Option<String>,
    pub payment_information_id: Option<String>,
    /// The payer and payee as the file names them.
    pub payer_text: Option<String>,
    pub payee_text: Option<String>,
    /// The accounts they resolved to, for valid items.
    pub payer: Option<AccountId>,
    pub payee: Option<AccountId>,
    pub amount: Option<u64>,
    pub currency: Option<Currency>,
    pub status: String,
    pub failure_code: Option<String>,
    pub message: Option<String>,
}

/// Control totals of a batch's valid items in one currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchTotal {
    pub currency: Currency,
    pub count: u64,
    pub sum: u128,
}

/// The outcome of validating a batch's file.
#[derive(Clone, Debug)]
pub struct Validated<'a> {
    /// `processing` or `rejected`.
    pub status: &'a str,
    pub total: u64,
    pub invalid: u64,
    pub totals: &'a [BatchTotal],
    pub variant: Option<&'a str>,
    pub message_id: Option<&'a str>,
    pub rejection: Option<&'a str>,
    pub now: u64,
}

/// The API's writes and reads of batches. Batch records are not money: the API writes them
/// outside the engine's batches; only item results (which go with transfers) go through the
/// engine.
pub trait BatchStore: Send + Sync {
    fn create_batch(&self, batch: &BatchRecord) -> Result<()>;
    /// Removes the items of a batch whose validation was interrupted, to validate it again.
    fn clear_batch_items(&self, batch: BatchId) -> Result<()>;
    /// Appends items, in one transaction.
    fn insert_batch_items(&self, batch: BatchId, items: &[BatchItemRow]) -> Result<()>;
    fn finish_validation(&self, batch: BatchId, validated: &Validated<'_>) -> Result<()>;
    /// Asks a batch to stop; false if there is no such batch of this tenant.
    fn request_cancel(&self, tenant: TenantId, batch: BatchId) -> Result<bool>;
    fn batch(&self, tenant: TenantId, id: BatchId) -> Result<Option<BatchRecord>>;
    fn batch_totals(&self, batch: BatchId) -> Result<Vec<BatchTotal>>;
    /// Items in index order after `after`: all of them, or those in one of `statuses`.
    fn batch_items(
        &self,
        batch: BatchId,
        statuses: &[&str],
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<BatchItemRow>>;
    /// The batch with this upload idempotency key, if any.
    fn batch_by_key(&self, tenant: TenantId, key: &str) -> Result<Option<BatchRecord>>;
    /// Batches that were validating or processing: to resume after a restart.
    fn active_batches(&self) -> Result<Vec<BatchRecord>>;
    /// An account of the tenant by id (`acct_…`) or by reference: the reference's account in
    /// `currency` if there is one, else any account with that reference (so that the caller can
    /// report the currency mismatch).
    fn find_account(&self, tenant: TenantId, text: &str, currency: Option<Currency>) -> Result<Option<Account>>;
}

fn batch_from(row: &Row) -> rusqlite::Result<BatchRecord> {
    let cancel: i64 = row.get("cancel_requested")?;
    Ok(BatchRecord {
        id: BatchId(blob_id(row, "id")?),
        tenant: TenantId(blob_id(row, "tenant")?),
        status: row.get("status")?,
        format: row.get("format")?,
        mode: row.get("mode")?,
        on_invalid: row.get("on_invalid")?,
        payer: row.get("payer")?,
        currency: row.get("currency")?,
        expected_count: opt_uint(row, "expected_count")?,
        expected_total: row.get("expected_total")?,
        file: row.get("file")?,
        variant: row.get("variant")?,
        message_id: row.get("message_id")?,
        total: uint(row, "total")?,
        invalid: uint(row, "invalid")?,
        succeeded: uint(row, "succeeded")?,
        failed: uint(row, "failed")?,
        held: uint(row, "held")?,
        cancel_requested: cancel != 0,
        rejection: row.get("rejection")?,
        created_at: uint(row, "created_at")?,
        validated_at: opt_uint(row, "validated_at")?,
        completed_at: opt_uint(row, "completed_at")?,
        idempotency_key: row.get("idempotency_key")?,
        fingerprint: row.get("fingerprint")?,
    })
}

fn item_from(row: &Row) -> rusqlite::Result<BatchItemRow> {
    let currency: Option<String> = row.get("currency")?;
    Ok(BatchItemRow {
        index: uint(row, "idx")?,
        line: uint(row, "line")?,
        location: row.get("location")?,
        reference: row.get("reference")?,
        instruction_id: row.get("instruction_id")?,
        payment_information_id: row.get("payment_information_id")?,
        payer_text: row.get("payer_text")?,
        payee_text: row.get("payee_text")?,
        payer: opt_blob_id(row, "payer")?.map(AccountId),
        payee: opt_blob_id(row, "payee")?.map(AccountId),
        amount: opt_uint(row, "amount")?,
        currency: currency.as_deref().and_then(Currency::from_code),
        status: row.get("status")?,
        failure_code: row.get("failure_code")?,
        message: row.get("message")?,
    })
}

/// Writes the engine's batch results inside its commit: each item's new status, the batch's
/// counters, and the end of batches.
pub(crate) fn commit_batch_changes(tx: &Transaction<'_>, changes: &ChangeSet) -> Result<()> {
    if changes.batch_items.is_empty() && changes.batch_ends.is_empty() {
        return Ok(());
    }
    let mut counters: HashMap<BatchId, [i64; 3]> = HashMap::new();
    {
        // An item moves only from the state its step expects (pending, or held): an item sent
        // twice (a resumed run that went back too far) changes neither status nor counters.
        // Runs of consecutive items with the same outcome (most of a chunk: every item
        // succeeded) move with one statement over their index range; only items of the run are
        // in that range, so it changes exactly what one statement per item would.
        let mut stmt = tx.prepare_cached(
            "UPDATE batch_items SET status = ?4, failure_code = ?5
             WHERE batch = ?1 AND idx BETWEEN ?2 AND ?3 AND status = ?6",
        )?;
        let same_run = |a: &paycore_ledger::BatchItemResult, b: &paycore_ledger::BatchItemResult| {
            a.batch == b.batch
                && a.step == b.step
                && a.state == b.state
                && a.code == b.code
                && a.index.checked_add(1) == Some(b.index)
        };
        for run in changes.batch_items.chunk_by(same_run) {
            let (first, last) = (&run[0], &run[run.len() - 1]);
            let code = match first.state {
                BatchItemState::Voided => Some("batch_aborted"),
                _ => (!first.code.is_success()).then(|| first.code.as_str()),
            };
            let from = first.step.from_state();
            let moved = stmt.execute(params![
                id_blob(first.batch.0),
                int(first.index),
                int(last.index),
                first.state.as_str(),
                code,
                from
            ])?;
            if moved == 0 {
                continue;
            }
            let moved = i64::try_from(moved).unwrap_or(i64::MAX);
            let c = counters.entry(first.batch).or_default();
            // Counters: [succeeded, failed, held], moved from the old status to the new.
            for (status, sign) in [(from, -moved), (first.state.as_str(), moved)] {
                match status {
                    "succeeded" => c[0] += sign,
                    "failed" | "voided" => c[1] += sign,
                    "held" => c[2] += sign,
                    _ => {}
                }
            }
        }
    }
    let mut stmt = tx.prepare_cached(
        "UPDATE batches SET succeeded = succeeded + ?2, failed = failed + ?3, held = held + ?4 WHERE id = ?1",
    )?;
    for (batch, [succeeded, failed, held]) in counters {
        stmt.execute(params![id_blob(batch.0), succeeded, failed, held])?;
    }
    for (batch, end) in &changes.batch_ends {
        let status = match end {
            BatchEnd::Completed => "completed",
            BatchEnd::Cancelled => "cancelled",
        };
        let blob = id_blob(batch.0);
        // Items never sent to the ledger: cancelled, or (atomic batches) left when another
        // item failed. Both count as failed.
        let (left_status, left_code) = match end {
            BatchEnd::Cancelled => ("cancelled", "cancelled"),
            BatchEnd::Completed => ("voided", "batch_aborted"),
        };
        let left = tx.execute(
            "UPDATE batch_items SET status = ?2, failure_code = ?3 WHERE batch = ?1 AND status = 'pending'",
            params![blob, left_status, left_code],
        )?;
        tx.execute(
            "UPDATE batches SET status = ?2, completed_at = ?3, failed = failed + ?4 WHERE id = ?1",
            params![blob, status, int(changes.last_timestamp), i64::try_from(left).unwrap_or(i64::MAX)],
        )?;
        tx.execute(
            "INSERT INTO outbox (tenant, type, object, created_at)
             SELECT tenant, ?2, id, ?3 FROM batches WHERE id = ?1",
            params![blob, format!("batch.{status}"), int(changes.last_timestamp)],
        )?;
    }
    Ok(())
}

impl BatchStore for SqliteReader {
    fn create_batch(&self, b: &BatchRecord) -> Result<()> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO batches (id, tenant, status, format, mode, on_invalid, payer, currency,
                     expected_count, expected_total, file, created_at, idempotency_key, fingerprint)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![
                    id_blob(b.id.0),
                    id_blob(b.tenant.0),
                    b.status,
                    b.format,
                    b.mode,
                    b.on_invalid,
                    b.payer,
                    b.currency,
                    b.expected_count.map(int),
                    b.expected_total,
                    b.file,
                    int(b.created_at),
                    b.idempotency_key,
                    b.fingerprint,
                ],
            )?;
            Ok(())
        })
    }

    fn clear_batch_items(&self, batch: BatchId) -> Result<()> {
        self.with(|conn| {
            conn.execute("DELETE FROM batch_items WHERE batch = ?1", [id_blob(batch.0)])?;
            conn.execute("DELETE FROM batch_totals WHERE batch = ?1", [id_blob(batch.0)])?;
            Ok(())
        })
    }

    fn insert_batch_items(&self, batch: BatchId, items: &[BatchItemRow]) -> Result<()> {
        self.with(|conn| {
            let mut conn_tx = conn.unchecked_transaction()?;
            conn_tx.set_drop_behavior(rusqlite::DropBehavior::Rollback);
            {
                let mut stmt = conn_tx.prepare_cached(
                    "INSERT INTO batch_items (batch, idx, line, location, reference, instruction_id,
                         payment_information_id, payer_text, payee_text, payer, payee, amount, currency,
                         status, failure_code, message)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                )?;
                let blob = id_blob(batch.0);
                for i in items {
                    stmt.execute(params![
                        blob,
                        int(i.index),
                        int(i.line),
                        i.location,
                        i.reference,
                        i.instruction_id,
                        i.payment_information_id,
                        i.payer_text,
                        i.payee_text,
                        i.payer.map(|a| id_blob(a.0)),
                        i.payee.map(|a| id_blob(a.0)),
                        i.amount.map(int),
                        i.currency.map(Currency::code),
                        i.status,
                        i.failure_code,
                        i.message,
                    ])?;
                }
            }
            conn_tx.commit()?;
            Ok(())
        })
    }

    fn finish_validation(&self, batch: BatchId, v: &Validated<'_>) -> Result<()> {
        self.with(|conn| {
            let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
            let blob = id_blob(batch.0);
            for t in v.totals {
                tx.execute(
                    "INSERT INTO batch_totals (batch, currency, count, sum) VALUES (?1, ?2, ?3, ?4)",
                    params![blob, t.currency.code(), int(t.count), t.sum.to_string()],
                )?;
            }
            tx.execute(
                "UPDATE batches SET status = ?2, total = ?3, invalid = ?4, variant = ?5, message_id = ?6,
                     rejection = ?7, validated_at = ?8, completed_at = CASE WHEN ?2 = 'rejected' THEN ?8 END
                 WHERE id = ?1",
                params![blob, v.status, int(v.total), int(v.invalid), v.variant, v.message_id, v.rejection, int(v.now)],
            )?;
            if v.status == "rejected" {
                tx.execute(
                    "INSERT INTO outbox (tenant, type, object, created_at)
                     SELECT tenant, 'batch.rejected', id, ?2 FROM batches WHERE id = ?1",
                    params![blob, int(v.now)],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn request_cancel(&self, tenant: TenantId, batch: BatchId) -> Result<bool> {
        self.with(|conn| {
            let n = conn.execute(
                "UPDATE batches SET cancel_requested = 1 WHERE id = ?1 AND tenant = ?2",
                params![id_blob(batch.0), id_blob(tenant.0)],
            )?;
            Ok(n == 1)
        })
    }

    fn batch(&self, tenant: TenantId, id: BatchId) -> Result<Option<BatchRecord>> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT * FROM batches WHERE id = ?1 AND tenant = ?2")?
                .query_row(params![id_blob(id.0), id_blob(tenant.0)], batch_from)
                .optional()?)
        })
    }

    fn batch_totals(&self, batch: BatchId) -> Result<Vec<BatchTotal>> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT currency, count, sum FROM batch_totals WHERE batch = ?1 ORDER BY currency")?;
            let rows = stmt.query_map([id_blob(batch.0)], |row| {
                let code: String = row.get(0)?;
                let sum: String = row.get(2)?;
                Ok((code, uint(row, "count")?, sum))
            })?;
            let mut totals = Vec::new();
            for row in rows {
                let (code, count, sum) = row?;
                let currency = Currency::from_code(&code)
                    .ok_or_else(|| StoreError::Corrupt(format!("batch total in unknown currency {code}")))?;
                let sum = sum.parse().map_err(|_| StoreError::Corrupt(format!("batch total {sum:?}")))?;
                totals.push(BatchTotal { currency, count, sum });
            }
            Ok(totals)
        })
    }

    fn batch_items(
        &self,
        batch: BatchId,
        statuses: &[&str],
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<BatchItemRow>> {
        self.with(|conn| {
            let after = after.map_or(-1, int);
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let blob = id_blob(batch.0);
            if statuses.is_empty() {
                return Ok(conn
                    .prepare_cached("SELECT * FROM batch_items WHERE batch = ?1 AND idx > ?2 ORDER BY idx LIMIT ?3")?
                    .query_map(params![blob, after, limit], item_from)?
                    .collect::<rusqlite::Result<Vec<_>>>()?);
            }
            // One indexed range per status, merged in index order.
            let mut rows = Vec::new();
            let mut stmt = conn.prepare_cached(
                "SELECT * FROM batch_items WHERE batch = ?1 AND status = ?2 AND idx > ?3 ORDER BY idx LIMIT ?4",
            )?;
            for status in statuses {
                let found = stmt.query_map(params![blob, status, after, limit], item_from)?;
                for row in found {
                    rows.push(row?);
                }
            }
            rows.sort_unstable_by_key(|r| r.index);
            rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            Ok(rows)
        })
    }

    fn batch_by_key(&self, tenant: TenantId, key: &str) -> Result<Option<BatchRecord>> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT * FROM batches WHERE tenant = ?1 AND idempotency_key = ?2")?
                .query_row(params![id_blob(tenant.0), key], batch_from)
                .optional()?)
        })
    }

    fn active_batches(&self) -> Result<Vec<BatchRecord>> {
        self.with(|conn| {
            Ok(conn
                .prepare("SELECT * FROM batches WHERE status IN ('validating', 'processing') ORDER BY created_at")?
                .query_map([], batch_from)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn find_account(&self, tenant: TenantId, text: &str, currency: Option<Currency>) -> Result<Option<Account>> {
        self.account_with(|conn| {
            if let Ok(id) = text.parse::<AccountId>() {
                return conn
                    .prepare_cached("SELECT * FROM accounts WHERE id = ?1 AND tenant = ?2")?
                    .query_row(params![id_blob(id.0), id_blob(tenant.0)], account_from)
                    .optional();
            }
            conn.prepare_cached(
                "SELECT * FROM accounts WHERE tenant = ?1 AND reference = ?2
                 ORDER BY currency = ?3 DESC, created_at LIMIT 1",
            )?
            .query_row(params![id_blob(tenant.0), text, currency.map(Currency::code)], account_from)
            .optional()
        })
    }
}
