//! Batches: validating a stored file into items, and running the items through the engine.
//!
//! Validation reads the file once, streaming (see `paycore_formats`): every item is checked
//! (syntax, currency and minor units, amount, accounts that exist in the tenant with the
//! item's currency, duplicate references), items are written to the store in chunks, and the
//! control totals decide whether the batch is `rejected` or goes on to `processing`. No money
//! moves before validation is complete. An item whose payer's account is in another currency
//! than the item (the payee's) is priced at the tenant's rate for the pair, one quote per pair
//! for the batch (see `FxBook` and ARCHITECTURE.md, "Cross-currency batch items").
//!
//! The runner then sends the pending items to the engine in chunks on the background lane, so
//! real-time requests go first in every engine batch. Item ids derive from the batch id and the
//! index, and item results are committed with their transfers, so after a crash the runner
//! simply starts again from the items still `pending`: nothing is paid twice.

use crate::returns::{is_not_refused, Returns};
use crate::{EngineError, EngineHandle, Reply, Submission};
use paycore_formats::{check_expected, parse, Diagnostic, FatalError, Format, ParseOptions, Summary};
use paycore_ledger::fx::{batch_item_fx, batch_quote_id, ConversionError, Quote, Rate};
use paycore_ledger::{
    parse_amount, Account, AccountId, BatchEnd, BatchId, BatchItem, BatchMode, BatchStatus, BatchStep, Command,
    Currency, ItemFx, ItemStatus, OnInvalid, Outcome, Request, ResultCode, AMOUNT_MAX,
};
use paycore_store::{BatchItemRow, BatchRecord, BatchStore, BatchTotal, ItemLink, Validated};
use std::collections::{BTreeMap, HashMap};
use std::io::BufReader;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod refunds;

/// Items per engine submission: one full engine batch.
pub const CHUNK_ITEMS: usize = paycore_ledger::BATCH_EVENTS_MAX;
/// Items per engine submission of a refunds batch: each carries its reason (up to 140
/// characters, 560 bytes), so a chunk of them at their widest must stay under two thirds of
/// a NATS payload in cluster mode (`cluster/tests/wire.rs`).
pub const REFUND_CHUNK_ITEMS: usize = 1024;
/// Items written to the store per transaction while validating.
const INSERT_CHUNK: usize = 4096;
/// Resolved accounts remembered while validating one file; the cache is emptied when full so
/// that a file naming a million different payees still runs in bounded memory.
const ACCOUNT_CACHE_MAX: usize = 100_000;

/// Why the whole batch was rejected, as stored (JSON) and shown by the API.
fn rejection(code: &str, message: &str, errors: &[Diagnostic]) -> String {
    let errors: Vec<serde_json::Value> = errors
        .iter()
        .map(|d| {
            serde_json::json!({
                "line": d.line, "location": d.location, "field": d.field, "code": d.code, "message": d.message,
            })
        })
        .collect();
    serde_json::json!({ "code": code, "message": message, "errors": errors }).to_string()
}

/// Validates the stored file of `batch` (blocking: run it on a blocking thread). Leaves the
/// batch `processing` or `rejected` — or, if `stopping` is set meanwhile, `validating`, to be
/// validated again at the next start. No limit on the number of lines: see
/// [`validate_limited`].
pub fn validate(
    store: &dyn BatchStore,
    batch: &BatchRecord,
    clock: &dyn Fn() -> u64,
    stopping: &AtomicBool,
) -> paycore_store::Result<()> {
    validate_limited(store, batch, clock, stopping, u64::MAX)
}

/// [`validate`], rejecting a file of more than `max_lines` items (records, valid or not) with
/// `too_many_lines`, which names the limit `max_batch_lines`.
pub fn validate_limited(
    store: &dyn BatchStore,
    batch: &BatchRecord,
    clock: &dyn Fn() -> u64,
    stopping: &AtomicBool,
    max_lines: u64,
) -> paycore_store::Result<()> {
    store.clear_batch_items(batch.id)?;
    store.clear_batch_fx(batch.id)?;
    let reject = |code: &str, message: String| reject(store, batch, clock, code, &message, &[]);
    let format = batch.format;
    let Some(file) = &batch.file else {
        return reject("missing_file", "the batch has no stored file".into());
    };
    let Some(stored) = store.open_file(file)? else {
        return reject("missing_file", format!("the stored file {file} is not there"));
    };
    let mut input = BufReader::with_capacity(256 * 1024, StoredFile { file: stored, failure: None });
    let currency = batch.currency.as_deref().and_then(Currency::from_code);
    let options = ParseOptions { default_payer: batch.payer.clone(), default_currency: currency };
    let in_two = match format {
        Format::Pain001 => read_items_in_two(store, batch, file, stopping, max_lines, TWO_PARTS_BYTES_MIN)?,
        _ => None,
    };
    let read = if let Some(read) = in_two {
        read
    } else if format == Format::Refunds {
        refunds::read_refunds(store, batch, &mut input, currency, stopping, max_lines)?
    } else {
        read_items(store, batch, format, &mut input, &options, stopping, max_lines)?
    };
    if let Some(failure) = input.into_inner().failure {
        // The store failed to give the file, which says nothing of the file: the batch stays
        // `validating`, and is validated again at the next start.
        store.clear_batch_items(batch.id)?;
        return Err(paycore_store::StoreError::Unavailable(format!("reading the stored file {file}: {failure}")));
    }
    if stopping.load(Ordering::Relaxed) {
        return Ok(());
    }
    if read.too_many {
        store.clear_batch_items(batch.id)?;
        let message = format!("the file has more than {max_lines} items: the limit max_batch_lines is {max_lines}");
        return reject("too_many_lines", message);
    }
    let summary = match &read.summary {
        Ok(summary) => summary,
        Err(fatal) => {
            store.clear_batch_items(batch.id)?;
            let line = fatal.line();
            return reject("malformed_file", fatal_message(fatal, line));
        }
    };
    let expected_total = match expected_total(batch, currency, &summary.totals) {
        Ok(expected_total) => expected_total,
        Err(message) => return reject("invalid_expected_total", message),
    };
    let mut control = summary.control_errors.clone();
    control.extend(check_expected(summary, batch.expected_count, expected_total));
    finish(store, batch, clock, summary, &read, &control)
}

