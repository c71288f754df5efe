//! The single-writer loop.

use crate::queue::{Envelope, Queue, Received};
use crate::{EngineError, EngineMetrics, Reply};
use paycore_ledger::{ChangeSet, Outcome, Request, State, TenantId, BATCH_EVENTS_MAX};
use paycore_store::{IdempotencyRecord, Store, StoreError};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The engine's only source of time, so that a simulation can drive it.
pub trait Clock: Send + Sync {
    /// Nanoseconds since the Unix epoch.
    fn now_ns(&self) -> u64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> u64 {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Turns an outcome into the HTTP status and body the API answers with. The engine saves that
/// response with an idempotency key in the same commit as the effect; the renderer must be
/// deterministic.
pub type Renderer = Arc<dyn Fn(&Outcome) -> (u16, Vec<u8>) + Send + Sync>;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Most ledger events in one batch (one commit); [`BATCH_EVENTS_MAX`] by default.
    pub batch_events_max: usize,
    /// Whether a batch may commit on the committer thread while the next one executes (when
    /// the queue has work waiting: see [`Queue::has_waiting`]); `true` by default. Off, every
    /// batch commits on the engine thread before the next is taken.
    pub pipeline: bool,
    /// The fewest ledger events a batch must carry to commit on the committer thread
    /// ([`PIPELINE_EVENTS_MIN`] by default). A small batch's commit is short: handing it to
    /// another thread and waiting for it again costs two thread wake-ups, which on a busy
    /// machine cost more than the overlap saves (`crates/bench/NOTES.md`, "Overlap").
    pub pipeline_events_min: usize,
}

/// The default of [`EngineConfig::pipeline_events_min`]: a bulk request's batch pipelines, a
/// batch of real-time requests (tens of events) does not.
pub const PIPELINE_EVENTS_MIN: usize = 1024;

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { batch_events_max: BATCH_EVENTS_MAX, pipeline: true, pipeline_events_min: PIPELINE_EVENTS_MIN }
    }
}

/// How the engine loop ended: what its thread returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every submitter was dropped (the queue closed): a normal stop.
    Closed,
    /// A commit was refused because another engine now leads the store's partition
    /// ([`StoreError::Fenced`]): this engine answered that batch 503 and wrote nothing, and
    /// must not write again (no rebuild, no retry).
    Fenced,
}

/// Recovers the state from `store`, then runs the loop on a thread of its own until every
/// submitter is dropped ([`Stopped::Closed`]) or the store fences it ([`Stopped::Fenced`]).
pub fn start(
    mut store: Box<dyn Store>,
    queue: Box<dyn Queue>,
    clock: Arc<dyn Clock>,
    renderer: Renderer,
    metrics: EngineMetrics,
    config: EngineConfig,
) -> Result<std::thread::JoinHandle<Stopped>, StoreError> {
    let state = recover(store.as_mut())?;
    let committer = Committer::start(metrics.clone())?;
    let engine = Engine { store: Some(store), committer, queue, clock, renderer, metrics, config, state, full: None };
    std::thread::Builder::new()
        .name("paycore-engine".into())
        .spawn(move || engine.run())
        .map_err(|e| StoreError::Internal(format!("cannot start the engine thread: {e}")))
}

fn recover(store: &mut dyn Store) -> Result<State, StoreError> {
    let r = store.recover()?;
    let mut state = State::recover(r.accounts, r.open_holds, r.open_payments, r.last_timestamp);
    state.set_stored_transfer_id_max(r.max_transfer_id);
    state.set_stored_payment_id_max(r.max_payment_id);
    // The limits' recent history (today's outflow, the velocity window) of the limited
    // accounts, rebuilt from the stored transfers.
    let wanted = state.history_wanted();
    if !wanted.is_empty() {
        state.insert_debit_history(store.load(&wanted)?.debits);
    }
    state.rebuild_limit_history();
    Ok(state)
}

struct Engine {
    /// `None` while a batch commits on the committer thread, which holds the store then and
    /// gives it back with the commit's result ([`Engine::sync`]).
    store: Option<Box<dyn Store>>,
    committer: Committer,
    queue: Box<dyn Queue>,
    clock: Arc<dyn Clock>,
    renderer: Renderer,
    metrics: EngineMetrics,
    config: EngineConfig,
    state: State,
    /// After a commit the disk refused: writes are refused until then, without executing
    /// them (each try costs a rebuild), and the next wait, doubled at every refusal.
    full: Option<FullDisk>,
}

