//! Batches: the records the API writes while it takes in and validates a file, and the item
//! results the engine commits with the transfers they made — the records, the [`BatchStore`]
//! contract, and the backend-neutral rules every store applies to them: how results are cut
//! into runs ([`result_runs`]), how runs move a batch's counters ([`NewRun::counters`]), and
//! how an item's status is derived when it is read ([`WindowResults`], [`unsent`]).

use crate::files::FileSink;
use crate::{Result, StoreError};
use paycore_ledger::{
    Account, AccountId, BatchEnd, BatchFormat, BatchId, BatchItem, BatchItemResult, BatchItemState, BatchMode,
    BatchStatus, BatchStep, Currency, ItemStatus, OnInvalid, Payment, PaymentId, TenantId,
};

/// A batch as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRecord {
    pub id: BatchId,
    pub tenant: TenantId,
    pub status: BatchStatus,
    pub format: BatchFormat,
    pub mode: BatchMode,
    pub on_invalid: OnInvalid,
    pub payer: Option<String>,
    pub currency: Option<String>,
    pub expected_count: Option<u64>,
    pub expected_total: Option<String>,
    /// The stored upload's name, `batches/<name>` (see [`crate::files`]): a path relative to
    /// the data folder in the embedded store, a `batch_files` name in PostgreSQL.
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
    pub fn new(id: BatchId, tenant: TenantId, format: BatchFormat, created_at: u64) -> BatchRecord {
        BatchRecord {
            id,
            tenant,
            status: BatchStatus::Validating,
            format,
            mode: BatchMode::BestEffort,
            on_invalid: OnInvalid::RejectFile,
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

/// One item of a batch. Stored rows hold `invalid` or `pending`; the rest is derived from the
/// item results (see [`WindowResults`]).
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
    pub status: ItemStatus,
    pub failure_code: Option<String>,
    pub message: Option<String>,
    /// Unstructured remittance information from the file (pain.001 `RmtInf/Ustrd`).
    pub remittance: Option<String>,
}

/// An item as a report reads it, borrowed from where the store holds it (see
/// [`BatchStore::visit_batch_items`]): a [`BatchItemRow`] without its location, message and
/// remittance, and without a copy of its texts. Its status and failure code are derived as
/// [`BatchStore::batch_items`] derives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemView<'a> {
    pub index: u64,
    pub line: u64,
    pub reference: Option<&'a str>,
    pub instruction_id: Option<&'a str>,
    pub payment_information_id: Option<&'a str>,
    pub payer_text: Option<&'a str>,
    pub payee_text: Option<&'a str>,
    pub payer: Option<AccountId>,
    pub payee: Option<AccountId>,
    pub amount: Option<u64>,
    pub currency: Option<Currency>,
    pub status: ItemStatus,
    pub failure_code: Option<&'a str>,
}

impl BatchItemRow {
    /// The row as [`BatchStore::visit_batch_items`] shows an item.
    pub fn view(&self) -> ItemView<'_> {
        ItemView {
            index: self.index,
            line: self.line,
            reference: self.reference.as_deref(),
            instruction_id: self.instruction_id.as_deref(),
            payment_information_id: self.payment_information_id.as_deref(),
            payer_text: self.payer_text.as_deref(),
            payee_text: self.payee_text.as_deref(),
            payer: self.payer,
            payee: self.payee,
            amount: self.amount,
            currency: self.currency,
            status: self.status,
            failure_code: self.failure_code.as_deref(),
        }
    }
}

/// What an account statement writes about the batch item that made a transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemReference {
    /// The item's `reference`: its end-to-end id.
    pub reference: Option<String>,
    pub remittance: Option<String>,
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
    pub status: BatchStatus,
    pub total: u64,
    pub invalid: u64,
    pub totals: &'a [BatchTotal],
    pub variant: Option<&'a str>,
    pub message_id: Option<&'a str>,
    pub rejection: Option<&'a str>,
    pub now: u64,
}

/// A claim on a batch job: `owner` (a node id) holds it from `now` until `until`
/// (nanoseconds since the Unix epoch, the nodes' clocks), unless it renews it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim<'a> {
    pub owner: &'a str,
    pub now: u64,
    pub until: u64,
}