/// Rejects the whole batch: `code`, `message` and the `errors` that show why.
fn reject(
    store: &dyn BatchStore,
    batch: &BatchRecord,
    clock: &dyn Fn() -> u64,
    code: &str,
    message: &str,
    errors: &[Diagnostic],
) -> paycore_store::Result<()> {
    let json = rejection(code, message, errors);
    let validated = Validated {
        status: BatchStatus::Rejected,
        total: 0,
        invalid: 0,
        totals: &[],
        variant: None,
        message_id: None,
        rejection: Some(&json),
        now: clock(),
    };
    store.finish_validation(batch.id, &validated)
}

/// A stored file as the parser reads it, remembering a failure of the store to give it (an
/// I/O error, a lost connection): the parser would take it for the end of a malformed file.
struct StoredFile {
    file: Box<dyn std::io::Read + Send>,
    failure: Option<String>,
}

impl std::io::Read for StoredFile {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(out).inspect_err(|error| {
            if error.kind() != std::io::ErrorKind::Interrupted && self.failure.is_none() {
                self.failure = Some(error.to_string());
            }
        })
    }
}

/// What reading the file gave: the parser's summary (or why it stopped), and the items.
struct ReadItems {
    summary: Result<Summary, FatalError>,
    /// Records read, valid or not; each took the next index.
    total: u64,
    /// Records stored `invalid`, the skipped ones among them.
    invalid: u64,
    /// Records that are reported but are not payments (NACHA prenotes and zero-dollar
    /// entries): stored `invalid` with their reason, but they do not make the file invalid.
    skipped: u64,
    /// Per currency, the valid items' count and sum.
    totals: BTreeMap<Currency, (u64, u128)>,
    /// The file has more than `max_lines` records (reading stopped there).
    too_many: bool,
    /// The cross-currency items and their pairs.
    fx: FxBook,
    /// The returns and notifications of change matched to earlier items.
    returns: Returns,
}

impl ReadItems {
    fn empty() -> ReadItems {
        ReadItems {
            summary: Ok(Summary::default()),
            total: 0,
            invalid: 0,
            skipped: 0,
            totals: BTreeMap::new(),
            too_many: false,
            fx: FxBook::default(),
            returns: Returns::default(),
        }
    }

    /// The reading of a whole file from its two parts' (`self` the first), with the parser's
    /// `summary` of both; `None` if the second part's items cannot follow the first's as
    /// they are (see [`FxBook::joined`]), and the file must be read whole.
    fn joined(self, second: ReadItems, summary: Result<Summary, FatalError>) -> Option<ReadItems> {
        if !second.returns.links.is_empty() || !second.returns.released.is_empty() {
            return None;
        }
        let mut totals = self.totals;
        for (currency, (count, sum)) in second.totals {
            let t = totals.entry(currency).or_default();
            t.0 += count;
            t.1 += sum;
        }
        Some(ReadItems {
            summary,
            total: self.total + second.total,
            invalid: self.invalid + second.invalid,
            skipped: self.skipped + second.skipped,
            totals,
            too_many: self.too_many || second.too_many,
            fx: self.fx.joined(second.fx)?,
            returns: self.returns,
        })
    }

    /// Counts a checked row (its index is the count before it).
    fn count(&mut self, row: &BatchItemRow) {
        self.total += 1;
        if row.status == ItemStatus::Invalid {
            self.invalid += 1;
            if row.failure_code.as_deref().is_some_and(is_not_refused) {
                self.skipped += 1;
            }
        } else if let (Some(currency), Some(amount)) = (row.currency, row.amount) {
            let t = self.totals.entry(currency).or_default();
            t.0 += 1;
            t.1 += u128::from(amount);
        }
    }
}

/// One parsing thread's side of validation: checks each record into an item row, counts
/// it, and hands the rows to the item writer a chunk at a time.
struct Reading<'a> {
    checker: Checker<'a>,
    read: ReadItems,
    /// The index of this thread's first record (the second part of a file cut in two starts
    /// after the first part's records).
    first_index: u64,
    rows: Vec<BatchItemRow>,
    to_writer: std::sync::mpsc::SyncSender<Vec<BatchItemRow>>,
    /// Chunks the writer has stored and emptied, to be filled again, so that a chunk of 4 096
    /// rows (~1.4 MB) is not allocated anew, and freed by the writer, every 4 096 rows.
    emptied: crossbeam_channel::Receiver<Vec<BatchItemRow>>,
    writer_gone: bool,
}

impl<'a> Reading<'a> {
    fn new(
        store: &'a dyn BatchStore,
        batch: &BatchRecord,
        first_index: u64,
        (to_writer, emptied): Chunks,
    ) -> Reading<'a> {
        Reading {
            checker: Checker {
                store,
                tenant: batch.tenant,
                batch: batch.id,
                cache: HashMap::default(),
                last_payer: None,
                error: None,
                fx: FxBook::default(),
                returns: Returns::default(),
                now: batch.created_at,
            },
            read: ReadItems::empty(),
            first_index,
            rows: Vec::with_capacity(INSERT_CHUNK),
            to_writer,
            emptied,
            writer_gone: false,
        }
    }

    /// Checks and counts one record; nothing once `stopping` is set, past `max_lines`
    /// records, or after a store error.
    fn record(&mut self, record: Result<paycore_formats::Item, Diagnostic>, stopping: &AtomicBool, max_lines: u64) {
        let read = &mut self.read;
        if read.too_many || self.writer_gone || self.checker.error.is_some() || stopping.load(Ordering::Relaxed) {
            return;
        }
        // Every record takes the next index, valid or not (the parser's `Item::index`).
        let index = self.first_index.saturating_add(read.total);
        if index >= max_lines {
            read.too_many = true;
            return;
        }
        let mut row = self.checker.row(record);
        row.index = index;
        if let Some(fx) = self.checker.fx.last.take() {
            self.checker.fx.items.push((row.index, fx));
        }
        if let Some(link) = self.checker.returns.last.take() {
            self.checker.returns.links.push(ItemLink { index: row.index, ..link });
        }
        read.count(&row);
        self.rows.push(row);
        if self.rows.len() == INSERT_CHUNK {
            let next = self.emptied.try_recv().unwrap_or_else(|_| Vec::with_capacity(INSERT_CHUNK));
            let full = std::mem::replace(&mut self.rows, next);
            // The writer stops at its first error, which `join` returns.
            self.writer_gone = self.to_writer.send(full).is_err();
        }
    }

    /// Sends the last rows to the writer; what was read, or the store error that stopped it.
    fn finish(mut self) -> paycore_store::Result<ReadItems> {
        if !self.rows.is_empty() && !self.writer_gone {
            let _ = self.to_writer.send(std::mem::take(&mut self.rows));
        }
        self.read.fx = self.checker.fx;
        self.read.returns = self.checker.returns;
        match self.checker.error {
            Some(e) => Err(e),
            None => Ok(self.read),
        }
    }
}

