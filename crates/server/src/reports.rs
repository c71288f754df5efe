//! Batch reports: the per-item results of a batch as CSV or pain.002.
//!
//! The report a batch will most likely be asked for is written while the batch runs, by
//! [`ReportFiles::follow`]: pain.002 (in the version that answers the file) for a pain.001
//! file, CSV for any other. The items are read back a window at a time as their results are
//! committed, and each line is written once its item's status is final. When the batch ends,
//! the report is complete, so `GET /v1/batches/{id}/report` sends a file instead of reading
//! and formatting every item (for a million items, 1.1 s of CSV or 1.7 s of pain.002 after the
//! batch has ended, now spent while the engine commits). A pain.002 file holds the
//! transactions and the document's end; its header, which counts the results and carries the
//! report's creation time, is written on request in front of it. Any other report (the other
//! format, a rejected batch, a batch that ended before this process wrote its file) is written
//! on request by the same functions.
//!
//! Files in `<data>/reports`, by stage: `<id>.<kind>.part` while written; `….unsynced` once
//! complete (sent from then on); `<id>.<kind>` once synced to disk. A start removes every
//! `.part` and `.unsynced` file: what a crash of the machine may have cut short is never sent,
//! and is written again on request.

use crate::render::format_total;
use crate::render::rfc3339;
use paycore_formats::{
    group_status, write_pain002_header, CsvReportWriter, LineStatus, Pain002Header, Pain002Version, Pain002Writer,
    ReportLine,
};
use paycore_ledger::{BatchFormat, BatchId, BatchStatus, ItemStatus as Stored, TenantId};
use paycore_store::{BatchRecord, BatchStore, BatchTotal, ItemView};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Where report files are kept, under the data folder.
pub const REPORTS_DIR: &str = "reports";
/// Items read from the store per step while writing a report.
const REPORT_CHUNK: usize = 4096;
/// How long [`ReportFiles::follow`] waits for the next results before it reads again.
const FOLLOW_POLL: Duration = Duration::from_millis(10);

/// Which report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportKind {
    Csv,
    Pain002(Pain002Version),
}

impl ReportKind {
    /// The report written while a batch runs: pain.002 for an ISO 20022 file, CSV for others.
    pub fn ahead(batch: &BatchRecord) -> ReportKind {
        if batch.format == BatchFormat::Pain001 {
            ReportKind::Pain002(Pain002Version::answering(batch.variant.as_deref()))
        } else {
            ReportKind::Csv
        }
    }

    fn file_name(self, batch: BatchId) -> String {
        match self {
            ReportKind::Csv => format!("{batch}.csv"),
            ReportKind::Pain002(version) => format!("{batch}.{}.body", version.name()),
        }
    }
}

/// A report file written while its batch ran.
pub struct ReportFile {
    pub file: File,
    pub bytes: u64,
}

/// The report files of the data folder.
pub struct ReportFiles {
    dir: PathBuf,
    /// The reports being written, each with a channel that closes when its file is complete
    /// or given up.
    writing: Mutex<HashMap<BatchId, (ReportKind, tokio::sync::watch::Receiver<()>)>>,
}

impl ReportFiles {
    /// Makes `<data>/reports` if needed and removes the files a stop left unfinished or unsynced.
    pub fn open(data_dir: &Path) -> io::Result<ReportFiles> {
        let dir = data_dir.join(REPORTS_DIR);
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "part" || e == "unsynced") {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(ReportFiles { dir, writing: Mutex::new(HashMap::new()) })
    }

