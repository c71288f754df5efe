//! The single-writer loop.

use crate::queue::{Envelope, Queue, Received};
use crate::{EngineError, EngineMetrics, Reply};
use paycore_ledger::{Outcome, Request, State, TenantId, BATCH_EVENTS_MAX};
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
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { batch_events_max: BATCH_EVENTS_MAX }
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
    let engine = Engine { store, queue, clock, renderer, metrics, config, state, full: None };
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
    store: Box<dyn Store>,
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
            let fenced = self.process(std::mem::take(&mut batch));
            self.metrics.batch_events.observe(events as f64);
            self.metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
            if fenced {
                tracing::error!("engine stopped: another engine leads the store now");
                return Stopped::Fenced;
            }
        }
        tracing::info!("engine stopped: no more submitters");
        Stopped::Closed
    }

    /// One batch: answer saved responses, execute the rest, commit, reply. Returns whether the
    /// store fenced this engine off (then nothing is rebuilt: the loop must end).
    fn process(&mut self, batch: Vec<Envelope>) -> bool {
        match self.try_process(batch) {
            Ok(()) => false,
            Err(Failed { replies, cause, kind }) => {
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
                        self.full = Some(FullDisk {
                            retry_at: Instant::now() + wait,
                            next_wait: (wait * 2).min(FULL_RETRY_MAX),
                        });
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
        }
    }

    /// Rebuilds the state from the store, retrying until it can; returns whether the store
    /// fenced this engine off meanwhile (then there is nothing to rebuild for).
    fn rebuild(&mut self) -> bool {
        let mut wait = Duration::from_millis(10);
        loop {
            match recover(self.store.as_mut()) {
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
    fn try_process(&mut self, batch: Vec<Envelope>) -> Result<(), Failed> {
        let saved = match self.saved_responses(&batch) {
            Ok(saved) => saved,
            Err(e) => return Err(Failed::store(batch.into_iter().map(|e| e.reply).collect(), &e)),
        };
        let Planned { requests, plans, replies, keys } = plan(batch, &saved);
        if self.full.as_ref().is_some_and(|full| Instant::now() < full.retry_at) {
            // Nothing executes while the disk is full (an empty batch, a deadline, waits too);
            // replays of saved responses were answered above.
            return Err(Failed { replies, cause: "the disk is full".into(), kind: FailureKind::StillFull });
        }
        if let Err(e) = self.load(&requests) {
            return Err(Failed::store(replies, &e));
        }
        let now = self.clock.now_ns();
        let outcomes = match self.execute(&requests, now) {
            Ok(outcomes) => outcomes,
            Err(cause) => return Err(Failed { replies, cause, kind: FailureKind::Other }),
        };
        let changes = self.state.take_changes();
        let (records, rendered) = self.render_saved(&plans, &keys, &outcomes, now);
        if !changes.is_empty() || !records.is_empty() {
            let started = Instant::now();
            if let Err(e) = self.store.commit(&changes, &records) {
                return Err(Failed::store(replies, &e));
            }
            self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
            if self.full.take().is_some() {
                tracing::info!("the disk has room again: writes are committed");
            }
        }
        answer(&plans, replies, outcomes, rendered);
        Ok(())
    }

    /// The saved responses of the idempotency keys in the batch.
    fn saved_responses(&mut self, batch: &[Envelope]) -> Result<Vec<IdempotencyRecord>, StoreError> {
        let wanted: Vec<(TenantId, &str)> = batch
            .iter()
            .filter_map(|e| Some((e.submission.request.tenant, e.submission.idempotency.as_ref()?.key.as_str())))
            .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        self.store.idempotency(&wanted)
    }

    /// Loads the stored objects the requests refer to that are not in memory.
    fn load(&mut self, requests: &[Request]) -> Result<(), StoreError> {
        let wanted = self.state.prefetch(requests);
        if !wanted.is_empty() {
            let loaded = self.store.load(&wanted)?;
            self.state.insert_prefetched(loaded.transfers, loaded.holds, loaded.payments);
            self.state.insert_prefetched_quotes(loaded.quotes);
            self.state.insert_debit_history(loaded.debits);
            self.state.insert_clearing(loaded.open_windows, loaded.window_ids);
        }
        Ok(())
    }

    /// Executes the requests; a panic (a broken invariant) becomes its message.
    fn execute(&mut self, requests: &[Request], now: u64) -> Result<Vec<Outcome>, String> {
        catch_unwind(AssertUnwindSafe(|| self.state.execute(requests, now))).map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "the state machine panicked".into())
        })
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
}

/// The ways to answer the envelopes of a batch, in order.
type Replies = Vec<Box<dyn FnOnce(Result<Reply, EngineError>) + Send>>;

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

/// Replies to every envelope of the batch, now that it is durable.
fn answer(plans: &[Plan], replies: Replies, outcomes: Vec<Outcome>, rendered: Vec<Option<Response>>) {
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