/// A parsing thread's ends of the item writer's queues: full chunks to the writer, emptied
/// ones back.
type Chunks = (std::sync::mpsc::SyncSender<Vec<BatchItemRow>>, crossbeam_channel::Receiver<Vec<BatchItemRow>>);

/// The queues between `parsers` parsing threads and one item writer ([`write_items`]): the
/// parsers' ends, and the writer's.
#[allow(clippy::type_complexity)]
fn item_queues(
    parsers: usize,
) -> (Chunks, (std::sync::mpsc::Receiver<Vec<BatchItemRow>>, crossbeam_channel::Sender<Vec<BatchItemRow>>)) {
    let (to_writer, chunks) = std::sync::mpsc::sync_channel::<Vec<BatchItemRow>>(2 * parsers);
    // As many emptied chunks kept as can be in flight, so that none is allocated again.
    let (to_parsers, emptied) = crossbeam_channel::bounded(3 * parsers);
    ((to_writer, emptied), (chunks, to_parsers))
}

/// Writes the rows it is sent, a chunk per transaction, until every sender is gone, and hands
/// each chunk back empty (its rows dropped here); returns the time it spent writing.
fn write_items(
    store: &dyn BatchStore,
    batch: BatchId,
    (chunks, emptied): (std::sync::mpsc::Receiver<Vec<BatchItemRow>>, crossbeam_channel::Sender<Vec<BatchItemRow>>),
) -> paycore_store::Result<Duration> {
    let mut busy = Duration::ZERO;
    for mut rows in chunks {
        let started = std::time::Instant::now();
        store.insert_batch_items(batch, &rows)?;
        busy += started.elapsed();
        rows.clear();
        // Full: the parsers have enough; this one is freed.
        let _ = emptied.try_send(rows);
    }
    Ok(busy)
}

fn writer_panicked<T>(_: T) -> paycore_store::StoreError {
    paycore_store::StoreError::Internal("an item writer, checker or parser thread panicked".into())
}

/// Parses the file once, streaming, checks each record into an item row, and stores the rows
/// in chunks; stops early when `stopping` is set, at `max_lines` records, or at a store error
/// (which it returns).
fn read_items(
    store: &dyn BatchStore,
    batch: &BatchRecord,
    format: Format,
    input: &mut BufReader<StoredFile>,
    options: &ParseOptions,
    stopping: &AtomicBool,
    max_lines: u64,
) -> paycore_store::Result<ReadItems> {
    let started = std::time::Instant::now();
    // Three threads, each handing the next a chunk at a time: this one parses, a checker
    // checks the records into item rows (accounts, the cross-currency book, NACHA returns),
    // and the item writer stores them. Parsing was the longest of the three and the checks
    // ran on its thread (in a 1M-line CSV, ~1.0 s of CPU against the writer's ~0.3 s); on
    // two cores the checks now share the writer's core.
    let (parser, writer) = item_queues(1);
    let (to_checker, parsed) = std::sync::mpsc::sync_channel::<Vec<Record>>(2);
    let (summary, read, written) = std::thread::scope(|scope| {
        let writer = scope.spawn(move || write_items(store, batch.id, writer));
        let checker = scope.spawn(move || {
            let mut reading = Reading::new(store, batch, 0, parser);
            for records in parsed {
                for record in records {
                    reading.record(record, stopping, max_lines);
                }
            }
            reading.finish()
        });
        let mut records = Vec::with_capacity(RECORDS_CHUNK);
        let mut checker_gone = false;
        let summary = parse(format, input, options, &mut |record| {
            // Once the checker has stopped taking records (it panicked), the rest are dropped:
            // `join` reports it.
            if checker_gone {
                return;
            }
            records.push(record);
            if records.len() == RECORDS_CHUNK {
                let full = std::mem::replace(&mut records, Vec::with_capacity(RECORDS_CHUNK));
                checker_gone = to_checker.send(full).is_err();
            }
        });
        if !records.is_empty() && !checker_gone {
            let _ = to_checker.send(records);
        }
        drop(to_checker);
        let read = checker.join().unwrap_or_else(|e| Err(writer_panicked(e)));
        (summary, read, writer.join().unwrap_or_else(|e| Err(writer_panicked(e))))
    });
    let writing = written?;
    let mut read = read?;
    read.summary = summary;
    tracing::debug!(batch = %batch.id, items = read.total, parse_and_check = ?started.elapsed(), ?writing, "items read and stored");
    Ok(read)
}

/// A parsed record, as the parser hands it to the checker.
type Record = Result<paycore_formats::Item, Diagnostic>;

/// Records the parser hands the checker at a time ([`read_items`]).
const RECORDS_CHUNK: usize = 1024;

/// pain.001 files at least this large are parsed in two parts by two threads (a smaller one
/// is parsed quickly enough by one).
const TWO_PARTS_BYTES_MIN: u64 = 4 << 20;