/// The disk was full at the last commit.
struct FullDisk {
    /// Until then, batches that would write are answered [`EngineError::StorageFull`].
    retry_at: Instant,
    /// How long to wait after the next refused commit.
    next_wait: Duration,
}

/// The first wait after a commit the disk refused; it doubles at each refusal in a row, up to
/// [`FULL_RETRY_MAX`]. A refused write costs a rebuild of the state from the store, so a full
/// disk is not tried at every batch; space freed is used within [`FULL_RETRY_MAX`].
const FULL_RETRY_FIRST: Duration = Duration::from_millis(100);
const FULL_RETRY_MAX: Duration = Duration::from_secs(2);

/// What to do with one envelope of the batch.
enum Plan {
    /// Execute it: its request is `requests[index]`.
    Execute { index: usize },
    /// An earlier envelope of this batch carries the same key: answer as that one.
    Follow { leader: usize, same_request: bool },
}

impl Engine {
    fn run(mut self) -> Stopped {
        let mut batch = Vec::new();
        loop {
            if self.store.is_none() && !self.queue.has_waiting() {
                // A batch is committing and nothing else waits: wait for its result here (a
                // failed commit is answered and the state rebuilt now, not at the next batch).
                if let Err(failed) = self.sync() {
                    if self.fail(failed) {
                        tracing::error!("engine stopped: another engine leads the store now");
                        return Stopped::Fenced;
                    }
                }
            }
            let mut timeout = self
                .state
                .next_deadline()
                .map(|at| Duration::from_nanos(at.saturating_sub(self.clock.now_ns())).max(Duration::from_millis(1)));
            // A deadline passed while the disk is full waits for the next try, not a spin.
            if let (Some(wait), Some(full)) = (timeout.as_mut(), &self.full) {
                *wait = (*wait).max(full.retry_at.saturating_duration_since(Instant::now()));
            }
            match self.queue.recv_batch(self.config.batch_events_max, timeout, &mut batch) {
                Received::Closed => break,
                Received::Timeout | Received::Some => {}
            }
            let started = Instant::now();
            let events: usize = batch.iter().map(Envelope::events).sum();
            let fenced = self.process(std::mem::take(&mut batch), events);
            self.metrics.batch_events.observe(events as f64);
            self.metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
            if fenced {
                tracing::error!("engine stopped: another engine leads the store now");
                return Stopped::Fenced;
            }
        }
        // The queue closed while a batch may still be committing: its replies come first.
        if let Err(failed) = self.sync() {
            if self.fail(failed) {
                return Stopped::Fenced;
            }
        }
        tracing::info!("engine stopped: no more submitters");
        Stopped::Closed
    }

    /// One batch: answer saved responses, execute the rest, commit, reply. Returns whether the
    /// store fenced this engine off (then nothing is rebuilt: the loop must end).
    fn process(&mut self, batch: Vec<Envelope>, events: usize) -> bool {
        match self.try_process(batch, events) {
            Ok(()) => false,
            Err(failed) => self.fail(failed),
        }
    }

    /// Answers a failed batch (and the batch before it, if that one was still committing: this
    /// one rests on its state) and rebuilds the state from the store, or keeps it when nothing
    /// executed. Returns whether the store fenced this engine off.
    fn fail(&mut self, failed: Failed) -> bool {
        let Failed { replies, cause, kind } = match self.sync() {
            Ok(()) => failed,
            Err(before) => before.then(failed),
        };
        let error = match kind {
            FailureKind::Full | FailureKind::StillFull => EngineError::StorageFull,
            FailureKind::Fenced | FailureKind::Other => EngineError::Unavailable(cause.clone()),
        };
        for reply in replies {
            reply(Err(error.clone()));
        }
        match kind {
            FailureKind::StillFull => false,
            FailureKind::Fenced => {
                tracing::error!(error = %cause, "batch refused: this engine no longer leads; nothing of it was committed");
                true
            }
            FailureKind::Full => {
                let wait = self.full.as_ref().map_or(FULL_RETRY_FIRST, |full| full.next_wait);
                if self.full.is_none() {
                    tracing::error!(error = %cause, "the disk is full: batch answered 503 storage_full, nothing of it was committed; rebuilding state from the store, writes retried from time to time");
                }
                self.full =
                    Some(FullDisk { retry_at: Instant::now() + wait, next_wait: (wait * 2).min(FULL_RETRY_MAX) });
                self.metrics.recoveries.inc();
                self.rebuild()
            }
            FailureKind::Other => {
                tracing::error!(error = %cause, "batch failed; nothing of it was committed; rebuilding state from the store");
                self.metrics.recoveries.inc();
                self.rebuild()
            }
        }
    }

