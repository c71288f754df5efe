//! Background work for batches: validating an uploaded file, then running its items through
//! the engine, on whichever node holds the batch's lease.
//!
//! Every node runs a claim loop ([`spawn_claim_loop`], started by `Service::serve`): about
//! every second it claims the oldest active batch that no node holds (or whose lease lapsed:
//! its node died or lost the store) and runs it. The node that takes an upload in claims that
//! batch at once ([`spawn`]). While a job runs, it renews its lease every third of the lease's
//! length; a renewal that fails means another node took the batch over, and the job stops. At
//! the end the job releases the lease. A job under a new owner starts validation over (the items
//! are cleared first) and runs only the items still pending: items are idempotent (their
//! transfer ids derive from batch id and index), so a second runner of one batch is wasteful,
//! never harmful.

use crate::AppState;
use paycore_engine::batches;
use paycore_ledger::BatchId;
use paycore_store::{BatchRecord, BatchStore, Claim, StoreError};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};

/// Batch jobs one node's claim loop takes on at once; the rest stay free for other nodes (a
/// node still runs every batch it takes in itself).
const JOBS_MAX: usize = 8;
/// How often the claim loop looks for a batch that no node runs.
const CLAIM_EVERY: Duration = Duration::from_secs(1);
/// How often the claim loop and each job look at the service's stop flag (and a job at its
/// lease's renewal time).
const TICK: Duration = Duration::from_millis(100);
/// The wait before another try after a renewal failed on a store error.
const RENEW_RETRY: Duration = Duration::from_secs(1);

/// The node's batch jobs: who it is in leases, how long they last, what runs here.
pub struct Jobs {
    validations: Semaphore,
    /// Validations waiting for a turn (and uploads being taken in that will), with their cap
    /// (`Config::max_queued_validations`).
    queued: Arc<AtomicUsize>,
    queued_max: usize,
    node: String,
    lease: Duration,
    running: Mutex<HashSet<BatchId>>,
    /// Wakes the claim loop early (a job ended, or a claim at intake failed).
    wake: Notify,
}

impl Jobs {
    /// The jobs of node `node`, whose leases last `lease` unless renewed, validating at most
    /// `validations` files at once (`Config::max_concurrent_validations`): each keeps a core
    /// busy and holds its parser's and checker's memory. At most `queued` uploads may wait
    /// for a turn (`Config::max_queued_validations`, see [`Jobs::queue_validation`]).
    pub fn new(node: String, lease: Duration, validations: usize, queued: usize) -> Jobs {
        Jobs {
            validations: Semaphore::new(validations.max(1)),
            queued: Arc::new(AtomicUsize::new(0)),
            queued_max: queued.max(1),
            node,
            lease,
            running: Mutex::new(HashSet::new()),
            wake: Notify::new(),
        }
    }