/// A pain.001 file validated by two parser threads, each with its own checker, and one item
/// writer: the file cut in two at a `<CdtTrfTxInf>` near its middle
/// ([`paycore_formats::find_cut`]), the second part parsed from there while the first is
/// parsed from the start, the two joined after ([`paycore_formats::join_parts`]). `None`,
/// with no item stored, when the file is not cut (too small, no cut found, a store that
/// cannot tell a file's size) or the parts cannot stand for one parse (a duplicate
/// reference across the cut, a cut in a comment...): the caller then parses it whole.
fn read_items_in_two(
    store: &dyn BatchStore,
    batch: &BatchRecord,
    file: &str,
    stopping: &AtomicBool,
    max_lines: u64,
    parts_bytes_min: u64,
) -> paycore_store::Result<Option<ReadItems>> {
    let started = std::time::Instant::now();
    let Some(size) = store.file_size(file)?.filter(|&size| size >= parts_bytes_min) else { return Ok(None) };
    let open = || -> paycore_store::Result<Option<BufReader<StoredFile>>> {
        Ok(store.open_file(file)?.map(|file| BufReader::with_capacity(256 * 1024, StoredFile { file, failure: None })))
    };
    let Some(mut rest) = open()? else { return Ok(None) };
    // A read error here is met again, and reported, by the whole parse.
    let Ok(Some(cut)) = paycore_formats::find_cut(&mut rest, size) else { return Ok(None) };
    let Some(mut start) = open()? else { return Ok(None) };
    let cut_at = started.elapsed();
    let (parser, writer) = item_queues(2);
    let (first, first_read, second, written) = std::thread::scope(|scope| {
        let writer = scope.spawn(move || write_items(store, batch.id, writer));
        let to_second = parser.clone();
        let (cut, rest) = (&cut, &mut rest);
        let second = scope.spawn(move || {
            let mut reading = Reading::new(store, batch, cut.records_before(), to_second);
            let part = paycore_formats::parse_second_part(cut, rest, &mut |r| reading.record(r, stopping, max_lines));
            (part, reading.finish())
        });
        let mut reading = Reading::new(store, batch, 0, parser);
        let first = paycore_formats::parse_first_part(cut, &mut start, &mut |r| reading.record(r, stopping, max_lines));
        let first_read = reading.finish();
        let second = second.join().map_err(writer_panicked);
        (first, first_read, second, writer.join().unwrap_or_else(|e| Err(writer_panicked(e))))
    });
    let writing = written?;
    let (second, second_read) = second?;
    let (first_read, second_read) = (first_read?, second_read?);
    for input in [start, rest] {
        if let Some(failure) = input.into_inner().failure {
            store.clear_batch_items(batch.id)?;
            return Err(paycore_store::StoreError::Unavailable(format!("reading the stored file {file}: {failure}")));
        }
    }
    let joined = paycore_formats::join_parts(&cut, first, second);
    let read = joined.and_then(|summary| first_read.joined(second_read, summary));
    tracing::debug!(
        batch = %batch.id, parts = read.is_some(), ?cut_at, parse_and_check = ?started.elapsed(), ?writing,
        "items read in two parts and stored"
    );
    if read.is_none() {
        store.clear_batch_items(batch.id)?;
    }
    Ok(read)
}

/// The `expected_total` given with the batch, in its currency: the batch's, or the file's only
/// one. `Err`: why it cannot be read.
fn expected_total(
    batch: &BatchRecord,
    currency: Option<Currency>,
    totals: &[(Currency, u128)],
) -> Result<Option<(Currency, u128)>, String> {
    match (&batch.expected_total, expected_currency(currency, totals)) {
        (None, _) => Ok(None),
        (Some(text), Some(currency)) => match parse_amount(text, currency) {
            Ok(amount) => Ok(Some((currency, u128::from(amount.get())))),
            Err(e) => Err(format!("expected_total: {e}")),
        },
        (Some(_), None) => Err("expected_total needs a single-currency file or the currency parameter".into()),
    }
}

/// Ends validation: `rejected` when a control figure is wrong, when (unless invalid items are
/// skipped) an item is invalid, or when no item is payable; else `processing`. Skipped records
/// (NACHA prenotes, zero-dollar entries) are reported with their reason, and are not invalid.
fn finish(
    store: &dyn BatchStore,
    batch: &BatchRecord,
    clock: &dyn Fn() -> u64,
    summary: &Summary,
    read: &ReadItems,
    control: &[Diagnostic],
) -> paycore_store::Result<()> {
    let (total, invalid, skipped) = (read.total, read.invalid, read.skipped);
    let refused = invalid.saturating_sub(skipped);
    let totals: Vec<BatchTotal> =
        read.totals.iter().map(|(&currency, &(count, sum))| BatchTotal { currency, count, sum }).collect();
    let json;
    let (status, rejection_json) = if !control.is_empty() {
        json = rejection(control_code(control), &control_message(control), control);
        (BatchStatus::Rejected, Some(json.as_str()))
    } else if refused > 0 && batch.on_invalid != OnInvalid::SkipInvalid {
        let shown: Vec<Diagnostic> = store
            .batch_items(batch.id, &[ItemStatus::Invalid], None, shown_rows_max(skipped))?
            .into_iter()
            .filter(|i| !i.failure_code.as_deref().is_some_and(is_not_refused))
            .take(100)
            .map(|i| Diagnostic {
                line: i.line,
                location: i.location,
                field: None,
                code: i.failure_code.as_deref().and_then(known_code).unwrap_or("invalid_item"),
                message: i.message.unwrap_or_default(),
                adjustment: None,
            })
            .collect();
        json = rejection(
            "invalid_items",
            &format!("{refused} of {total} items are invalid (on_invalid=reject_file); the first are listed"),
            &shown,
        );
        (BatchStatus::Rejected, Some(json.as_str()))
    } else if total == invalid && read.returns.links.is_empty() {
        let message = match (total, skipped) {
            (0, _) => "the file has no payment in it".to_owned(),
            (_, 0) => format!("none of the file's {total} items is payable: all are invalid"),
            _ => format!(
                "none of the file's {total} items is payable: {skipped} are prenotes or zero-dollar entries, which are reported but not paid, and {refused} are invalid"
            ),
        };
        json = rejection("no_payable_items", &message, &[]);
        (BatchStatus::Rejected, Some(json.as_str()))
    } else {
        (BatchStatus::Processing, None)
    };
    let now = clock();
    if status == BatchStatus::Processing && batch.format == Format::Nacha {
        // Links first, so that the trace index leaves out this file's returns.
        store.record_links(batch.id, &read.returns.links, &read.returns.released)?;
        store.index_traces(batch.tenant, batch.id)?;
    }
    if status == BatchStatus::Processing && !read.fx.items.is_empty() {
        // Before the batch is `processing`: a crash in between leaves it `validating`, and the
        // next validation clears these first.
        store.insert_batch_fx(batch.id, &read.fx.quotes(batch, now), &read.fx.items)?;
    }
    store.finish_validation(
        batch.id,
        &Validated {
            status,
            total,
            invalid,
            totals: &totals,
            variant: summary.variant.as_deref(),
            message_id: summary.message_id.as_deref(),
            rejection: rejection_json,
            now,
        },
    )
}