    /// Waits for the batch committing on the committer thread, if any, and takes the store
    /// back. A failed commit comes back with the replies of its batch, not given yet.
    fn sync(&mut self) -> Result<(), Failed> {
        if self.store.is_some() {
            return Ok(());
        }
        let Ok(Committed { store, result }) = self.committer.done.recv() else {
            // The committer thread catches a commit's panic and always gives the store back,
            // so this cannot happen; without a store the engine can only stop.
            return Err(Failed {
                replies: Vec::new(),
                cause: "the committer thread ended without giving the store back".into(),
                kind: FailureKind::Fenced,
            });
        };
        self.store = Some(store);
        match result {
            Ok(()) => {
                if self.full.take().is_some() {
                    tracing::info!("the disk has room again: writes are committed");
                }
                Ok(())
            }
            Err((replies, error)) => Err(Failed::store(replies, &error)),
        }
    }

    /// The store, once the batch committing (if any) has given it back: every read of the
    /// store waits for that commit, so it sees the batch before (saved responses, transfers,
    /// finished holds and payments), never a state without it.
    fn store(&mut self) -> Result<&mut dyn Store, Failed> {
        self.sync()?;
        match self.store.as_deref_mut() {
            Some(store) => Ok(store),
            None => Err(Failed { replies: Vec::new(), cause: "the store is gone".into(), kind: FailureKind::Fenced }),
        }
    }