/// The API's writes and reads of batches. Batch records are not money: the API writes them
/// outside the engine's batches; only item results (which go with transfers) go through the
/// engine.
pub trait BatchStore: crate::FxStore + crate::ReturnStore + Send + Sync {
    fn create_batch(&self, batch: &BatchRecord) -> Result<()>;
    /// Removes the items of a batch whose validation was interrupted, to validate it again.
    fn clear_batch_items(&self, batch: BatchId) -> Result<()>;
    /// Appends items, in one transaction.
    fn insert_batch_items(&self, batch: BatchId, items: &[BatchItemRow]) -> Result<()>;
    fn finish_validation(&self, batch: BatchId, validated: &Validated<'_>) -> Result<()>;
    /// Asks a batch to stop; false if there is no such batch of this tenant.
    fn request_cancel(&self, tenant: TenantId, batch: BatchId) -> Result<bool>;
    fn batch(&self, tenant: TenantId, id: BatchId) -> Result<Option<BatchRecord>>;
    /// The tenant's batches (of one status, if given), newest first (ids are time-ordered),
    /// up to `page.limit` of them older than `page.after`: what `GET /v1/batches` lists.
    fn batches(
        &self,
        tenant: TenantId,
        status: Option<BatchStatus>,
        page: crate::Page<BatchId>,
    ) -> Result<Vec<BatchRecord>>;
    fn batch_totals(&self, batch: BatchId) -> Result<Vec<BatchTotal>>;
    /// Items in index order after `after`: all of them, or those in one of `statuses`.
    fn batch_items(
        &self,
        batch: BatchId,
        statuses: &[ItemStatus],
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<BatchItemRow>>;
    /// Shows `visit` each item in index order after `after`, up to `limit` of them, as
    /// [`BatchStore::batch_items`] with no status would list them, until `visit` answers
    /// false; returns how many items it was shown (the one it answered false to included).
    /// What the reports read: the embedded store shows each item where its block lies in
    /// SQLite's memory, inside the read transaction, its texts not copied (whole rows were
    /// about half of the report follower's instructions); the default reads the rows and
    /// shows them.
    /// `visit` runs while the store reads: it must not wait on anything (no file or network
    /// I/O, no lock a writer may hold), or it holds the read open with it, and the WAL with it.
    fn visit_batch_items(
        &self,
        batch: BatchId,
        after: Option<u64>,
        limit: usize,
        visit: &mut dyn FnMut(&ItemView<'_>) -> bool,
    ) -> Result<usize> {
        let rows = self.batch_items(batch, &[], after, limit)?;
        let mut shown = 0;
        for row in &rows {
            shown += 1;
            if !visit(&row.view()) {
                break;
            }
        }
        Ok(shown)
    }
    /// Items in `status` (`pending`, `held`, `failed`) after `after`, as the engine takes
    /// them: what the runner sends, without the text the report needs.
    fn batch_work(
        &self,
        batch: BatchId,
        status: ItemStatus,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<BatchItem>>;
    /// The batch with this upload idempotency key, if any.
    fn batch_by_key(&self, tenant: TenantId, key: &str) -> Result<Option<BatchRecord>>;
    /// Batches that are validating or processing, leased or not, oldest first. Jobs do not
    /// read this list: they claim one batch at a time ([`BatchStore::claim_next_batch`]).
    fn active_batches(&self) -> Result<Vec<BatchRecord>>;
    /// Claims the oldest active (`validating` or `processing`) batch whose lease is free or
    /// lapsed at `claim.now`: it is `claim.owner`'s until `claim.until`. `None` when every
    /// active batch is leased. Two claimers never get one batch: PostgreSQL skips the rows
    /// another claim has locked (`FOR UPDATE SKIP LOCKED`), SQLite claims in a write
    /// transaction.
    fn claim_next_batch(&self, claim: &Claim<'_>) -> Result<Option<BatchRecord>>;
    /// Claims this batch, as [`BatchStore::claim_next_batch`] would: `None` if it is not active
    /// or another lease on it has not lapsed.
    fn claim_batch(&self, batch: BatchId, claim: &Claim<'_>) -> Result<Option<BatchRecord>>;
    /// Extends `owner`'s lease on the batch to `until`; `false` if `owner` no longer holds it
    /// (another node took it over after it lapsed, or it was released): the job must stop.
    fn renew_batch_lease(&self, batch: BatchId, owner: &str, until: u64) -> Result<bool>;
    /// Frees `owner`'s lease on the batch at once; `false` if `owner` did not hold it.
    fn release_batch_lease(&self, batch: BatchId, owner: &str) -> Result<bool>;
    /// An account of the tenant by id (`acct_…`) or by reference: the reference's account in
    /// `currency` if there is one, else any account with that reference (so that the caller can
    /// report the currency mismatch).
    fn find_account(&self, tenant: TenantId, text: &str, currency: Option<Currency>) -> Result<Option<Account>>;
    /// A payment of the tenant, as stored (another tenant's is `None`): what validating a
    /// refunds file checks each line against.
    fn batch_payment(&self, tenant: TenantId, payment: PaymentId) -> Result<Option<Payment>>;
    /// For each of `transfers`, the `reference` (a pain.001 `EndToEndId`, a CSV `reference`, a
    /// NACHA trace number) and remittance information of the batch item of `tenant` that it
    /// paid or posted, found from
    /// its id ([`paycore_ledger::BatchId::item_of`]) and checked against the item's payer,
    /// payee and amount; `None` for a transfer no batch item made.
    /// What an account statement writes as an entry's end-to-end id.
    fn item_references(
        &self,
        tenant: TenantId,
        transfers: &[paycore_ledger::Transfer],
    ) -> Result<Vec<Option<ItemReference>>>;
    /// Starts writing the uploaded file named `file` (`batches/<name>`, see [`crate::files`]).
    fn file_writer(&self, file: &str) -> Result<Box<dyn FileSink>>;
    /// The finished file named `file`, read from its start; `None` if there is none (never
    /// stored, aborted, cut short by a crash, or removed).
    fn open_file(&self, file: &str) -> Result<Option<Box<dyn std::io::Read + Send>>>;
    /// The size in bytes of the finished file named `file`, when the store knows it without
    /// reading the file; `None` when it does not (then a large pain.001 file is validated by
    /// one parser thread rather than two: `paycore_engine::batches`).
    fn file_size(&self, file: &str) -> Result<Option<u64>> {
        let _ = file;
        Ok(None)
    }
    /// Removes the file named `file`, finished or not; nothing if there is none.
    fn remove_file(&self, file: &str) -> Result<()>;
}

/// A run of consecutive items of one batch with one result in one phase, as the engine's
/// commit writes it: a chunk of 8 190 items that all succeeded is one run, not 8 190 rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRun {
    pub batch: BatchId,
    /// 0: pay or hold; 1: post or void (it overrides phase 0).
    pub phase: u8,
    pub first: u64,
    pub last: u64,
    pub state: BatchItemState,
    /// The failure code the run's items report: the ledger's result code, or
    /// `batch_aborted` for the items an atomic batch voided.
    pub code: Option<&'static str>,
}

/// How many items moved into (positive) or out of (negative) each counter of a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub succeeded: i64,
    pub failed: i64,
    pub held: i64,
}

impl Counters {
    pub fn add(&mut self, other: Counters) {
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.held += other.held;
    }
}

impl NewRun {
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// What writing this run does to its batch's counters: its items count where their state
    /// says, and a phase 1 result moves them out of `held`.
    pub fn counters(&self) -> Counters {
        let moved = i64::try_from(self.len()).unwrap_or(i64::MAX);
        let mut c = Counters::default();
        if self.phase == 1 {
            c.held -= moved;
        }
        match self.state {
            BatchItemState::Succeeded => c.succeeded += moved,
            BatchItemState::Failed | BatchItemState::Voided => c.failed += moved,
            BatchItemState::Held => c.held += moved,
        }
        c
    }
}

/// The engine's item results cut into runs of consecutive indexes of one batch with the same
/// step, state and code, in the order the ledger produced them.
pub fn result_runs(items: &[BatchItemResult]) -> impl Iterator<Item = NewRun> + '_ {
    let same_run = |a: &BatchItemResult, b: &BatchItemResult| {
        a.batch == b.batch
            && a.step == b.step
            && a.state == b.state
            && a.code == b.code
            && a.index.checked_add(1) == Some(b.index)
    };
    items.chunk_by(same_run).map(|run| {
        let (first, last) = (&run[0], &run[run.len() - 1]);
        let code = match first.state {
            BatchItemState::Voided => Some("batch_aborted"),
            _ => (!first.code.is_success()).then(|| first.code.as_str()),
        };
        let phase = match first.step {
            BatchStep::Pay | BatchStep::Hold => 0,
            BatchStep::Post | BatchStep::Void => 1,
        };
        NewRun { batch: first.batch, phase, first: first.index, last: last.index, state: first.state, code }
    })
}

/// The status a batch takes when the engine commits its end.
pub fn end_status(end: BatchEnd) -> BatchStatus {
    match end {
        BatchEnd::Completed => BatchStatus::Completed,
        BatchEnd::Cancelled => BatchStatus::Cancelled,
    }
}

/// What the end of a batch (its stored status) made of the items it never sent to the ledger:
/// `cancelled` when it was cancelled, `voided` (`batch_aborted`) when an atomic batch failed
/// and so completed without them, `pending` while it runs.
pub fn unsent(batch_status: BatchStatus) -> (ItemStatus, Option<&'static str>) {
    match batch_status {
        BatchStatus::Cancelled => (ItemStatus::Cancelled, Some("cancelled")),
        BatchStatus::Completed => (ItemStatus::Voided, Some("batch_aborted")),
        _ => (ItemStatus::Pending, None),
    }
}

/// A stored run, as read back: its indexes and the item status and code it gives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultRun {
    pub first: u64,
    pub last: u64,
    pub status: ItemStatus,
    pub code: Option<String>,
}

/// Parses a stored run's status: one a result can give (see [`BatchItemState`]).
pub fn result_status(text: &str) -> Result<ItemStatus> {
    match ItemStatus::parse(text) {
        Some(
            status @ (ItemStatus::Succeeded
            | ItemStatus::Failed
            | ItemStatus::Held
            | ItemStatus::Voided
            | ItemStatus::Returned),
        ) => Ok(status),
        _ => Err(StoreError::Corrupt(format!("batch result with status {text:?}"))),
    }
}

/// Which run gives each index of a window `lo..=hi` its result: the runs of phase 0, then
/// those of phase 1, so that a later phase overrides an earlier one. An index no run covers
/// has no result: it is an invalid item (its row says) or one never sent ([`unsent`]).
pub struct WindowResults {
    lo: u64,
    result: Vec<Option<usize>>,
}

impl WindowResults {
    /// `runs` are those that reach into the window, phase 0 before phase 1; the window is at
    /// most a few tens of thousands of indexes (it is held as one slot per index).
    pub fn new(runs: &[ResultRun], lo: u64, hi: u64) -> WindowResults {
        let offset = |i: u64| usize::try_from(i - lo).unwrap_or(usize::MAX);
        let mut result: Vec<Option<usize>> = vec![None; offset(hi) + 1];
        for (k, run) in runs.iter().enumerate() {
            if run.last < lo || run.first > hi {
                continue;
            }
            result[offset(run.first.max(lo))..=offset(run.last.min(hi))].fill(Some(k));
        }
        WindowResults { lo, result }
    }

    /// The index of the run that gives `index` its result, if any.
    pub fn run_of(&self, index: u64) -> Option<usize> {
        index
            .checked_sub(self.lo)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.result.get(i).copied().flatten())
    }

    /// The window's slots in index order, from `lo`.
    pub fn slots(&self) -> &[Option<usize>] {
        &self.result
    }

    /// The maximal stretches `(first, last)` of consecutive indexes whose slot `keep` accepts,
    /// in index order: the only rows of the window worth reading.
    pub fn stretches(&self, keep: impl Fn(Option<usize>) -> bool) -> Vec<(u64, u64)> {
        let mut stretches = Vec::new();
        let mut start: Option<usize> = None;
        for (i, slot) in self.result.iter().enumerate() {
            match (keep(*slot), start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    stretches.push((self.lo + s as u64, self.lo + i as u64 - 1));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            stretches.push((self.lo + s as u64, self.lo + self.result.len() as u64 - 1));
        }
        stretches
    }
}

/// Item indexes whose results a listing derives at a time (one slot each in
/// [`WindowResults`]).
pub const WINDOW: u64 = 65_536;

/// An item as a listing reads it: its index, its stored status (`invalid` or `pending`), and
/// where the derived status goes.
pub trait ListedItem {
    fn index(&self) -> u64;
    fn status(&self) -> ItemStatus;
    fn set_status(&mut self, status: ItemStatus, code: Option<&str>);
}

impl ListedItem for BatchItemRow {
    fn index(&self) -> u64 {
        self.index
    }

    fn status(&self) -> ItemStatus {
        self.status
    }

    fn set_status(&mut self, status: ItemStatus, code: Option<&str>) {
        self.status = status;
        self.failure_code = code.map(str::to_owned);
    }
}

/// What a backend reads of one batch for a listing, inside one snapshot.
pub trait ItemRows<T> {
    /// The result runs that reach into `lo..=hi`: phase 0, then phase 1, each in index order.
    fn runs(&mut self, lo: u64, hi: u64) -> Result<Vec<ResultRun>>;
    /// Up to `limit` item rows with an index in `first..=last`, in index order.
    fn rows(&mut self, first: u64, last: u64, limit: usize) -> Result<Vec<T>>;
}

/// The items of a batch that `ended` as it did, in index order after `after` (up to `max`,
/// the highest index), with their derived status: all of them, or those whose status is one of
/// `statuses`, at most `limit`. A window of indexes at a time: the runs that cover it, each
/// index's result (the run of its latest phase), then the rows of the stretches whose status
/// is wanted, a page at a time (invalid rows in a stretch are dropped, so one page may not fill
/// what is left of `limit`).
pub fn list_items<T: ListedItem>(
    source: &mut impl ItemRows<T>,
    ended: BatchStatus,
    statuses: &[ItemStatus],
    after: Option<u64>,
    max: u64,
    limit: usize,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    let wanted = |status: ItemStatus| statuses.is_empty() || statuses.contains(&status);
    let (left, left_code) = unsent(ended);
    let window = if statuses.is_empty() { (limit as u64).clamp(1, WINDOW) } else { WINDOW };
    let mut lo = after.map_or(0, |a| a.saturating_add(1));
    while lo <= max && out.len() < limit {
        let hi = lo.saturating_add(window - 1).min(max);
        let runs = source.runs(lo, hi)?;
        let results = WindowResults::new(&runs, lo, hi);
        // An index without a result may be an invalid item; its row says.
        let keep = |run: Option<usize>| match run {
            Some(k) => wanted(runs[k].status),
            None => wanted(left) || wanted(ItemStatus::Invalid),
        };
        for (first, last) in results.stretches(keep) {
            let mut next = first;
            while next <= last && out.len() < limit {
                let need = limit - out.len();
                let rows = source.rows(next, last, need)?;
                let fetched = rows.len();
                for mut row in rows {
                    next = row.index().saturating_add(1);
                    if row.status() != ItemStatus::Invalid {
                        match results.run_of(row.index()) {
                            Some(k) => row.set_status(runs[k].status, runs[k].code.as_deref()),
                            None => row.set_status(left, left_code),
                        }
                    }
                    if wanted(row.status()) {
                        out.push(row);
                    }
                }
                if fetched < need {
                    break;
                }
            }
        }
        lo = hi + 1;
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use paycore_ledger::ResultCode;

    fn result(index: u64, step: BatchStep, state: BatchItemState, code: ResultCode) -> BatchItemResult {
        BatchItemResult { batch: BatchId(9 << 64), index, step, state, code }
    }

    #[test]
    fn results_become_runs_of_one_step_state_and_code() {
        use BatchItemState::{Failed, Succeeded};
        let items = [
            result(0, BatchStep::Pay, Succeeded, ResultCode::Ok),
            result(1, BatchStep::Pay, Succeeded, ResultCode::Ok),
            result(2, BatchStep::Pay, Failed, ResultCode::InsufficientFunds),
            result(3, BatchStep::Pay, Failed, ResultCode::InsufficientFunds),
            result(4, BatchStep::Pay, Failed, ResultCode::AccountNotFound),
            // A gap in the indexes starts a new run even with the same result.
            result(6, BatchStep::Pay, Failed, ResultCode::AccountNotFound),
        ];
        let runs: Vec<(u64, u64, Option<&str>)> = result_runs(&items).map(|r| (r.first, r.last, r.code)).collect();
        assert_eq!(
            runs,
            [
                (0, 1, None),
                (2, 3, Some("insufficient_funds")),
                (4, 4, Some("account_not_found")),
                (6, 6, Some("account_not_found"))
            ]
        );
    }

    #[test]
    fn voided_runs_say_batch_aborted_and_post_runs_are_phase_one() {
        let items = [
            result(0, BatchStep::Void, BatchItemState::Voided, ResultCode::Ok),
            result(1, BatchStep::Post, BatchItemState::Succeeded, ResultCode::Ok),
        ];
        let runs: Vec<NewRun> = result_runs(&items).collect();
        assert_eq!((runs[0].phase, runs[0].code), (1, Some("batch_aborted")));
        assert_eq!((runs[1].phase, runs[1].code), (1, None));
    }

    #[test]
    fn counters_follow_state_and_phase_one_leaves_held() {
        let run = |phase, state, first, last| NewRun { batch: BatchId(1), phase, first, last, state, code: None };
        assert_eq!(run(0, BatchItemState::Held, 0, 9).counters(), Counters { succeeded: 0, failed: 0, held: 10 });
        assert_eq!(
            run(1, BatchItemState::Succeeded, 0, 9).counters(),
            Counters { succeeded: 10, failed: 0, held: -10 }
        );
        assert_eq!(run(1, BatchItemState::Voided, 5, 5).counters(), Counters { succeeded: 0, failed: 1, held: -1 });
        assert_eq!(run(0, BatchItemState::Failed, 3, 4).counters(), Counters { succeeded: 0, failed: 2, held: 0 });
        let mut total = Counters::default();
        total.add(run(0, BatchItemState::Held, 0, 9).counters());
        total.add(run(1, BatchItemState::Succeeded, 0, 9).counters());
        assert_eq!(total, Counters { succeeded: 10, failed: 0, held: 0 });
    }

    #[test]
    fn unsent_items_follow_how_the_batch_ended() {
        assert_eq!(unsent(BatchStatus::Cancelled), (ItemStatus::Cancelled, Some("cancelled")));
        assert_eq!(unsent(BatchStatus::Completed), (ItemStatus::Voided, Some("batch_aborted")));
        assert_eq!(unsent(BatchStatus::Processing), (ItemStatus::Pending, None));
    }

    #[test]
    fn a_later_phase_overrides_and_runs_are_cut_to_the_window() {
        let run = |first, last, status| ResultRun { first, last, status, code: None };
        // Phase 0 held 0..=99, phase 1 posted 0..=49; the window is 40..=59.
        let runs = [run(0, 99, ItemStatus::Held), run(0, 49, ItemStatus::Succeeded), run(200, 300, ItemStatus::Failed)];
        let window = WindowResults::new(&runs, 40, 59);
        assert_eq!(window.slots().len(), 20);
        assert_eq!(window.run_of(40), Some(1));
        assert_eq!(window.run_of(49), Some(1));
        assert_eq!(window.run_of(50), Some(0));
        assert_eq!(window.run_of(59), Some(0));
        assert_eq!(window.run_of(60), None);
        assert_eq!(window.run_of(39), None);
        let gap = WindowResults::new(&[run(0, 9, ItemStatus::Succeeded), run(20, 29, ItemStatus::Failed)], 5, 24);
        assert_eq!((gap.run_of(9), gap.run_of(10), gap.run_of(19), gap.run_of(20)), (Some(0), None, None, Some(1)));
    }

    #[test]
    fn stretches_are_the_maximal_runs_of_kept_slots() {
        let run = |first, last, status| ResultRun { first, last, status, code: None };
        // 10..=14 succeeded, 15..=17 nothing (invalid or unsent), 18..=19 failed.
        let window = WindowResults::new(&[run(10, 14, ItemStatus::Succeeded), run(18, 19, ItemStatus::Failed)], 10, 19);
        assert_eq!(window.stretches(|slot| slot == Some(1)), [(18, 19)]);
        assert_eq!(window.stretches(|slot| slot.is_none()), [(15, 17)]);
        assert_eq!(window.stretches(|slot| slot != Some(0)), [(15, 19)]);
        assert_eq!(window.stretches(|_| true), [(10, 19)]);
        assert_eq!(window.stretches(|_| false), []);
    }

    #[test]
    fn stored_statuses_parse_and_unknown_ones_are_corrupt() {
        assert_eq!(result_status("voided").unwrap(), ItemStatus::Voided);
        assert!(matches!(result_status("paid"), Err(StoreError::Corrupt(_))));
        assert!(matches!(result_status("pending"), Err(StoreError::Corrupt(_))), "no result leaves an item pending");
    }
}