/// How many invalid rows to read to list the first 100 that are not skipped records (read at
/// most 10 000: past that, fewer are listed).
fn shown_rows_max(skipped: u64) -> usize {
    usize::try_from(skipped.saturating_add(100).min(10_000)).unwrap_or(10_000)
}

/// The code of a rejection for wrong control figures: a structural error (a bad NACHA
/// Service Class Code) is named as itself, not as a control total mismatch.
fn control_code(errors: &[Diagnostic]) -> &'static str {
    errors
        .iter()
        .map(|d| d.code)
        .find(|code| !matches!(*code, "control_total_mismatch" | "missing_field"))
        .unwrap_or("control_total_mismatch")
}

fn fatal_message(fatal: &FatalError, line: Option<u64>) -> String {
    // Most fatal errors already start with their line; name it once.
    let text = fatal.to_string();
    match line {
        Some(line) if !text.starts_with(&format!("line {line}")) => format!("line {line}: {text}"),
        _ => text,
    }
}

/// The static name of an item's failure code, for a diagnostic.
fn known_code(code: &str) -> Option<&'static str> {
    const CODES: &[&str] = &[
        "syntax",
        "missing_field",
        "invalid_amount",
        "invalid_currency",
        "too_many_decimals",
        "amount_not_positive",
        "duplicate_reference",
        "unsupported_entry",
        "invalid_date",
        "invalid_routing_number",
        "account_not_found",
        "currency_mismatch",
        "same_account",
        "unsupported_sec_code",
        "return_entry_not_matched",
        "notification_of_change",
        "invalid_addenda",
        "addenda_count_mismatch",
        "invalid_trace_number",
        "invalid_transaction_code",
        "zero_amount",
        "prenote",
        "zero_dollar_entry",
        "field_count_mismatch",
        "invalid_iban",
        "invalid_bic",
        "invalid_iat_header",
        "no_rate",
        "invalid_id",
        "invalid_reason",
        "payment_not_found",
        "payment_not_refundable",
        "amount_exceeds_refundable",
        "already_returned",
        "return_amount_mismatch",
        "change_entry_not_matched",
    ];
    CODES.iter().copied().find(|c| *c == code)
}

fn control_message(errors: &[Diagnostic]) -> String {
    let first = errors.first().map(|d| d.message.as_str()).unwrap_or_default();
    match errors.len() {
        1 => first.to_owned(),
        n => format!("{first} (and {} more control errors)", n - 1),
    }
}

/// The currency `expected_total` is in: the batch's, or the file's only one.
fn expected_currency(given: Option<Currency>, totals: &[(Currency, u128)]) -> Option<Currency> {
    given.or(match totals {
        [(currency, _)] => Some(*currency),
        _ => None,
    })
}

/// What validation needs of an account.
#[derive(Clone, Copy)]
struct Resolved {
    id: AccountId,
    currency: Currency,
}

/// Turns parsed records into item rows, resolving accounts.
struct Checker<'a> {
    store: &'a dyn BatchStore,
    tenant: paycore_ledger::TenantId,
    batch: BatchId,
    /// Resolved accounts by currency, then by the text that named them.
    cache:
        HashMap<Currency, HashMap<String, Option<Resolved>, foldhash::fast::RandomState>, foldhash::fast::RandomState>,
    /// The last item's payer: most files have one payer (named once for the batch, or in
    /// every row), found here without hashing its text.
    last_payer: Option<(Currency, String, Option<Resolved>)>,
    error: Option<paycore_store::StoreError>,
    fx: FxBook,
    returns: Returns,
    /// The time links are recorded with: the batch's upload (the same on every validation).
    now: u64,
}

/// Why an item that would make its pair's quote larger than the largest amount is invalid.
fn pair_too_large(from: Currency, to: Currency) -> (&'static str, String) {
    let message = format!("amount: the batch's items from {from} to {to} add up to more than the largest amount");
    ("invalid_amount", message)
}

/// The cross-currency items of a file being validated: one quote per currency pair, at the
/// tenant's rate when the pair is first met, for the sum of its items.
#[derive(Default)]
struct FxBook {
    /// The tenant's fee, read when the first cross-currency item is met.
    fee_bps: Option<u32>,
    /// Per (payer's currency, item's currency): the rate (`None`: the tenant has none), and the
    /// valid items' sums of source amounts, amounts and fees.
    pairs: BTreeMap<(Currency, Currency), (Option<Rate>, PairTotals)>,
    /// The payer side of each valid cross-currency item, by index.
    items: Vec<(u64, ItemFx)>,
    /// The last checked item's payer side, until its row has its index.
    last: Option<ItemFx>,
    /// An item was refused because its pair's sums would pass the largest amount: which
    /// items those are depends on the order they were met in.
    too_large: bool,
}

#[derive(Default, Clone, Copy)]
struct PairTotals {
    source: u64,
    target: u64,
    fee: u64,
}