    /// Removes the complete report files last written before `before`, except those being
    /// written (retention: a report removed is written again on request, from the items);
    /// returns how many it removed. `.part` and `.unsynced` files are left to [`ReportFiles::open`].
    pub fn prune(&self, before: std::time::SystemTime) -> io::Result<usize> {
        let writing: Vec<String> = match self.writing.lock() {
            Ok(writing) => writing.keys().map(|batch| batch.to_string()).collect(),
            Err(_) => return Ok(0),
        };
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let unfinished = name.ends_with(".part") || name.ends_with(".unsynced");
            if unfinished || writing.iter().any(|batch| name.starts_with(batch.as_str())) {
                continue;
            }
            let old = entry.metadata().and_then(|m| m.modified()).is_ok_and(|modified| modified < before);
            if old {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(removed)
    }

    fn path(&self, batch: BatchId, kind: ReportKind, stage: &str) -> PathBuf {
        self.dir.join(format!("{}{stage}", kind.file_name(batch)))
    }

    /// The `kind` report of an ended batch, if it was written while the batch ran. If it is
    /// being written still, waits for it (not for a follower writing the other kind): a batch's status says `completed` as soon as its
    /// last items are committed, while its report may be a few windows behind, and finishing
    /// it is quicker than writing another.
    pub async fn written(&self, batch: BatchId, kind: ReportKind) -> Option<ReportFile> {
        let writing = self.writing.lock().ok().and_then(|writing| writing.get(&batch).cloned());
        if let Some((_, mut done)) = writing.filter(|(written, _)| *written == kind) {
            // Returns when the sender is dropped; nothing is ever sent.
            let _ = done.changed().await;
        }
        let (synced, unsynced) = (self.path(batch, kind, ""), self.path(batch, kind, ".unsynced"));
        tokio::task::spawn_blocking(move || {
            // Synced, else complete but not synced yet; the first again, in case the file was
            // renamed from one name to the other between the two tries.
            let file = File::open(&synced).or_else(|_| File::open(&unsynced)).or_else(|_| File::open(&synced)).ok()?;
            let bytes = file.metadata().ok()?.len();
            Some(ReportFile { file, bytes })
        })
        .await
        .ok()
        .flatten()
    }

    /// Writes the report of `batch` that [`ReportKind::ahead`] names while the batch runs
    /// (blocking: run it on a blocking thread), until the batch has ended and every line is
    /// written. Gives up, leaving no file, if `run_over` is set while the batch has not ended
    /// (the service is stopping: the next start writes it again), or if the batch is not
    /// processing (rejected: its report is written on request). Returns whether the report
    /// was written.
    pub fn follow(
        &self,
        store: &dyn BatchStore,
        tenant: TenantId,
        batch: BatchId,
        run_over: &AtomicBool,
    ) -> io::Result<bool> {
        let record = store.batch(tenant, batch).map_err(io::Error::other)?;
        // A NACHA batch's items may be returned after it ends (`crate::routes::batches`), so its
        // reports are written on request, never ahead.
        let followed = |b: &BatchRecord| b.status == BatchStatus::Processing && b.format != BatchFormat::Nacha;
        let Some(record) = record.filter(followed) else { return Ok(false) };
        let kind = ReportKind::ahead(&record);
        let (done, waiting) = tokio::sync::watch::channel(());
        if let Ok(mut writing) = self.writing.lock() {
            writing.insert(batch, (kind, waiting));
        }
        let (part, unsynced) = (self.path(batch, kind, ".part"), self.path(batch, kind, ".unsynced"));
        let written = write_part(&part, kind, store, &record, run_over).and_then(|complete| {
            if complete {
                std::fs::rename(&part, &unsynced).map(|()| true)
            } else {
                Ok(false)
            }
        });
        if let Ok(mut writing) = self.writing.lock() {
            writing.remove(&batch);
        }
        drop(done);
        if !matches!(written, Ok(true)) {
            let _ = std::fs::remove_file(&part);
            return written;
        }
        // Sent from now on; synced after, off the path of anyone waiting for it.
        File::open(&unsynced)?.sync_all()?;
        std::fs::rename(&unsynced, self.path(batch, kind, ""))?;
        File::open(&self.dir)?.sync_all()?;
        Ok(true)
    }
}

/// Writes report lines, either kind. One per follower, on its stack: the size is no matter.
#[allow(clippy::large_enum_variant)]
enum LineWriter<W: Write> {
    Csv(CsvReportWriter<W>),
    Pain002(Pain002Writer<W>),
}

impl<W: Write> LineWriter<W> {
    fn line(&mut self, line: &ReportLine<'_>) -> io::Result<()> {
        match self {
            LineWriter::Csv(writer) => writer.line(line),
            LineWriter::Pain002(writer) => writer.line(line),
        }
    }

    /// Hands every line written so far to the output.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            LineWriter::Csv(writer) => writer.flush(),
            LineWriter::Pain002(writer) => writer.flush(),
        }
    }

    fn finish(self) -> io::Result<W> {
        match self {
            LineWriter::Csv(writer) => writer.finish(),
            LineWriter::Pain002(writer) => writer.finish(),
        }
    }
}

/// Where a report's lines are written while the store shows their items: memory. The store
/// shows items inside its read ([`BatchStore::visit_batch_items`]), so a window's lines are
/// formatted into the spool then, and written to the file or the response once the read has
/// ended ([`Spool::drain_to`]): no file or network write, which may wait, holds a read open
/// (an open read keeps SQLite's checkpointer from resetting the WAL, which the engine's
/// commits then grow). A window of 4 096 pain.002 lines is about 1.1 MB.
#[derive(Clone, Default)]
struct Spool(Rc<RefCell<Vec<u8>>>);