    /// A place in the validation queue for an upload about to be taken in, or `None` when
    /// `queued_max` uploads already wait (taken in, or being taken in, and not yet validating):
    /// the upload is then refused before its body is read. The place is given up when its
    /// validation begins, or when the upload ends without a batch.
    pub fn queue_validation(&self) -> Option<QueuePlace> {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.queued_max).then_some(n + 1))
            .ok()
            .map(|_| QueuePlace(self.queued.clone()))
    }

    /// A place in the validation queue for a batch claimed from the store (taken in before, or
    /// by another node): it is already kept, so it waits whatever the cap, and counts in it.
    fn queue_claimed(&self) -> QueuePlace {
        self.queued.fetch_add(1, Ordering::AcqRel);
        QueuePlace(self.queued.clone())
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<BatchId>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The end of a lease taken or renewed now.
    fn until(&self, now: u64) -> u64 {
        now.saturating_add(u64::try_from(self.lease.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// A place in the validation queue ([`Jobs::queue_validation`]), given up when dropped.
#[derive(Debug)]
pub struct QueuePlace(Arc<AtomicUsize>);

impl Drop for QueuePlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Claims the batch just taken in for this node and runs it here, in the background, keeping
/// its `place` in the validation queue (an upload's) until its validation begins. If another
/// node's claim loop was quicker, that node runs it.
pub fn spawn(state: Arc<AppState>, batch: BatchRecord, place: Option<QueuePlace>) {
    tokio::spawn(async move {
        let id = batch.id;
        match claim(&state, move |store, claim| store.claim_batch(id, claim)).await {
            Ok(Some(batch)) => start(state, batch, place),
            Ok(None) => tracing::debug!(batch = %id, "another node claimed the batch first"),
            Err(error) => {
                tracing::warn!(batch = %id, %error, "cannot claim the batch taken in; the claim loop will");
                state.jobs.wake.notify_one();
            }
        }
    });
}

/// Starts the node's claim loop as a task of the current runtime; it ends when the service
/// stops.
pub fn spawn_claim_loop(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(claim_loop(state))
}

async fn claim_loop(state: Arc<AppState>) {
    while !state.stopping.load(Ordering::Relaxed) {
        if state.jobs.running().len() < JOBS_MAX {
            match claim(&state, |store, claim| store.claim_next_batch(claim)).await {
                Ok(Some(batch)) => {
                    tracing::info!(batch = %batch.id, status = %batch.status, "claimed batch");
                    start(state.clone(), batch, None);
                    continue;
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "batch claim failed; retrying"),
            }
        }
        pause(&state).await;
    }
}

/// Waits [`CLAIM_EVERY`], or less when woken or when the service stops.
async fn pause(state: &AppState) {
    let deadline = Instant::now() + CLAIM_EVERY;
    while Instant::now() < deadline && !state.stopping.load(Ordering::Relaxed) {
        tokio::select! {
            () = state.jobs.wake.notified() => return,
            () = tokio::time::sleep(TICK) => {}
        }
    }
}

/// Makes a claim for this node, on a blocking thread.
async fn claim(
    state: &Arc<AppState>,
    how: impl FnOnce(&dyn BatchStore, &Claim<'_>) -> paycore_store::Result<Option<BatchRecord>> + Send + 'static,
) -> paycore_store::Result<Option<BatchRecord>> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        let now = crate::ids::now_ns();
        let claim = Claim { owner: &state.jobs.node, now, until: state.jobs.until(now) };
        how(state.batches.as_ref(), &claim)
    })
    .await
    .map_err(|e| StoreError::Internal(format!("claim task failed: {e}")))?
}

/// Runs a claimed batch in the background, keeping its lease while it runs.
fn start(state: Arc<AppState>, batch: BatchRecord, place: Option<QueuePlace>) {
    if !state.jobs.running().insert(batch.id) {
        // Already running here: its lease lapsed (renewals failed for a while) and this node
        // claimed it back. The job goes on under the new lease.
        return;
    }
    tokio::spawn(async move {
        let (id, tenant) = (batch.id, batch.tenant);
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let keeper = tokio::spawn(keep_lease(state.clone(), id, stop.clone(), done.clone()));
        let ran = drive(&state, batch, place, &stop).await;
        done.store(true, Ordering::Relaxed);
        let held = keeper.await.unwrap_or(true);
        match (ran, held) {
            (_, false) => tracing::warn!(batch = %id, "another node took the batch over; stopped here"),
            (Ok(()), true) => {
                if let Err(error) = release(&state, id).await {
                    tracing::warn!(batch = %id, %error, "lease not released; it lapses");
                }
                tracing::info!(batch = %id, tenant = %tenant, "batch job finished");
            }
            // The lease is kept until it lapses: the retry (on any node) waits that long.
            (Err(error), true) => {
                tracing::error!(batch = %id, %error, "batch stopped on a store error; retried once its lease lapses");
            }
        }
        state.jobs.running().remove(&id);
        state.jobs.wake.notify_one();
    });
}

/// Renews the job's lease every third of its length until the job is `done`; sets `stop` when
/// the service stops or when the lease is lost. Whether the lease was still held at the end.
async fn keep_lease(state: Arc<AppState>, id: BatchId, stop: Arc<AtomicBool>, done: Arc<AtomicBool>) -> bool {
    let every = state.jobs.lease / 3;
    let mut next = Instant::now() + every;
    while !done.load(Ordering::Relaxed) {
        if state.stopping.load(Ordering::Relaxed) {
            stop.store(true, Ordering::Relaxed);
        }
        if Instant::now() >= next {
            let state = state.clone();
            let renewed = tokio::task::spawn_blocking(move || {
                state.batches.renew_batch_lease(id, &state.jobs.node, state.jobs.until(crate::ids::now_ns()))
            })
            .await
            .map_err(|e| StoreError::Internal(format!("renewal task failed: {e}")))
            .and_then(|renewed| renewed);
            match renewed {
                Ok(true) => next = Instant::now() + every,
                Ok(false) => {
                    stop.store(true, Ordering::Relaxed);
                    return false;
                }
                Err(error) => {
                    tracing::warn!(batch = %id, %error, "lease renewal failed; retrying");
                    next = Instant::now() + RENEW_RETRY.min(every);
                }
            }
        }
        tokio::time::sleep(TICK.min(every)).await;
    }
    true
}

async fn release(state: &Arc<AppState>, id: BatchId) -> paycore_store::Result<bool> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || state.batches.release_batch_lease(id, &state.jobs.node))
        .await
        .map_err(|e| StoreError::Internal(format!("release task failed: {e}")))?
}

/// Validates (if still `validating`) and runs a batch until it ends or `stop` is set.
async fn drive(
    state: &Arc<AppState>,
    batch: BatchRecord,
    place: Option<QueuePlace>,
    stop: &Arc<AtomicBool>,
) -> paycore_store::Result<()> {
    let (id, tenant) = (batch.id, batch.tenant);
    if batch.status == paycore_ledger::BatchStatus::Validating {
        let place = place.unwrap_or_else(|| state.jobs.queue_claimed());
        let permit = state.jobs.validations.acquire().await;
        drop(place);
        let store = state.batches.clone();
        let stopping = stop.clone();
        let max_lines = state.max_batch_lines;
        tokio::task::spawn_blocking(move || {
            batches::validate_limited(store.as_ref(), &batch, &crate::ids::now_ns, &stopping, max_lines)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("validation task failed: {e}")))??;
        drop(permit);
    } else {
        drop(place);
    }
    // The report the batch will most likely be asked for is written alongside the run, each
    // line once its item's result is committed, so that it is ready when the batch ends (with
    // report files only: see `AppState::reports`).
    let run_over = Arc::new(AtomicBool::new(false));
    let report = state.reports.clone().map(|reports| {
        let (store, run_over) = (state.batches.clone(), run_over.clone());
        tokio::task::spawn_blocking(move || reports.follow(store.as_ref(), tenant, id, &run_over))
    });
    let ran = batches::run(&state.engine, state.batches.clone(), id, tenant, stop).await;
    run_over.store(true, Ordering::Release);
    let Some(report) = report else { return ran };
    match report.await {
        Ok(Ok(true)) => tracing::debug!(batch = %id, "report written"),
        Ok(Ok(false)) => {}
        Ok(Err(error)) => tracing::warn!(batch = %id, %error, "report not written ahead; it is written on request"),
        Err(error) => tracing::warn!(batch = %id, %error, "report task failed; the report is written on request"),
    }
    ran
}