impl FxBook {
    /// The book of a whole file from its two parts' (`self` the first); `None` when the
    /// second part's items would not have been judged the same after the first's: a pair's
    /// sums pass the largest amount (so one of the items read in a part alone might have
    /// been refused), or the two parts read different rates.
    fn joined(mut self, second: FxBook) -> Option<FxBook> {
        if self.too_large || second.too_large {
            return None;
        }
        let sum = |a: u64, b: u64| a.checked_add(b).filter(|s| *s <= AMOUNT_MAX);
        for (pair, (rate, totals)) in second.pairs {
            match self.pairs.get_mut(&pair) {
                None => {
                    self.pairs.insert(pair, (rate, totals));
                }
                Some((known, _)) if *known != rate => return None,
                Some((_, mine)) => {
                    let source = sum(mine.source, totals.source)?;
                    let fee = sum(mine.fee, totals.fee)?;
                    sum(source, fee)?;
                    *mine = PairTotals { source, target: sum(mine.target, totals.target)?, fee };
                }
            }
        }
        self.fee_bps = self.fee_bps.or(second.fee_bps);
        self.items.extend(second.items);
        Some(self)
    }

    /// The batch's quotes, one per pair with valid items, locked for the batch alone: created
    /// and expired at `now`, so that no payment can ever take one.
    fn quotes(&self, batch: &BatchRecord, now: u64) -> Vec<Quote> {
        self.pairs
            .iter()
            .filter_map(|(&(from, to), &(rate, totals))| {
                let rate = rate?;
                (totals.target > 0).then(|| Quote {
                    id: batch_quote_id(batch.id, from, to),
                    tenant: batch.tenant,
                    from,
                    to,
                    rate,
                    source_amount: totals.source,
                    target_amount: totals.target,
                    fee: totals.fee,
                    created_at: now,
                    expires_at: now,
                    used_by: None,
                })
            })
            .collect()
    }
}

impl Checker<'_> {
    /// The payer side of an item of `amount` minor units of `to` paid from an account in
    /// `from`, added to the pair's quote; or why the item is invalid.
    fn quote_item(&mut self, from: Currency, to: Currency, amount: u64) -> Result<ItemFx, (&'static str, String)> {
        let (store, tenant) = (self.store, self.tenant);
        let mut failed = None;
        let fee_bps = *self.fx.fee_bps.get_or_insert_with(|| {
            store.fee_bps(tenant).unwrap_or_else(|e| {
                failed = Some(e);
                0
            })
        });
        let pair = match self.fx.pairs.entry((from, to)) {
            std::collections::btree_map::Entry::Occupied(pair) => pair.into_mut(),
            std::collections::btree_map::Entry::Vacant(slot) => {
                let rate = match store.rate(tenant, from, to) {
                    Ok(rate) => rate.map(|r| r.rate),
                    Err(e) => {
                        failed = Some(e);
                        None
                    }
                };
                slot.insert((rate, PairTotals::default()))
            }
        };
        if let Some(e) = failed {
            // Reading stops at a store error (see `read_items`); nothing is stored.
            self.error = Some(e);
            return Err(("no_rate", "the tenant's rates could not be read".into()));
        }
        let Some(rate) = pair.0 else {
            let message = format!(
                "no rate for {from} to {to}: the payer's account is in {from}, the item in {to}; set one with POST /v1/fx/rates"
            );
            return Err(("no_rate", message));
        };
        let (source, fee) = batch_item_fx(amount, rate, from, to, fee_bps).map_err(|e| {
            let why = match e {
                ConversionError::TooSmall => "is less than one minor unit",
                ConversionError::TooLarge => "is above the largest amount",
            };
            ("invalid_amount", format!("amount: converted to {from} at {rate}, the item {why}"))
        })?;
        let totals = &mut pair.1;
        // The quote's amounts are amounts too: the source plus the fee included.
        let sum = |a: u64, b: u64| a.checked_add(b).filter(|s| *s <= AMOUNT_MAX);
        let sums = (sum(totals.source, source), sum(totals.target, amount), sum(totals.fee, fee));
        let (Some(s), Some(t), Some(f)) = sums else {
            self.fx.too_large = true;
            return Err(pair_too_large(from, to));
        };
        if sum(s, f).is_none() {
            self.fx.too_large = true;
            return Err(pair_too_large(from, to));
        }
        *totals = PairTotals { source: s, target: t, fee: f };
        Ok(ItemFx { quote: batch_quote_id(self.batch, from, to), source_amount: source, fee })
    }

    fn account(&mut self, text: &str, currency: Currency) -> Option<Resolved> {
        if let Some(found) = self.cache.get(&currency).and_then(|by_text| by_text.get(text)) {
            return *found;
        }
        // Only on a miss, which costs a store read anyway; a file has one or a few currencies.
        if self.cache.values().map(HashMap::len).sum::<usize>() >= ACCOUNT_CACHE_MAX {
            self.cache.clear();
        }
        let found = match self.store.find_account(self.tenant, text, Some(currency)) {
            Ok(found) => found.map(|a: Account| Resolved { id: a.id, currency: a.currency }),
            Err(e) => {
                self.error = Some(e);
                None
            }
        };
        self.cache.entry(currency).or_default().insert(text.to_owned(), found);
        found
    }

    fn row(&mut self, record: Result<paycore_formats::Item, Diagnostic>) -> BatchItemRow {
        let item = match record {
            Ok(item) => item,
            Err(d) if d.adjustment.is_some() => {
                let Some(adjustment) = d.adjustment.as_ref().filter(|_| self.error.is_none()) else {
                    return invalid_row(d.line);
                };
                return match self.returns.row(self.store, self.tenant, self.batch, &d, adjustment, self.now) {
                    Ok(row) => row,
                    Err(e) => {
                        self.error = Some(e);
                        invalid_row(d.line)
                    }
                };
            }
            Err(d) => return diagnostic_row(&d),
        };
        let problem = self.check(&item);
        let (payer, payee, status, failure_code, message) = match problem {
            Ok((payer, payee)) => (Some(payer), Some(payee), ItemStatus::Pending, None, None),
            Err((code, message, payer, payee)) => {
                (payer, payee, ItemStatus::Invalid, Some(code.to_owned()), Some(message))
            }
        };
        BatchItemRow {
            index: item.index,
            line: item.line,
            location: item.location,
            reference: item.reference,
            instruction_id: item.instruction_id,
            payment_information_id: item.payment_information_id,
            payer_text: item.payer,
            payee_text: Some(item.payee),
            payer,
            payee,
            amount: Some(item.amount.get()),
            currency: Some(item.currency),
            status,
            failure_code,
            message,
            remittance: item.remittance,
        }
    }

    /// The item's payer and payee accounts, or why it is invalid (with the accounts that
    /// resolved, which the item row keeps).
    #[allow(clippy::type_complexity)]
    fn check(
        &mut self,
        item: &paycore_formats::Item,
    ) -> Result<(AccountId, AccountId), (&'static str, String, Option<AccountId>, Option<AccountId>)> {
        let Some(payer_text) = &item.payer else {
            return Err(("missing_field", "payer: no payer column and no batch-level payer".into(), None, None));
        };
        let payer = match &self.last_payer {
            Some((currency, text, found)) if *currency == item.currency && text == payer_text => *found,
            _ => {
                let found = self.account(payer_text, item.currency);
                self.last_payer = Some((item.currency, payer_text.clone(), found));
                found
            }
        };
        let Some(payer) = payer else {
            return Err(("account_not_found", format!("payer: no account {payer_text:?}"), None, None));
        };
        let Some(payee) = self.account(&item.payee, item.currency) else {
            return Err(("account_not_found", format!("payee: no account {:?}", item.payee), None, None));
        };
        let ids = (Some(payer.id), Some(payee.id));
        if payer.id == payee.id {
            return Err(("same_account", "payer and payee are the same account".into(), ids.0, ids.1));
        }
        if payer.currency != item.currency && payee.currency == item.currency {
            // Cross-currency: the amount is the payee's; the payer pays its price.
            let fx = self
                .quote_item(payer.currency, item.currency, item.amount.get())
                .map_err(|(code, message)| (code, message, ids.0, ids.1))?;
            self.fx.last = Some(fx);
            return Ok((payer.id, payee.id));
        }
        for (field, account) in [("payer", &payer), ("payee", &payee)] {
            if account.currency != item.currency {
                let message = format!(
                    "{field}: account {} is in {}, the item in {}",
                    account.id, account.currency, item.currency
                );
                return Err(("currency_mismatch", message, ids.0, ids.1));
            }
        }
        Ok((payer.id, payee.id))
    }
}

