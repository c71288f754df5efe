//! Background work for batches: validating an uploaded file, then running its items through
//! the engine. Started when a batch is uploaded, and again at start-up for every batch a
//! restart interrupted (validation starts over; the run resumes from the items still pending).

use crate::AppState;
use paycore_engine::batches;
use paycore_store::BatchRecord;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Files validated at once: each keeps a core busy.
const VALIDATIONS_MAX: usize = 2;

/// Limits the validations running at once.
pub struct Jobs {
    validations: Semaphore,
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs { validations: Semaphore::new(VALIDATIONS_MAX) }
    }
}

/// Validates (if still `validating`) and runs a batch, in the background.
pub fn spawn(state: Arc<AppState>, batch: BatchRecord) {
    tokio::spawn(async move {
        let (id, tenant) = (batch.id, batch.tenant);
        if let Err(error) = drive(&state, batch).await {
            tracing::error!(batch = %id, %error, "batch stopped on a store error; it resumes at the next start");
        }
        tracing::info!(batch = %id, tenant = %tenant, "batch job finished");
    });
}

async fn drive(state: &Arc<AppState>, batch: BatchRecord) -> paycore_store::Result<()> {
    let (id, tenant) = (batch.id, batch.tenant);
    if batch.status == paycore_ledger::BatchStatus::Validating {
        let permit = state.jobs.validations.acquire().await;
        let store = state.batches.clone();
        let stopping = state.stopping.clone();
        let max_lines = state.max_batch_lines;
        tokio::task::spawn_blocking(move || {
            batches::validate_limited(store.as_ref(), &batch, &crate::ids::now_ns, &stopping, max_lines)
        })
        .await
        .map_err(|e| paycore_store::StoreError::Internal(format!("validation task failed: {e}")))??;
        drop(permit);
    }
    // The report the batch will most likely be asked for is written alongside the run, each
    // line once its item's result is committed, so that it is ready when the batch ends (with
    // report files only: see `AppState::reports`).
    let run_over = Arc::new(AtomicBool::new(false));
    let report = state.reports.clone().map(|reports| {
        let (store, run_over) = (state.batches.clone(), run_over.clone());
        tokio::task::spawn_blocking(move || reports.follow(store.as_ref(), tenant, id, &run_over))
    });
    let ran = batches::run(&state.engine, state.batches.clone(), id, tenant, &state.stopping).await;
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

/// Starts again every batch that a stop interrupted.
pub async fn resume(state: &Arc<AppState>) -> paycore_store::Result<()> {
    let store = state.batches.clone();
    let active = tokio::task::spawn_blocking(move || store.active_batches())
        .await
        .map_err(|e| paycore_store::StoreError::Internal(format!("resume task failed: {e}")))??;
    for batch in active {
        tracing::info!(batch = %batch.id, status = %batch.status, "resuming batch");
        spawn(state.clone(), batch);
    }
    Ok(())
}