impl Write for Spool {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.borrow_mut().extend_from_slice(bytes);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Spool {
    /// Writes what the spool holds to `out` and empties it (its memory is kept for the next
    /// window).
    fn drain_to(&self, out: &mut impl Write) -> io::Result<()> {
        let mut bytes = self.0.borrow_mut();
        out.write_all(&bytes)?;
        bytes.clear();
        Ok(())
    }
}

/// The report into `part`, following the batch until it ends; see [`ReportFiles::follow`].
fn write_part(
    part: &Path,
    kind: ReportKind,
    store: &dyn BatchStore,
    batch: &BatchRecord,
    run_over: &AtomicBool,
) -> io::Result<bool> {
    let mut out = BufWriter::with_capacity(256 * 1024, File::create(part)?);
    let spool = Spool::default();
    let mut writer = match kind {
        ReportKind::Csv => LineWriter::Csv(CsvReportWriter::new(spool.clone())?),
        ReportKind::Pain002(version) => {
            LineWriter::Pain002(Pain002Writer::body(spool.clone(), version, &batch.id.to_string()))
        }
    };
    let mut after = None;
    // The last window read stopped at an item the engine had not reached: the next read
    // looks at that one item first, and reads a window only once it is final. Otherwise a
    // follower that keeps up with the engine decodes a window of items still pending at every
    // poll (about one window per engine chunk), to write none of them.
    let mut caught_up = false;
    loop {
        // Whether the run was over, read before the status: if it was, the status read next
        // is the last the batch will have, and a batch not ended by then was stopped.
        let over = run_over.load(Ordering::Acquire);
        // The status, read before the items: if the batch had ended then, every item read
        // after is final.
        let status = store.batch(batch.tenant, batch.id).map_err(io::Error::other)?.map(|b| b.status);
        let ended = match status {
            Some(BatchStatus::Completed | BatchStatus::Cancelled) => true,
            Some(BatchStatus::Processing) => false,
            _ => return Ok(false),
        };
        if caught_up && !ended {
            let mut pending = false;
            store
                .visit_batch_items(batch.id, after, 1, &mut |item| {
                    pending = matches!(item.status, Stored::Pending | Stored::Held);
                    false
                })
                .map_err(io::Error::other)?;
            if pending {
                if over {
                    return Ok(false);
                }
                std::thread::sleep(FOLLOW_POLL);
                continue;
            }
        }
        let (from, mut waiting, mut failed) = (after, false, None);
        // Formatted into the spool inside the store's read; written to the file after it.
        let fetched = store
            .visit_batch_items(batch.id, from, REPORT_CHUNK, &mut |item| {
                // `pending` (not paid yet) and `held` (an atomic batch's first phase) change
                // later; every other status is final.
                if !ended && matches!(item.status, Stored::Pending | Stored::Held) {
                    waiting = true;
                    return false;
                }
                if let Err(error) = writer.line(&report_line(None, item)) {
                    failed = Some(error);
                    return false;
                }
                after = Some(item.index);
                true
            })
            .map_err(io::Error::other)?;
        if let Some(error) = failed {
            return Err(error);
        }
        writer.flush()?;
        spool.drain_to(&mut out)?;
        caught_up = waiting;
        if ended && fetched < REPORT_CHUNK {
            writer.finish()?;
            spool.drain_to(&mut out)?;
            out.into_inner().map_err(io::IntoInnerError::into_error)?;
            return Ok(true);
        }
        if waiting || fetched < REPORT_CHUNK {
            if over {
                return Ok(false);
            }
            std::thread::sleep(FOLLOW_POLL);
        }
    }
}

/// One report line, borrowed from the item. `rejected`: the code of the batch's rejection,
/// when it was rejected.
fn report_line<'a>(rejected: Option<&'a str>, item: &ItemView<'a>) -> ReportLine<'a> {
    let code = item.failure_code;
    let status = match (item.status, rejected) {
        (Stored::Succeeded, _) => LineStatus::Succeeded,
        (Stored::Returned, _) => LineStatus::Returned { code: code.unwrap_or_default() },
        (Stored::Pending | Stored::Held, Some(code)) => LineStatus::Failed { code },
        (Stored::Pending | Stored::Held, None) => LineStatus::Pending,
        // A prenote, zero-dollar entry or recorded notification of change: reported, not refused.
        (Stored::Invalid, _) if code.is_some_and(paycore_engine::returns::is_not_refused) => {
            LineStatus::Skipped { code: code.unwrap_or_default() }
        }
        _ => LineStatus::Failed { code: code.unwrap_or("failed") },
    };
    ReportLine {
        line: item.line,
        reference: item.reference,
        instruction_id: item.instruction_id,
        payment_information_id: item.payment_information_id,
        payer: item.payer_text,
        payee: item.payee_text.unwrap_or_default(),
        amount: item.amount.unwrap_or(0),
        currency: item.currency,
        status,
    }
}

/// The code of a whole-batch rejection, for its valid items.
fn rejection_code(batch: &BatchRecord) -> String {
    batch
        .rejection
        .as_deref()
        .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
        .and_then(|r| r["code"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "rejected".into())
}

/// Writes the report of an ended batch from the store through `writer`, whose output is
/// `spool`, into `out`: each window of items formatted into the spool while the store reads
/// it, then written to `out` once the read has ended (`out` may be a response that waits for
/// its client), then the report's end.
fn write_report<W: Write>(
    store: &dyn BatchStore,
    batch: &BatchRecord,
    mut writer: LineWriter<Spool>,
    spool: &Spool,
    mut out: W,
) -> io::Result<W> {
    let rejected = (batch.status == BatchStatus::Rejected).then(|| rejection_code(batch));
    let mut after = None;
    loop {
        let (from, mut failed) = (after, None);
        let shown = store
            .visit_batch_items(batch.id, from, REPORT_CHUNK, &mut |item| {
                after = Some(item.index);
                match writer.line(&report_line(rejected.as_deref(), item)) {
                    Ok(()) => true,
                    Err(error) => {
                        failed = Some(error);
                        false
                    }
                }
            })
            .map_err(io::Error::other)?;
        if let Some(error) = failed {
            return Err(error);
        }
        writer.flush()?;
        spool.drain_to(&mut out)?;
        // A read shows fewer than it may only when no item is left.
        if shown < REPORT_CHUNK {
            break;
        }
    }
    writer.finish()?;
    spool.drain_to(&mut out)?;
    out.flush()?;
    Ok(out)
}

/// Writes the CSV report of an ended batch from the store.
pub fn write_csv<W: Write>(store: &dyn BatchStore, batch: &BatchRecord, out: W) -> io::Result<W> {
    let spool = Spool::default();
    let writer = LineWriter::Csv(CsvReportWriter::new(spool.clone())?);
    write_report(store, batch, writer, &spool, out)
}

/// Writes the NACHA return file of an ended NACHA batch: every entry that was not paid (refused
/// at validation, failed, voided, cancelled, or in a rejected file) goes back with the R-code
/// of its failure ([`paycore_formats::return_reason`]); prenotes, zero-dollar entries, and the
/// file's own returns and notifications of change are not entries to return. The original
/// file is read again from the store; the lines to return are collected first (a map of line
/// to R-code, 16 bytes or so an item).
pub fn write_nacha_return<W: Write>(
    store: &dyn BatchStore,
    batch: &BatchRecord,
    created_at: u64,
    out: W,
) -> io::Result<W> {
    let mut returned = std::collections::BTreeMap::new();
    let mut after = None;
    loop {
        let rows = store.batch_items(batch.id, &[], after, REPORT_CHUNK).map_err(io::Error::other)?;
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else { break };
        after = Some(last.index);
        // The file's own returns (a reversal that failed) are not entries to send back.
        let returns: std::collections::HashSet<u64> = store
            .item_links(batch.id, first.index, last.index)
            .map_err(io::Error::other)?
            .into_iter()
            .filter(|l| l.batch == batch.id)
            .map(|l| l.index)
            .collect();
        for row in rows {
            let code = row.failure_code.as_deref().unwrap_or("");
            // A returned item was paid, and its return is already the bank's answer.
            let unpaid = !matches!(row.status, Stored::Succeeded | Stored::Held | Stored::Returned);
            let not_an_entry = paycore_engine::returns::is_not_refused(code)
                || matches!(
                    code,
                    "return_entry_not_matched"
                        | "notification_of_change"
                        | "already_returned"
                        | "return_amount_mismatch"
                        | "change_entry_not_matched"
                );
            if unpaid && !not_an_entry && !returns.contains(&row.index) {
                returned.insert(row.line, paycore_formats::return_reason(code));
            }
        }
    }
    let file = batch.file.as_deref().ok_or_else(|| io::Error::other("the batch has no stored file"))?;
    let original = store
        .open_file(file)
        .map_err(io::Error::other)?
        .ok_or_else(|| io::Error::other("the batch's file is no longer stored"))?;
    let stamp = rfc3339(created_at);
    let made = paycore_formats::ReturnFileDate {
        date: format!("{}{}{}", &stamp[2..4], &stamp[5..7], &stamp[8..10]),
        time: format!("{}{}", &stamp[11..13], &stamp[14..16]),
    };
    paycore_formats::write_nacha_returns(io::BufReader::new(original), &returned, &made, out).map_err(|error| {
        match error {
            paycore_formats::ReturnFileError::Io(error) => error,
            other => io::Error::other(other.to_string()),
        }
    })
}

/// How many of an ended batch's `invalid` items are skipped records, not refusals (NACHA
/// prenotes, zero-dollar entries, recorded notifications of change: only NACHA files have
/// them), read from its invalid items.
pub fn skipped_items(store: &dyn BatchStore, batch: &BatchRecord) -> paycore_store::Result<u64> {
    if batch.format != BatchFormat::Nacha || batch.invalid == 0 {
        return Ok(0);
    }
    let (mut skipped, mut after) = (0, None);
    loop {
        let rows = store.batch_items(batch.id, &[Stored::Invalid], after, REPORT_CHUNK)?;
        let Some(last) = rows.last() else { return Ok(skipped) };
        after = Some(last.index);
        let of_page =
            rows.iter().filter(|r| r.failure_code.as_deref().is_some_and(paycore_engine::returns::is_not_refused));
        skipped += of_page.count() as u64;
    }
}

/// The header of the pain.002 report of an ended batch; `skipped` is [`skipped_items`] (not
/// counted as rejections), `created_at` its `CreDtTm` (nanoseconds since the epoch).
pub fn pain002_header(batch: &BatchRecord, totals: &[BatchTotal], skipped: u64, created_at: u64) -> Pain002Header {
    let rejected = batch.status == BatchStatus::Rejected;
    let refused = batch.invalid.saturating_sub(skipped);
    let group = if rejected { "RJCT" } else { group_status(batch.succeeded, batch.failed + refused) };
    let ctrl_sum = match totals {
        [total] => Some(format_total(total.sum, total.currency)),
        _ => None,
    };
    Pain002Header {
        message_id: format!("PAYCORE-{}", batch.id),
        created_at: rfc3339(created_at).chars().take(19).collect(),
        original_message_id: batch.message_id.clone().unwrap_or_else(|| batch.id.to_string()),
        original_message_name_id: batch.variant.clone().unwrap_or_else(|| batch.format.as_str().to_uppercase()),
        original_count: Some(batch.total),
        original_ctrl_sum: ctrl_sum,
        group_status: group.to_owned(),
        group_reason: rejected.then(|| rejection_code(batch)),
        default_payment_information_id: batch.id.to_string(),
    }
}

/// The beginning of a pain.002 report, for the transactions of a file written ahead.
pub fn pain002_header_bytes(header: &Pain002Header, version: Pain002Version) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1024);
    // Writing to memory cannot fail.
    let _ = write_pain002_header(&mut bytes, version, header);
    bytes
}