/// A row with nothing but its place in the file and its status: each kind of row fills in
/// the rest.
pub(crate) fn blank_row(line: u64, location: String, status: ItemStatus) -> BatchItemRow {
    BatchItemRow {
        index: 0,
        line,
        location,
        reference: None,
        instruction_id: None,
        payment_information_id: None,
        payer_text: None,
        payee_text: None,
        payer: None,
        payee: None,
        amount: None,
        currency: None,
        status,
        failure_code: None,
        message: None,
        remittance: None,
    }
}

/// The row of a record the parser found invalid.
fn diagnostic_row(d: &Diagnostic) -> BatchItemRow {
    let message = match &d.field {
        Some(field) => format!("{}: {}", field, d.message),
        None => d.message.clone(),
    };
    BatchItemRow {
        failure_code: Some(d.code.to_owned()),
        message: Some(message),
        ..blank_row(d.line, d.location.clone(), ItemStatus::Invalid)
    }
}

/// Runs the batch's pending items through the engine until the batch ends, or until
/// `stopping` is set (the batch then stays `processing`). Safe to call again after a crash or
/// a stop: it starts from what the store says. A submission task that panicked is an error
/// (the batch stays `processing` too).
pub async fn run(
    engine: &EngineHandle,
    store: Arc<dyn BatchStore>,
    batch: BatchId,
    tenant: paycore_ledger::TenantId,
    stopping: &Arc<AtomicBool>,
) -> paycore_store::Result<()> {
    let record = read(&store, tenant, batch).await?;
    let Some(record) = record else { return Ok(()) };
    if record.status != BatchStatus::Processing {
        return Ok(());
    }
    // Whether the batch has cross-currency items: then each chunk is read with their payer sides.
    let fx = {
        let store = store.clone();
        !blocking(move || store.batch_quotes(batch)).await?.is_empty()
    };
    // A refunds batch's items carry their payments (read from the item rows).
    let work = if record.format == paycore_ledger::BatchFormat::Refunds {
        Work::Refunds
    } else if fx {
        Work::Fx
    } else {
        Work::Plain
    };
    let runner = Runner { engine, store, batch, tenant, stopping, work };
    let end = if record.mode == BatchMode::Atomic { runner.atomic().await? } else { runner.best_effort().await? };
    if let Some(end) = end {
        runner.submit(Command::EndBatch { batch, end }).await;
    }
    Ok(())
}

/// One run of one batch's items.
struct Runner<'a> {
    engine: &'a EngineHandle,
    store: Arc<dyn BatchStore>,
    batch: BatchId,
    tenant: paycore_ledger::TenantId,
    stopping: &'a Arc<AtomicBool>,
    /// What the items need besides their accounts and amount.
    work: Work,
}

/// How a runner reads its items.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Work {
    /// Accounts, amount, currency ([`BatchStore::batch_work`]).
    Plain,
    /// And, for the cross-currency items, their payer sides (`batch_item_fx`).
    Fx,
    /// A refunds batch: each item with its payment and reason.
    Refunds,
}