    /// Rebuilds the state from the store, retrying until it can; returns whether the store
    /// fenced this engine off meanwhile (then there is nothing to rebuild for).
    fn rebuild(&mut self) -> bool {
        let mut wait = Duration::from_millis(10);
        loop {
            let Some(store) = self.store.as_deref_mut() else { return true };
            match recover(store) {
                Ok(state) => {
                    self.state = state;
                    return false;
                }
                Err(error @ StoreError::Fenced(_)) => {
                    tracing::error!(%error, "cannot rebuild state: this engine no longer leads");
                    return true;
                }
                Err(error) => {
                    tracing::error!(%error, "cannot rebuild state from the store; retrying");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One batch, step by step. On an error nothing of the batch was committed: the replies
    /// not given yet come back with the cause, for [`Engine::process`] to answer.
    ///
    /// The batch before may still be committing on the committer thread (see
    /// [`EngineConfig::pipeline`]): this one executes on the state that batch left, but reads
    /// the store, replies and commits only once that commit returned. If it failed, this batch
    /// fails with it (the replies of both come back, that batch's first).
    fn try_process(&mut self, batch: Vec<Envelope>, events: usize) -> Result<(), Failed> {
        let saved = match self.saved_responses(&batch) {
            Ok(saved) => saved,
            Err(failed) => return Err(failed.with(batch.into_iter().map(|e| e.reply))),
        };
        let Planned { requests, plans, replies, keys } = plan(batch, &saved);
        if self.full.as_ref().is_some_and(|full| Instant::now() < full.retry_at) {
            // Nothing executes while the disk is full (an empty batch, a deadline, waits too);
            // replays of saved responses were answered above.
            return Err(Failed { replies, cause: "the disk is full".into(), kind: FailureKind::StillFull });
        }
        if let Err(failed) = self.load(&requests) {
            return Err(failed.with(replies));
        }
        let now = self.clock.now_ns();
        let outcomes = match self.execute(&requests, now) {
            Ok(outcomes) => outcomes,
            Err(cause) => return Err(Failed { replies, cause, kind: FailureKind::Other }),
        };
        let changes = self.state.take_changes();
        let (records, rendered) = self.render_saved(&plans, &keys, &outcomes, now);
        let answer = Answer { plans, replies, outcomes, rendered };
        // The outcomes rest on the batch before: nothing is answered before it is durable.
        if let Err(failed) = self.sync() {
            return Err(failed.with(answer.replies));
        }
        if changes.is_empty() && records.is_empty() {
            answer.send();
            return Ok(());
        }
        let Some(store) = self.store.take() else {
            return Err(Failed {
                replies: answer.replies,
                cause: "the store is gone".into(),
                kind: FailureKind::Fenced,
            });
        };
        if self.config.pipeline && events >= self.config.pipeline_events_min && self.queue.has_waiting() {
            // Work is waiting: commit on the committer thread while it executes. A lone
            // request, or a small batch, commits here instead, with no thread hop before its
            // reply.
            match self.committer.jobs.send(Commit { store, changes, records, answer }) {
                Ok(()) => {
                    self.metrics.pipelined.inc();
                    return Ok(());
                }
                // The committer thread is gone (it never ends first): commit here.
                Err(crossbeam_channel::SendError(job)) => {
                    self.store = Some(job.store);
                    return self.commit_here(job.changes, job.records, job.answer);
                }
            }
        }
        self.store = Some(store);
        self.commit_here(changes, records, answer)
    }

    /// Commits a batch on the engine thread and answers it.
    fn commit_here(
        &mut self,
        changes: ChangeSet,
        records: Vec<IdempotencyRecord>,
        answer: Answer,
    ) -> Result<(), Failed> {
        let Some(store) = self.store.as_deref_mut() else {
            return Err(Failed {
                replies: answer.replies,
                cause: "the store is gone".into(),
                kind: FailureKind::Fenced,
            });
        };
        if let Err(e) = commit(store, &changes, &records, &self.metrics) {
            return Err(Failed::store(answer.replies, &e));
        }
        if self.full.take().is_some() {
            tracing::info!("the disk has room again: writes are committed");
        }
        answer.send();
        Ok(())
    }

    /// The saved responses of the idempotency keys in the batch.
    fn saved_responses(&mut self, batch: &[Envelope]) -> Result<Vec<IdempotencyRecord>, Failed> {
        let wanted: Vec<(TenantId, &str)> = batch
            .iter()
            .filter_map(|e| Some((e.submission.request.tenant, e.submission.idempotency.as_ref()?.key.as_str())))
            .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        self.store()?.idempotency(&wanted).map_err(|e| Failed::store(Vec::new(), &e))
    }

    /// Loads the stored objects the requests refer to that are not in memory.
    fn load(&mut self, requests: &[Request]) -> Result<(), Failed> {
        let wanted = self.state.prefetch(requests);
        if !wanted.is_empty() {
            let loaded = self.store()?.load(&wanted).map_err(|e| Failed::store(Vec::new(), &e))?;
            self.state.insert_prefetched(loaded.transfers, loaded.holds, loaded.payments);
            self.state.insert_prefetched_quotes(loaded.quotes);
            self.state.insert_debit_history(loaded.debits);
            self.state.insert_clearing(loaded.open_windows, loaded.window_ids);
        }
        Ok(())
    }

    /// Executes the requests; a panic (a broken invariant) becomes its message.
    fn execute(&mut self, requests: &[Request], now: u64) -> Result<Vec<Outcome>, String> {
        catch_unwind(AssertUnwindSafe(|| self.state.execute(requests, now)))
            .map_err(|panic| panic_message(panic.as_ref(), "the state machine panicked"))
    }

    /// The responses to save with their keys, in the commit (`records`), and the same
    /// responses by position in the batch (`rendered`), for the envelopes that follow a leader.
    fn render_saved(
        &self,
        plans: &[Plan],
        keys: &[Option<SavedKey>],
        outcomes: &[Outcome],
        now: u64,
    ) -> (Vec<IdempotencyRecord>, Vec<Option<Response>>) {
        let mut rendered: Vec<Option<Response>> = vec![None; plans.len()];
        let mut records = Vec::new();
        for (position, plan) in plans.iter().enumerate() {
            if let (Plan::Execute { index }, Some((tenant, key, fingerprint))) = (plan, &keys[position]) {
                let (status, body) = (self.renderer)(&outcomes[*index]);
                records.push(IdempotencyRecord {
                    tenant: *tenant,
                    key: key.clone(),
                    fingerprint: *fingerprint,
                    status,
                    body: body.clone(),
                    created_at: now,
                });
                rendered[position] = Some((status, body));
            }
        }
        (records, rendered)
    }
}

/// A batch that failed before its commit returned: nothing of it was written.
struct Failed {
    /// The replies not given yet, to answer 503.
    replies: Replies,
    cause: String,
    kind: FailureKind,
}

/// Why a batch failed, which decides its answer and what the engine does next.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FailureKind {
    /// The store refused the commit for good: another engine leads it now. The loop ends.
    Fenced,
    /// The disk is full: answered `StorageFull`, the state rebuilt, writes refused a while.
    Full,
    /// Refused without executing: the disk was full at the last try, which is not due yet.
    /// Nothing ran, so nothing is rebuilt.
    StillFull,
    /// Anything else (a store error, a panic): answered `Unavailable`, the state rebuilt.
    Other,
}

impl Failed {
    fn store(replies: Replies, error: &StoreError) -> Failed {
        let kind = match error {
            StoreError::Fenced(_) => FailureKind::Fenced,
            StoreError::Full(_) => FailureKind::Full,
            _ => FailureKind::Other,
        };
        Failed { replies, cause: error.to_string(), kind }
    }

    /// The same failure, answering `more` replies too (after its own).
    fn with(mut self, more: impl IntoIterator<Item = ReplyTo>) -> Failed {
        self.replies.extend(more);
        self
    }

    /// This failure (of a batch whose commit failed) followed by `next`'s, of the batch that
    /// executed on its state: one failure answering both, with this one's cause, unless `next`
    /// calls for more (the store fenced this engine off, or the disk is full).
    fn then(self, next: Failed) -> Failed {
        let (cause, kind) =
            if next.kind.severity() > self.kind.severity() { (next.cause, next.kind) } else { (self.cause, self.kind) };
        Failed { replies: self.replies.into_iter().chain(next.replies).collect(), cause, kind }
    }
}

impl FailureKind {
    /// Which of two failures answered as one decides what follows: ending the loop first,
    /// then a full disk's wait, then a rebuild, then nothing.
    fn severity(self) -> u8 {
        match self {
            FailureKind::StillFull => 0,
            FailureKind::Other => 1,
            FailureKind::Full => 2,
            FailureKind::Fenced => 3,
        }
    }
}

/// The way to answer one envelope.
type ReplyTo = Box<dyn FnOnce(Result<Reply, EngineError>) + Send>;

/// The ways to answer the envelopes of a batch, in order.
type Replies = Vec<ReplyTo>;

/// A rendered response: HTTP status and body.
type Response = (u16, Vec<u8>);

/// An idempotency key to save a response under: tenant, key, request fingerprint.
type SavedKey = (TenantId, String, [u8; 32]);

/// A batch's envelopes once saved responses are answered: the requests to execute, and for
/// each envelope left (by position) its plan, its reply and the key to save its response under.
struct Planned {
    requests: Vec<Request>,
    plans: Vec<Plan>,
    replies: Replies,
    keys: Vec<Option<SavedKey>>,
}

/// Answers at once each envelope whose key has a saved response (it is already durable, and
/// never executed again), and plans the others: the first with a key executes, a later one
/// with the same key follows it.
fn plan(batch: Vec<Envelope>, saved: &[IdempotencyRecord]) -> Planned {
    let mut planned = Planned {
        requests: Vec::with_capacity(batch.len()),
        plans: Vec::with_capacity(batch.len()),
        replies: Vec::with_capacity(batch.len()),
        keys: Vec::with_capacity(batch.len()),
    };
    let saved: HashMap<(TenantId, &str), &IdempotencyRecord> =
        saved.iter().map(|r| ((r.tenant, r.key.as_str()), r)).collect();
    let mut leaders: HashMap<(TenantId, String), (usize, [u8; 32])> = HashMap::new();
    for envelope in batch {
        let Envelope { submission, reply } = envelope;
        let tenant = submission.request.tenant;
        if let Some(key) = &submission.idempotency {
            if let Some(record) = saved.get(&(tenant, key.key.as_str())) {
                reply(Ok(if record.fingerprint == key.fingerprint {
                    Reply::Replay { status: record.status, body: record.body.clone() }
                } else {
                    Reply::KeyReused
                }));
                continue;
            }
            if let Some(&(leader, fingerprint)) = leaders.get(&(tenant, key.key.clone())) {
                planned.plans.push(Plan::Follow { leader, same_request: fingerprint == key.fingerprint });
                planned.replies.push(reply);
                planned.keys.push(None);
                continue;
            }
            leaders.insert((tenant, key.key.clone()), (planned.plans.len(), key.fingerprint));
        }
        planned.keys.push(submission.idempotency.map(|k| (tenant, k.key, k.fingerprint)));
        planned.plans.push(Plan::Execute { index: planned.requests.len() });
        planned.requests.push(submission.request);
        planned.replies.push(reply);
    }
    planned
}

/// A batch executed, to answer once it is durable: each envelope's plan and reply, the
/// outcomes, and the rendered responses the followers of a key answer with.
struct Answer {
    plans: Vec<Plan>,
    replies: Replies,
    outcomes: Vec<Outcome>,
    rendered: Vec<Option<Response>>,
}

impl Answer {
    /// Replies to every envelope of the batch, now that it is durable.
    fn send(self) {
        let Answer { plans, replies, outcomes, rendered } = self;
        let mut outcomes: Vec<Option<Outcome>> = outcomes.into_iter().map(Some).collect();
        for (plan, reply) in plans.iter().zip(replies) {
            let answer = match plan {
                Plan::Execute { index } => outcomes[*index].take().map(Reply::Done),
                Plan::Follow { leader, same_request: true } => {
                    rendered[*leader].clone().map(|(status, body)| Reply::Replay { status, body })
                }
                Plan::Follow { same_request: false, .. } => Some(Reply::KeyReused),
            };
            reply(answer.ok_or_else(|| EngineError::Unavailable("no outcome for the request".into())));
        }
    }
}

/// Commits a batch's changes and saved responses; a panic of the store becomes an error (its
/// transaction is rolled back as it unwinds), so the engine rebuilds rather than dies.
fn commit(
    store: &mut dyn Store,
    changes: &ChangeSet,
    records: &[IdempotencyRecord],
    metrics: &EngineMetrics,
) -> Result<(), StoreError> {
    let started = Instant::now();
    catch_unwind(AssertUnwindSafe(|| store.commit(changes, records))).unwrap_or_else(|panic| {
        Err(StoreError::Internal(format!(
            "the store's commit panicked: {}",
            panic_message(panic.as_ref(), "no message")
        )))
    })?;
    metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
    Ok(())
}

/// A panic's message, or `otherwise` when it has none.
fn panic_message(panic: &(dyn std::any::Any + Send), otherwise: &str) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| otherwise.into())
}

/// A batch handed to the committer thread, with the store to commit it on.
struct Commit {
    store: Box<dyn Store>,
    changes: ChangeSet,
    records: Vec<IdempotencyRecord>,
    answer: Answer,
}

/// What the committer thread gives back: the store, and on a failed commit the batch's
/// replies (not given) with the error.
struct Committed {
    store: Box<dyn Store>,
    result: Result<(), (Replies, StoreError)>,
}

/// The thread that commits a batch while the engine thread executes the next (at most one
/// batch at a time: the engine waits for the result before it commits again), and answers
/// the batch as soon as its commit returned.
struct Committer {
    jobs: crossbeam_channel::Sender<Commit>,
    done: crossbeam_channel::Receiver<Committed>,
}

impl Committer {
    fn start(metrics: EngineMetrics) -> Result<Committer, StoreError> {
        let (jobs, queued) = crossbeam_channel::bounded::<Commit>(1);
        let (finished, done) = crossbeam_channel::bounded::<Committed>(1);
        std::thread::Builder::new()
            .name("paycore-commit".into())
            .spawn(move || {
                // Ends when the engine drops its side (the engine has stopped).
                for Commit { mut store, changes, records, answer } in queued {
                    let result = match commit(store.as_mut(), &changes, &records, &metrics) {
                        Ok(()) => {
                            answer.send();
                            Ok(())
                        }
                        Err(error) => Err((answer.replies, error)),
                    };
                    if finished.send(Committed { store, result }).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| StoreError::Internal(format!("cannot start the committer thread: {e}")))?;
        Ok(Committer { jobs, done })
    }
}