/// Writes the pain.002 report of an ended batch from the store.
pub fn write_pain002<W: Write>(
    store: &dyn BatchStore,
    batch: &BatchRecord,
    header: &Pain002Header,
    version: Pain002Version,
    out: W,
) -> io::Result<W> {
    let spool = Spool::default();
    let writer = LineWriter::Pain002(Pain002Writer::begin(spool.clone(), version, header)?);
    write_report(store, batch, writer, &spool, out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use paycore_formats::{ItemStatus, ReportItem};
    use paycore_ledger::{AccountId, BatchEnd, BatchStep, Command, Currency, NewAccount, Overdraft, State};
    use paycore_store::{BatchItemRow, Validated};

    /// A report line read whole, as reports were written before they read items borrowed.
    fn report_item(rejected: Option<&str>, row: BatchItemRow) -> ReportItem {
        let status = match (row.status, rejected) {
            (Stored::Succeeded, _) => ItemStatus::Succeeded,
            (Stored::Returned, _) => ItemStatus::Returned { code: row.failure_code.unwrap_or_default() },
            (Stored::Pending | Stored::Held, Some(code)) => ItemStatus::Failed { code: code.to_owned() },
            (Stored::Pending | Stored::Held, None) => ItemStatus::Pending,
            (Stored::Invalid, _)
                if row.failure_code.as_deref().is_some_and(paycore_engine::returns::is_not_refused) =>
            {
                ItemStatus::Skipped { code: row.failure_code.unwrap_or_default() }
            }
            _ => ItemStatus::Failed { code: row.failure_code.unwrap_or_else(|| "failed".into()) },
        };
        ReportItem {
            line: row.line,
            location: row.location,
            reference: row.reference,
            instruction_id: row.instruction_id,
            payment_information_id: row.payment_information_id,
            payer: row.payer_text,
            payee: row.payee_text.unwrap_or_default(),
            amount: row.amount.unwrap_or(0),
            currency: row.currency,
            status,
        }
    }

    /// Every item of the batch read whole, a window of rows at a time.
    fn whole_rows(store: &dyn BatchStore, batch: &BatchRecord) -> Vec<ReportItem> {
        let rejected = (batch.status == BatchStatus::Rejected).then(|| rejection_code(batch));
        let (mut items, mut after) = (Vec::new(), None);
        loop {
            let rows = store.batch_items(batch.id, &[], after, REPORT_CHUNK).unwrap();
            let Some(last) = rows.last() else { return items };
            after = Some(last.index);
            items.extend(rows.into_iter().map(|row| report_item(rejected.as_deref(), row)));
        }
    }

    /// Runs `commands` through the ledger and commits them, as the engine does.
    fn step(state: &mut State, store: &mut dyn paycore_store::Store, now: u64, commands: Vec<Command>) {
        paycore_store::testing::step(state, store, TenantId(1), now, commands).1.unwrap();
    }

    /// A batch's item: items whose index is 5 mod 97 are paid by account 3, which has no money
    /// (they fail), the rest by account 1; every 500th is invalid, every 1 000th of those a
    /// prenote (reported, not refused); texts with characters outside ASCII, payees named by
    /// id and by a name, the payer named as the batch names it or otherwise, and payment
    /// information ids that change every 700 items (pain.002 blocks).
    fn item(index: u64) -> BatchItemRow {
        let eur = Currency::from_code("EUR");
        let payer = if index % 97 == 5 { 3 } else { 1 };
        let invalid = index % 500 == 499;
        let code = if index % 1_000 == 999 { "prenote" } else { "account_not_found" };
        BatchItemRow {
            index,
            line: index + 2,
            location: if index % 10 == 3 { format!("record {index}") } else { format!("line {}", index + 2) },
            reference: (!index.is_multiple_of(13)).then(|| format!("Rechnung-{index}-äöü-€-日本")),
            instruction_id: index.is_multiple_of(3).then(|| format!("instr-{index}-ß")),
            payment_information_id: (index % 1_400 >= 700).then(|| format!("PMT-{}-é", index / 700)),
            payer_text: Some(if index.is_multiple_of(11) {
                "Zahler GmbH".to_owned()
            } else {
                AccountId(payer).to_string()
            }),
            payee_text: Some(if index.is_multiple_of(5) {
                "Lieferant Müller".to_owned()
            } else {
                AccountId(2).to_string()
            }),
            payer: Some(AccountId(payer)),
            payee: (!invalid).then_some(AccountId(2)),
            amount: (index % 17 != 1).then_some(1 + index % 1_000),
            currency: if index % 19 == 7 { None } else { eur },
            status: if invalid { Stored::Invalid } else { Stored::Pending },
            failure_code: invalid.then(|| code.to_owned()),
            message: invalid.then(|| "Empfänger unbekannt".to_owned()),
            remittance: index.is_multiple_of(7).then(|| format!("Invoice {index} & <co> ü")),
        }
    }

    #[test]
    fn borrowed_reads_write_the_bytes_whole_rows_write() {
        const N: u64 = 9_500;
        let data = tempfile::tempdir().unwrap();
        let paycore_store::Opened { mut store, api } = paycore_store::open(data.path()).unwrap();
        let batches: &dyn BatchStore = api.as_ref();
        let reports = ReportFiles::open(data.path()).unwrap();
        let mut state = State::default();
        let eur = Currency::from_code("EUR").unwrap();
        let open = |id: u128, overdraft| {
            Command::CreateAccount(NewAccount {
                id: AccountId(id),
                currency: eur,
                overdraft,
                reference: None,
                metadata: None,
            })
        };
        step(
            &mut state,
            store.as_mut(),
            10,
            vec![open(1, Overdraft::Unlimited), open(2, Overdraft::Limit(0)), open(3, Overdraft::Limit(0))],
        );
        let rows: Vec<BatchItemRow> = (0..N).map(item).collect();
        let invalid = rows.iter().filter(|r| r.status == Stored::Invalid).count() as u64;
        let validated = Validated {
            status: BatchStatus::Processing,
            total: N,
            invalid,
            totals: &[],
            variant: None,
            message_id: None,
            rejection: None,
            now: 12,
        };
        // A pain.001 batch (its pain.002 written ahead) and a CSV one (its CSV), both with
        // the batch's payer named as some items name it, paid while their followers write.
        let pain001 = BatchId(7 << 64);
        let csv = BatchId(8 << 64);
        for (id, format, variant) in
            [(pain001, BatchFormat::Pain001, Some("pain.001.001.09")), (csv, BatchFormat::Csv, None)]
        {
            let mut record = BatchRecord::new(id, TenantId(1), format, 11);
            record.payer = Some("Zahler GmbH".into());
            api.create_batch(&record).unwrap();
            for chunk in rows.chunks(4_000) {
                api.insert_batch_items(id, chunk).unwrap();
            }
            api.finish_validation(id, &Validated { variant, ..validated.clone() }).unwrap();
        }
        let run_over = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let followers: Vec<_> = [pain001, csv]
                .into_iter()
                .map(|id| {
                    let (reports, run_over) = (&reports, &run_over);
                    scope.spawn(move || reports.follow(batches, TenantId(1), id, run_over).unwrap())
                })
                .collect();
            // Paid 1 500 at a time, the last 300 valid items never sent: the batches complete
            // without them (voided).
            let mut now = 20;
            for id in [pain001, csv] {
                let mut after = None;
                loop {
                    let work = api.batch_work(id, Stored::Pending, after, 1_500).unwrap();
                    let Some(last) = work.last() else { break };
                    after = Some(last.index);
                    let send: Vec<_> = work.into_iter().filter(|i| i.index < N - 300).collect();
                    if send.is_empty() {
                        break;
                    }
                    now += 10;
                    step(
                        &mut state,
                        store.as_mut(),
                        now,
                        vec![Command::BatchItems { batch: id, step: BatchStep::Pay, items: send }],
                    );
                    std::thread::sleep(Duration::from_millis(15));
                }
                now += 10;
                step(&mut state, store.as_mut(), now, vec![Command::EndBatch { batch: id, end: BatchEnd::Completed }]);
            }
            for follower in followers {
                assert!(follower.join().unwrap(), "the follower wrote its report");
            }
        });

        let record = api.batch(TenantId(1), pain001).unwrap().unwrap();
        let items = whole_rows(batches, &record);
        assert_eq!(items.len() as u64, N);
        // Every kind of line is there: succeeded, failed by the ledger, invalid, skipped, voided.
        let has = |status: &ItemStatus| items.iter().any(|i| &i.status == status);
        assert!(has(&ItemStatus::Succeeded));
        assert!(has(&ItemStatus::Failed { code: "insufficient_funds".into() }));
        assert!(has(&ItemStatus::Failed { code: "account_not_found".into() }));
        assert!(has(&ItemStatus::Skipped { code: "prenote".into() }));
        assert!(has(&ItemStatus::Failed { code: "batch_aborted".into() }));
        let version = Pain002Version::V10;
        let kind = ReportKind::Pain002(version);
        let header = pain002_header(&record, &[], 0, 1_700_000_000_000_000_000);
        // pain.002 written ahead (the body), and on request (header and body), against the
        // same from whole rows.
        let mut body = Pain002Writer::body(Vec::new(), version, &record.id.to_string());
        for item in &items {
            body.item(item).unwrap();
        }
        let body = body.finish().unwrap();
        assert_eq!(std::fs::read(reports.path(pain001, kind, "")).unwrap(), body);
        let mut whole = Pain002Writer::begin(Vec::new(), version, &header).unwrap();
        for item in &items {
            whole.item(item).unwrap();
        }
        let whole = whole.finish().unwrap();
        assert_eq!(write_pain002(batches, &record, &header, version, Vec::new()).unwrap(), whole);
        assert!(std::str::from_utf8(&whole).unwrap().contains("Rechnung-1-äöü-€-日本"));
        let csv_whole = paycore_formats::write_csv_report(items, Vec::new()).unwrap();
        assert_eq!(write_csv(batches, &record, Vec::new()).unwrap(), csv_whole);

        // The CSV batch: its CSV written ahead and on request.
        let record = api.batch(TenantId(1), csv).unwrap().unwrap();
        let csv_whole = paycore_formats::write_csv_report(whole_rows(batches, &record), Vec::new()).unwrap();
        assert_eq!(std::fs::read(reports.path(csv, ReportKind::Csv, "")).unwrap(), csv_whole);
        assert_eq!(write_csv(batches, &record, Vec::new()).unwrap(), csv_whole);
        assert!(std::str::from_utf8(&csv_whole).unwrap().contains("Lieferant Müller"));

        // A batch rejected at validation: its valid items fail with the rejection's code.
        let rejected = BatchId(9 << 64);
        api.create_batch(&BatchRecord::new(rejected, TenantId(1), BatchFormat::Pain001, 40)).unwrap();
        api.insert_batch_items(rejected, &rows[..600]).unwrap();
        let why = r#"{"code":"control_total_mismatch"}"#;
        let validated =
            Validated { status: BatchStatus::Rejected, total: 600, invalid: 1, rejection: Some(why), ..validated };
        api.finish_validation(rejected, &validated).unwrap();
        let record = api.batch(TenantId(1), rejected).unwrap().unwrap();
        let items = whole_rows(batches, &record);
        assert!(items.iter().any(|i| i.status == ItemStatus::Failed { code: "control_total_mismatch".into() }));
        let csv_whole = paycore_formats::write_csv_report(items.clone(), Vec::new()).unwrap();
        assert_eq!(write_csv(batches, &record, Vec::new()).unwrap(), csv_whole);
        let header = pain002_header(&record, &[], 0, 1_700_000_000_000_000_000);
        let mut whole = Pain002Writer::begin(Vec::new(), Pain002Version::V03, &header).unwrap();
        for item in &items {
            whole.item(item).unwrap();
        }
        let whole = whole.finish().unwrap();
        assert_eq!(write_pain002(batches, &record, &header, Pain002Version::V03, Vec::new()).unwrap(), whole);
    }

    #[test]
    fn a_start_keeps_synced_reports_and_removes_the_rest() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join(REPORTS_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        let names = [
            "bat_a.csv",
            "bat_b.csv.part",
            "bat_c.csv.unsynced",
            "bat_d.pain.002.001.10.body",
            "bat_e.pain.002.001.03.body.part",
        ];
        for name in names {
            std::fs::write(dir.join(name), name).unwrap();
        }
        ReportFiles::open(data.path()).unwrap();
        let mut left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["bat_a.csv", "bat_d.pain.002.001.10.body"]);
    }

    #[tokio::test]
    async fn a_request_waits_for_the_follower_of_its_kind_only() {
        let data = tempfile::tempdir().unwrap();
        let reports = std::sync::Arc::new(ReportFiles::open(data.path()).unwrap());
        let batch = BatchId(9);
        let (done, waiting) = tokio::sync::watch::channel(());
        reports.writing.lock().unwrap().insert(batch, (ReportKind::Csv, waiting));
        // Another kind: no wait, and no file.
        let other = tokio::time::timeout(
            Duration::from_secs(5),
            reports.written(batch, ReportKind::Pain002(Pain002Version::V10)),
        );
        assert!(other.await.unwrap().is_none());
        // Its kind: waits until the follower is done, then finds the file it wrote.
        let asked = tokio::spawn({
            let reports = reports.clone();
            async move { reports.written(batch, ReportKind::Csv).await.map(|f| f.bytes) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!asked.is_finished());
        std::fs::write(data.path().join(REPORTS_DIR).join(ReportKind::Csv.file_name(batch)), b"line\n").unwrap();
        reports.writing.lock().unwrap().remove(&batch);
        drop(done);
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), asked).await.unwrap().unwrap(), Some(5));
    }

    #[test]
    fn the_report_written_ahead_answers_a_pain001_file_in_its_version() {
        let mut batch = BatchRecord::new(BatchId(1), TenantId(1), BatchFormat::Pain001, 0);
        batch.variant = Some("pain.001.001.03".into());
        assert_eq!(ReportKind::ahead(&batch), ReportKind::Pain002(Pain002Version::V03));
        batch.variant = Some("pain.001.001.09".into());
        assert_eq!(ReportKind::ahead(&batch), ReportKind::Pain002(Pain002Version::V10));
        for format in [BatchFormat::Csv, BatchFormat::Jsonl, BatchFormat::Nacha] {
            assert_eq!(ReportKind::ahead(&BatchRecord::new(BatchId(1), TenantId(1), format, 0)), ReportKind::Csv);
        }
        assert_eq!(
            ReportKind::Pain002(Pain002Version::V03).file_name(BatchId(1)),
            format!("{}.pain.002.001.03.body", BatchId(1))
        );
    }
}