impl Runner<'_> {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Submits `command` until the engine has committed it: its result codes, or `None` if the
    /// runner was asked to stop first.
    async fn submit(&self, command: Command) -> Option<Vec<ResultCode>> {
        submit_until_done(self.engine, Request { tenant: self.tenant, command }, self.stopping).await
    }

    /// Atomic: holds every item, then posts every hold, or voids them all if one failed or the
    /// batch was cancelled. How the batch ends, or `None` if the runner stopped first.
    async fn atomic(&self) -> paycore_store::Result<Option<BatchEnd>> {
        let (store, batch) = (&self.store, self.batch);
        let mut failed = !items(store, batch, ItemStatus::Failed, None, 1, Work::Plain).await?.is_empty();
        let mut cancelled = false;
        let mut after = None;
        while !failed {
            if self.stopping() {
                return Ok(None);
            }
            if cancel_requested(store, self.tenant, batch).await? {
                cancelled = true;
                break;
            }
            let chunk = items(store, batch, ItemStatus::Pending, after, CHUNK_ITEMS, self.work).await?;
            let Some(last) = chunk.last() else { break };
            after = Some(last.index);
            let Some(codes) = self.submit(Command::BatchItems { batch, step: BatchStep::Hold, items: chunk }).await
            else {
                return Ok(None);
            };
            failed = codes.iter().any(|c| !c.is_success());
        }
        let step = if failed || cancelled { BatchStep::Void } else { BatchStep::Post };
        loop {
            if self.stopping() {
                return Ok(None);
            }
            let chunk = items(store, batch, ItemStatus::Held, None, CHUNK_ITEMS, self.work).await?;
            if chunk.is_empty() {
                break;
            }
            if self.submit(Command::BatchItems { batch, step, items: chunk }).await.is_none() {
                return Ok(None);
            }
        }
        Ok(Some(if cancelled { BatchEnd::Cancelled } else { BatchEnd::Completed }))
    }

    /// Best effort: pays each item on its own, keeping one chunk in the engine while reading
    /// the next. How the batch ends, or `None` if the runner stopped first.
    async fn best_effort(&self) -> paycore_store::Result<Option<BatchEnd>> {
        let (store, batch) = (&self.store, self.batch);
        let mut after = None;
        let mut in_flight: Option<SubmitTask> = None;
        let mut end = BatchEnd::Completed;
        loop {
            // A submission stops only when `stopping` is set, so this sees every stop.
            if self.stopping() {
                if let Some(previous) = in_flight.take() {
                    finished(previous).await?;
                }
                return Ok(None);
            }
            if cancel_requested(store, self.tenant, batch).await? {
                end = BatchEnd::Cancelled;
                break;
            }
            let chunk = items(store, batch, ItemStatus::Pending, after, CHUNK_ITEMS, self.work).await?;
            let Some(last) = chunk.last() else { break };
            after = Some(last.index);
            let (engine, stopping) = (self.engine.clone(), self.stopping.clone());
            let command = Command::BatchItems { batch, step: BatchStep::Pay, items: chunk };
            let request = Request { tenant: self.tenant, command };
            let next = tokio::spawn(async move { submit_until_done(&engine, request, &stopping).await });
            if let Some(previous) = in_flight.replace(next) {
                finished(previous).await?;
            }
        }
        // The batch ends after its last chunk, never beside it.
        if let Some(previous) = in_flight {
            if finished(previous).await?.is_none() {
                return Ok(None);
            }
        }
        Ok(Some(end))
    }
}

/// A chunk of items submitted on a task of its own: its result codes, or `None` if the runner
/// stopped first.
type SubmitTask = tokio::task::JoinHandle<Option<Vec<ResultCode>>>;

/// What a submission task ended with; a task that panicked is an error, not a result.
async fn finished(task: SubmitTask) -> paycore_store::Result<Option<Vec<ResultCode>>> {
    task.await.map_err(|e| paycore_store::StoreError::Internal(format!("a batch submission task failed: {e}")))
}

/// Submits on the background lane until the engine has committed it: a full queue or a failed
/// commit or an answer that did not come in time is retried (the item ids make a retry harmless), until `stopping` is set (`None`).
async fn submit_until_done(engine: &EngineHandle, request: Request, stopping: &AtomicBool) -> Option<Vec<ResultCode>> {
    let mut wait = Duration::from_millis(5);
    loop {
        let submission = Submission { request: request.clone(), idempotency: None };
        match engine.submit_background(submission).await {
            Ok(Reply::Done(Outcome::Transfers(codes))) => return Some(codes),
            Ok(_) => return Some(Vec::new()),
            Err(
                EngineError::Overloaded | EngineError::Unavailable(_) | EngineError::NoReply | EngineError::StorageFull,
            ) => {
                if stopping.load(Ordering::Relaxed) {
                    return None;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> paycore_store::Result<T> + Send + 'static,
) -> paycore_store::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(paycore_store::StoreError::Internal(format!("store task failed: {e}"))))
}

async fn read(
    store: &Arc<dyn BatchStore>,
    tenant: paycore_ledger::TenantId,
    batch: BatchId,
) -> paycore_store::Result<Option<BatchRecord>> {
    let store = store.clone();
    blocking(move || store.batch(tenant, batch)).await
}

async fn cancel_requested(
    store: &Arc<dyn BatchStore>,
    tenant: paycore_ledger::TenantId,
    batch: BatchId,
) -> paycore_store::Result<bool> {
    Ok(read(store, tenant, batch).await?.is_some_and(|b| b.cancel_requested))
}

async fn items(
    store: &Arc<dyn BatchStore>,
    batch: BatchId,
    status: ItemStatus,
    after: Option<u64>,
    limit: usize,
    work: Work,
) -> paycore_store::Result<Vec<BatchItem>> {
    let store = store.clone();
    blocking(move || {
        if work == Work::Refunds {
            return refunds::refund_work(store.as_ref(), batch, status, after, limit.min(REFUND_CHUNK_ITEMS));
        }
        let mut items = store.batch_work(batch, status, after, limit)?;
        if work == Work::Fx {
            with_fx(store.as_ref(), batch, &mut items)?;
        }
        Ok(items)
    })
    .await
}

/// Gives the cross-currency items among `items` (by index, as `batch_work` reads them) the
/// payer side validation fixed for them.
fn with_fx(store: &dyn BatchStore, batch: BatchId, items: &mut [BatchItem]) -> paycore_store::Result<()> {
    let (Some(first), Some(last)) = (items.first(), items.last()) else { return Ok(()) };
    let mut sides = store.batch_item_fx(batch, first.index, last.index)?.into_iter().peekable();
    for item in items {
        while sides.next_if(|(index, _)| *index < item.index).is_some() {}
        if let Some((_, fx)) = sides.next_if(|(index, _)| *index == item.index) {
            item.fx = Some(fx);
        }
    }
    Ok(())
}

/// The row of a record that could not be judged because validation is stopping on a store
/// error (the batch is validated again from the start).
fn invalid_row(line: u64) -> BatchItemRow {
    BatchItemRow {
        failure_code: Some("store_unavailable".to_owned()),
        ..blank_row(line, format!("line {line}"), ItemStatus::Invalid)
    }
}
