//! Batches in SQLite (see [`crate::batches`] for the records and the rules): batch rows, items
//! in blocks ([`super::blocks`]), result runs, and the item listing that derives each item's
//! status from them.

use super::blocks::{self, Block, Entry, Loaded, BLOCKS_SQL, INVALID_BLOCKS_SQL, WALK_SQL};
use super::codec::{account_from, blob_id, id_blob, int, opt_uint, parsed, shard_key, uint, uint_at};
use super::reader::SqliteReader;
use crate::batches::{
    end_status, result_runs, result_status, unsent, BatchItemRow, BatchRecord, BatchStore, BatchTotal, Claim, Counters,
    ItemReference, ItemView, ListedItem, ResultRun, Validated, WindowResults, WINDOW,
};
use crate::{Page, Result, StoreError};
use paycore_ledger::{
    Account, AccountId, BatchFormat, BatchId, BatchItem, BatchMode, BatchStatus, ChangeSet, Currency, EventKind,
    ItemStatus, OnInvalid, TenantId,
};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use std::collections::HashMap;

pub(super) fn batch_from(row: &Row) -> rusqlite::Result<BatchRecord> {
    let cancel: i64 = row.get("cancel_requested")?;
    Ok(BatchRecord {
        id: BatchId(blob_id(row, "id")?),
        tenant: TenantId(blob_id(row, "tenant")?),
        status: parsed(row, "status", BatchStatus::parse)?,
        format: parsed(row, "format", BatchFormat::parse)?,
        mode: parsed(row, "mode", BatchMode::parse)?,
        on_invalid: parsed(row, "on_invalid", OnInvalid::parse)?,
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

/// The result runs that cover an index in `lo..=hi`: phase 0, then phase 1 (which overrides
/// it), then phase 2 (an original's return: see [`crate::returns`]), each in index order. Runs of one phase never overlap, so the only run that starts
/// before `lo` and reaches into the window is the last one that starts before it.
fn runs_in(conn: &Connection, batch: &[u8; 16], lo: u64, hi: u64) -> Result<Vec<ResultRun>> {
    let mut before = conn.prepare_cached(
        "SELECT first, last, status, code FROM batch_results
         WHERE batch = ?1 AND phase = ?2 AND first < ?3 ORDER BY first DESC LIMIT 1",
    )?;
    let mut within = conn.prepare_cached(
        "SELECT first, last, status, code FROM batch_results
         WHERE batch = ?1 AND phase = ?2 AND first BETWEEN ?3 AND ?4 ORDER BY first",
    )?;
    let mut runs = Vec::new();
    let decode = |row: &Row| -> rusqlite::Result<(i64, i64, String, Option<String>)> {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
    };
    for phase in 0..=crate::returns::RETURNED_PHASE {
        let starting_before = before.query_row(params![batch, phase, int(lo)], decode).optional()?;
        let found = within.query_map(params![batch, phase, int(lo), int(hi)], decode)?;
        for run in starting_before.into_iter().map(Ok).chain(found) {
            let (first, last, status, code) = run?;
            let (Ok(first), Ok(last)) = (u64::try_from(first), u64::try_from(last)) else {
                return Err(StoreError::Corrupt(format!("batch result run {first}..={last}")));
            };
            if last < lo {
                continue;
            }
            runs.push(ResultRun { first, last, status: result_status(&status)?, code });
        }
    }
    Ok(runs)
}

/// What [`list_items`] reads of an item: the whole row, or what the runner sends.
pub(super) trait ItemShape: ListedItem + Sized {
    /// The item from its block entry; `batch_payer` is the batch's payer text.
    fn decode(entry: &Entry<'_>, batch_payer: Option<&str>) -> Result<Self>;
}

impl ItemShape for BatchItemRow {
    fn decode(entry: &Entry<'_>, batch_payer: Option<&str>) -> Result<Self> {
        entry.row(batch_payer)
    }
}

/// An item as the runner sends it to the engine: no text to decode.
struct Sendable {
    index: u64,
    status: ItemStatus,
    item: Option<BatchItem>,
}

impl ItemShape for Sendable {
    fn decode(entry: &Entry<'_>, _: Option<&str>) -> Result<Self> {
        let index = entry.index;
        let status = match entry.status {
            ItemStatus::Invalid => ItemStatus::Invalid,
            _ => ItemStatus::Pending,
        };
        let fields = entry.fields()?;
        let item = match (fields.payer, fields.payee, fields.amount, entry.currency(&fields)?) {
            (Some(payer), Some(payee), Some(amount), Some(currency)) => {
                Some(BatchItem { index, payer, payee, amount, currency, fx: None, refund: None })
            }
            _ => None,
        };
        Ok(Sendable { index, status, item })
    }
}

impl ListedItem for Sendable {
    fn index(&self) -> u64 {
        self.index
    }

    fn status(&self) -> ItemStatus {
        self.status
    }

    fn set_status(&mut self, status: ItemStatus, _: Option<&str>) {
        self.status = status;
    }
}

/// Items of a batch in index order after `after`, with their derived status: all of them, or
/// those whose status is one of `statuses`, at most `limit`. Reads inside the caller's
/// transaction, so that blocks and results are one snapshot. Only the blocks that cover the
/// indexes read are decoded, and of them only the items read.
pub(super) fn list_items<T: ItemShape>(
    conn: &Connection,
    batch: BatchId,
    statuses: &[ItemStatus],
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<T>> {
    let blob = id_blob(batch.0);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let found: Option<(BatchStatus, Option<String>)> = conn
        .prepare_cached("SELECT status, payer FROM batches WHERE id = ?1")?
        .query_row([&blob], |row| Ok((parsed(row, "status", BatchStatus::parse)?, row.get(1)?)))
        .optional()?;
    let Some((ended, batch_payer)) = found else { return Ok(Vec::new()) };
    if statuses == [ItemStatus::Invalid] {
        return invalid_items(conn, &blob, batch_payer.as_deref(), after, limit);
    }
    let Some(max) = blocks::last_index(conn, &blob)? else { return Ok(Vec::new()) };
    let fetch = conn.prepare_cached(BLOCKS_SQL)?;
    let mut source = Blocks { conn, blob, batch_payer: batch_payer.as_deref(), fetch, loaded: None };
    crate::batches::list_items(&mut source, ended, statuses, after, max, limit)
}

/// Shows `visit` the items of a batch after `after`, up to `limit`, as [`list_items`] with no
/// status lists them, until it answers false; returns how many it was shown. Reads inside the
/// caller's transaction. Each block is read where SQLite holds it (`get_ref`, not copied into a
/// `Vec`) and each item shown from it ([`Entry::view`]), its texts borrowed: a window of
/// `limit` indexes at a time (as [`crate::batches::list_items`] reads), its runs, then its
/// blocks in one statement.
pub(super) fn walk(
    conn: &Connection,
    batch: BatchId,
    after: Option<u64>,
    limit: usize,
    visit: &mut dyn FnMut(&ItemView<'_>) -> bool,
) -> Result<usize> {
    let blob = id_blob(batch.0);
    if limit == 0 {
        return Ok(0);
    }
    let found: Option<(BatchStatus, Option<String>)> = conn
        .prepare_cached("SELECT status, payer FROM batches WHERE id = ?1")?
        .query_row([&blob], |row| Ok((parsed(row, "status", BatchStatus::parse)?, row.get(1)?)))
        .optional()?;
    let Some((ended, batch_payer)) = found else { return Ok(0) };
    let Some(max) = blocks::last_index(conn, &blob)? else { return Ok(0) };
    let (left, left_code) = unsent(ended);
    let window = (limit as u64).clamp(1, WINDOW);
    let mut walk_blocks = conn.prepare_cached(WALK_SQL)?;
    // The text of a payee named by its own id, written anew for each such item.
    let mut scratch = Vec::with_capacity(40);
    let mut shown = 0;
    let mut lo = after.map_or(0, |a| a.saturating_add(1));
    while lo <= max {
        let hi = lo.saturating_add(window - 1).min(max);
        let runs = runs_in(conn, &blob, lo, hi)?;
        let results = WindowResults::new(&runs, lo, hi);
        let mut rows = walk_blocks.query(params![blob, int(lo), int(hi)])?;
        while let Some(row) = rows.next()? {
            for entry in Block::new(uint_at(row, 0)?, blocks::blob_at(row, 1)?) {
                let entry = entry?;
                if entry.index < lo {
                    continue;
                }
                if entry.index > hi {
                    break;
                }
                let derived = match results.run_of(entry.index) {
                    Some(k) => (runs[k].status, runs[k].code.as_deref()),
                    None => (left, left_code),
                };
                shown += 1;
                if !visit(&entry.view(batch_payer.as_deref(), derived, &mut scratch)?) || shown == limit {
                    return Ok(shown);
                }
            }
        }
        let Some(next) = hi.checked_add(1) else { break };
        lo = next;
    }
    Ok(shown)
}

/// The invalid items of a batch after `after`, at most `limit`: only the blocks that count an
/// invalid item are read, and of them only the invalid items decoded.
fn invalid_items<T: ItemShape>(
    conn: &Connection,
    blob: &[u8; 16],
    batch_payer: Option<&str>,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare_cached(INVALID_BLOCKS_SQL)?;
    let mut found = stmt.query(params![blob, after.map_or(-1, int)])?;
    while let Some(row) = found.next()? {
        let first = uint_at(row, 0)?;
        for entry in Block::new(first, blocks::blob_at(row, 1)?) {
            let entry = entry?;
            if entry.status != ItemStatus::Invalid || after.is_some_and(|a| entry.index <= a) {
                continue;
            }
            out.push(T::decode(&entry, batch_payer)?);
            if out.len() == limit {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// One batch's item blocks and result runs, as [`crate::batches::list_items`] reads them.
struct Blocks<'a> {
    conn: &'a Connection,
    blob: [u8; 16],
    batch_payer: Option<&'a str>,
    /// The first block that covers a stretch of indexes ([`BLOCKS_SQL`]).
    fetch: rusqlite::CachedStatement<'a>,
    /// The block read last: a status listing reads many short stretches of one block.
    loaded: Option<Loaded>,
}

impl Blocks<'_> {
    /// The first block with an index in `from..=last`, if any.
    fn load(&mut self, from: u64, last: u64) -> Result<Option<Loaded>> {
        let batch = BatchId(u128::from_be_bytes(self.blob));
        Ok(self
            .fetch
            .query_row(params![self.blob, int(from), int(last)], |row| {
                Ok((uint_at(row, 0)?, uint_at(row, 1)?, row.get::<_, Vec<u8>>(2)?))
            })
            .optional()?
            .map(|(first, last, data)| Loaded::new(batch, first, last, data)))
    }
}

impl<T: ItemShape> crate::batches::ItemRows<T> for Blocks<'_> {
    fn runs(&mut self, lo: u64, hi: u64) -> Result<Vec<ResultRun>> {
        runs_in(self.conn, &self.blob, lo, hi)
    }

    fn rows(&mut self, first: u64, last: u64, limit: usize) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let mut from = first;
        while from <= last && out.len() < limit {
            if !self.loaded.as_ref().is_some_and(|b| b.covers(from)) {
                self.loaded = self.load(from, last)?;
            }
            let Some(block) = self.loaded.as_mut() else { break };
            let payer = self.batch_payer;
            block.visit(from, |entry| {
                if entry.index > last {
                    return Ok(false);
                }
                out.push(T::decode(entry, payer)?);
                Ok(out.len() < limit)
            })?;
            let Some(next) = block.last.checked_add(1) else { break };
            from = next;
        }
        Ok(out)
    }
}

/// The reference of the item `index` of a loaded block, if that item made `transfer` (its
/// payer, payee and amount).
fn reference_in(block: &mut Loaded, index: u64, transfer: &paycore_ledger::Transfer) -> Result<Option<ItemReference>> {
    let mut found = None;
    block.visit(index, |entry| {
        if entry.index == index {
            let f = entry.fields()?;
            if f.payer == Some(transfer.debit_account)
                && f.payee == Some(transfer.credit_account)
                && f.amount == Some(transfer.amount)
            {
                found = Some(ItemReference {
                    reference: blocks::text_of(f.reference)?.map(str::to_owned),
                    remittance: blocks::text_of(f.remittance)?.map(str::to_owned),
                });
            }
        }
        Ok(false)
    })?;
    Ok(found)
}

/// The active batches, oldest first.
pub(super) const ACTIVE_BATCHES_SQL: &str =
    "SELECT * FROM batches WHERE status IN ('validating', 'processing') ORDER BY created_at";

/// Writes the engine's batch results inside its commit: a row per run of consecutive items
/// with the same result, the batch's counters, and the end of batches.
///
/// Each item gets at most one result per phase: the ledger records none for an item whose
/// transfer already exists (a chunk sent again after its commit), and the runner sends only
/// items without a result.
pub(super) fn commit_batch_changes(tx: &Transaction<'_>, changes: &ChangeSet) -> Result<()> {
    if changes.batch_items.is_empty() && changes.batch_ends.is_empty() {
        return Ok(());
    }
    let mut counters: HashMap<BatchId, Counters> = HashMap::new();
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO batch_results (batch, phase, first, last, status, code) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT DO NOTHING",
        )?;
        for run in result_runs(&changes.batch_items) {
            let inserted = stmt.execute(params![
                id_blob(run.batch.0),
                run.phase,
                int(run.first),
                int(run.last),
                ItemStatus::from(run.state).as_str(),
                run.code
            ])?;
            // A run already stored (a chunk committed before a crash, sent again) counts once.
            if inserted > 0 {
                counters.entry(run.batch).or_default().add(run.counters());
            }
        }
    }
    let mut stmt = tx.prepare_cached(
        "UPDATE batches SET succeeded = succeeded + ?2, failed = failed + ?3, held = held + ?4 WHERE id = ?1",
    )?;
    for (batch, c) in counters {
        stmt.execute(params![id_blob(batch.0), c.succeeded, c.failed, c.held])?;
    }
    for (batch, end) in &changes.batch_ends {
        let status = end_status(*end);
        let blob = id_blob(batch.0);
        // Items never sent to the ledger (cancelled, or left when an atomic batch failed)
        // count as failed: every valid item is then succeeded or failed.
        tx.execute(
            "UPDATE batches SET status = ?2, completed_at = ?3,
                 failed = failed + max(0, total - invalid - succeeded - failed - held)
             WHERE id = ?1",
            params![blob, status.as_str(), int(changes.last_timestamp)],
        )?;
        tx.execute(
            "INSERT INTO outbox (tenant, type, object, created_at)
             SELECT tenant, ?2, id, ?3 FROM batches WHERE id = ?1",
            params![blob, EventKind::of_batch(status).map(EventKind::as_str), int(changes.last_timestamp)],
        )?;
    }
    Ok(())
}

/// Appends item blocks in one transaction that is not synced to disk: the items are derived
/// from the stored file, which validation reads again from the start after a crash, and the
/// commit that ends validation (`finish_validation`, synced) makes them durable with it.
fn insert_items(conn: &Connection, batch: BatchId, items: &[BatchItemRow]) -> Result<()> {
    // Immediate: a deferred transaction that reads first cannot take the write lock
    // once the engine has committed since (SQLITE_BUSY_SNAPSHOT, no retry).
    let mut conn_tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    conn_tx.set_drop_behavior(rusqlite::DropBehavior::Rollback);
    let payer: Option<String> = conn_tx
        .prepare_cached("SELECT payer FROM batches WHERE id = ?1")?
        .query_row([id_blob(batch.0)], |row| row.get(0))
        .optional()?
        .flatten();
    blocks::insert(&conn_tx, batch, payer.as_deref(), items)?;
    conn_tx.commit()?;
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
                    b.status.as_str(),
                    b.format.as_str(),
                    b.mode.as_str(),
                    b.on_invalid.as_str(),
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
            conn.execute("DELETE FROM batch_item_blocks WHERE batch = ?1", [id_blob(batch.0)])?;
            conn.execute("DELETE FROM batch_totals WHERE batch = ?1", [id_blob(batch.0)])?;
            Ok(())
        })
    }

    fn insert_batch_items(&self, batch: BatchId, items: &[BatchItemRow]) -> Result<()> {
        // Not synced: see `insert_items`; the item writer's connection is the only one with
        // `synchronous=NORMAL`, and nothing else runs on it.
        self.with_item_writer(|conn| insert_items(conn, batch, items))
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
                params![
                    blob,
                    v.status.as_str(),
                    int(v.total),
                    int(v.invalid),
                    v.variant,
                    v.message_id,
                    v.rejection,
                    int(v.now)
                ],
            )?;
            if v.status == BatchStatus::Rejected {
                tx.execute(
                    "INSERT INTO outbox (tenant, type, object, created_at)
                     SELECT tenant, ?3, id, ?2 FROM batches WHERE id = ?1",
                    params![blob, int(v.now), EventKind::BatchRejected.as_str()],
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

    fn batches(&self, tenant: TenantId, status: Option<BatchStatus>, page: Page<BatchId>) -> Result<Vec<BatchRecord>> {
        let before = id_blob(page.after.map_or(u128::MAX, |id| id.0));
        let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
        self.with(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT * FROM batches WHERE tenant = ?1 AND (?2 IS NULL OR status = ?2) AND id < ?3
                     ORDER BY id DESC LIMIT ?4",
                )?
                .query_map(params![id_blob(tenant.0), status.map(BatchStatus::as_str), before, limit], batch_from)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
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
        statuses: &[ItemStatus],
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<BatchItemRow>> {
        self.with(|conn| {
            let tx = conn.unchecked_transaction()?;
            let items = list_items(&tx, batch, statuses, after, limit)?;
            tx.finish()?;
            Ok(items)
        })
    }

    fn visit_batch_items(
        &self,
        batch: BatchId,
        after: Option<u64>,
        limit: usize,
        visit: &mut dyn FnMut(&ItemView<'_>) -> bool,
    ) -> Result<usize> {
        self.with(|conn| {
            let tx = conn.unchecked_transaction()?;
            let shown = walk(&tx, batch, after, limit, visit)?;
            tx.finish()?;
            Ok(shown)
        })
    }

    fn batch_work(
        &self,
        batch: BatchId,
        status: ItemStatus,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<BatchItem>> {
        self.with(|conn| {
            let tx = conn.unchecked_transaction()?;
            let items: Vec<Sendable> = list_items(&tx, batch, &[status], after, limit)?;
            tx.finish()?;
            Ok(items.into_iter().filter_map(|s| s.item).collect())
        })
    }

    fn item_references(
        &self,
        tenant: TenantId,
        transfers: &[paycore_ledger::Transfer],
    ) -> Result<Vec<Option<ItemReference>>> {
        self.with(|conn| {
            // The block that holds the index, of the batches in the range that are the tenant's.
            let mut stmt = conn.prepare_cached(
                "SELECT k.batch, k.first, k.last, k.data FROM batches b JOIN batch_item_blocks k ON k.batch = b.id
                     AND k.first = (SELECT first FROM batch_item_blocks
                                    WHERE batch = b.id AND first <= ?3 ORDER BY first DESC LIMIT 1)
                 WHERE b.id BETWEEN ?1 AND ?2 AND b.tenant = ?4 AND k.last >= ?3",
            )?;
            // A statement's transfers come in time order, so most of one batch's follow each
            // other in index order: the last block read serves them, each found from where
            // the last was.
            let mut last: Option<Loaded> = None;
            let mut references = Vec::with_capacity(transfers.len());
            for transfer in transfers {
                let Some((batches, index)) = BatchId::item_of(transfer.id) else {
                    references.push(None);
                    continue;
                };
                if let Some(block) = last.as_mut().filter(|b| batches.contains(&b.batch) && b.covers(index)) {
                    if let Some(found) = reference_in(block, index, transfer)? {
                        references.push(Some(found));
                        continue;
                    }
                }
                let mut rows = stmt.query(params![
                    id_blob(batches.start().0),
                    id_blob(batches.end().0),
                    i64::try_from(index).unwrap_or(i64::MAX),
                    id_blob(tenant.0),
                ])?;
                let mut found = None;
                while let Some(row) = rows.next()? {
                    let mut block =
                        Loaded::new(BatchId(blob_id(row, "batch")?), uint_at(row, 1)?, uint_at(row, 2)?, row.get(3)?);
                    found = reference_in(&mut block, index, transfer)?;
                    last = Some(block);
                    if found.is_some() {
                        break;
                    }
                }
                references.push(found);
            }
            Ok(references)
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
                // Spelled as the partial index `batches_active` (migration 0002) spells it, so
                // that SQLite uses it: a bound status would not imply the index's `WHERE`.
                .prepare(ACTIVE_BATCHES_SQL)?
                .query_map([], batch_from)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn claim_next_batch(&self, claim: &Claim<'_>) -> Result<Option<BatchRecord>> {
        self.with(|conn| super::leases::claim_next_batch(conn, claim))
    }

    fn claim_batch(&self, batch: BatchId, claim: &Claim<'_>) -> Result<Option<BatchRecord>> {
        self.with(|conn| super::leases::claim_batch(conn, batch, claim))
    }

    fn renew_batch_lease(&self, batch: BatchId, owner: &str, until: u64) -> Result<bool> {
        self.with(|conn| super::leases::renew_batch_lease(conn, batch, owner, until))
    }

    fn release_batch_lease(&self, batch: BatchId, owner: &str) -> Result<bool> {
        self.with(|conn| super::leases::release_batch_lease(conn, batch, owner))
    }

    fn batch_payment(
        &self,
        tenant: TenantId,
        payment: paycore_ledger::PaymentId,
    ) -> Result<Option<paycore_ledger::Payment>> {
        crate::Reader::payment(self, tenant, payment)
    }

    fn find_account(&self, tenant: TenantId, text: &str, currency: Option<Currency>) -> Result<Option<Account>> {
        self.account_with(|conn| {
            if let Ok(id) = text.parse::<AccountId>() {
                return conn
                    .prepare_cached("SELECT * FROM accounts WHERE shard = ?3 AND id = ?1 AND tenant = ?2")?
                    .query_row(params![id_blob(id.0), id_blob(tenant.0), shard_key(id)], account_from)
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
    fn file_writer(&self, file: &str) -> Result<Box<dyn crate::FileSink>> {
        super::files::writer(self.folder(), file)
    }

    fn open_file(&self, file: &str) -> Result<Option<Box<dyn std::io::Read + Send>>> {
        super::files::open(self.folder(), file)
    }

    fn file_size(&self, file: &str) -> Result<Option<u64>> {
        super::files::size(self.folder(), file)
    }

    fn remove_file(&self, file: &str) -> Result<()> {
        super::files::remove(self.folder(), file)
    }
}
