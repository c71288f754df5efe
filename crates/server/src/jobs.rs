//! Background work for batches: validating an uploaded file, then running its items through
//! the engine. Started when a batch is uploaded, and again at start-up for every batch a
//! restart interrupted (validation starts over; the run resumes from the items still pending).

use crate::AppState;
use paycore_engine::batches;
use paycore_store::BatchRecord;
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
    if batch.status == "validating" {
        let permit = state.jobs.validations.acquire().await;
        let store = state.batches.clone();
        let data_dir = state.data_dir.clone();
        let stopping = state.stopping.clone();
        let max_lines = state.max_batch_lines;
        tokio::task::spawn_blocking(move || {
            batches::validate_limited(store.as_ref(), &data_dir, &batch, &crate::auth::now_ns, &stopping, max_lines)
        })
        .await
        .map_err(|e| paycore_store::StoreError::Database(format!("validation task failed: {e}")))??;
        drop(permit);
    }
    batches::run(&state.engine, state.batches.clone(), id, tenant, &state.stopping).await
}

/// Starts again every batch that a stop interrupted.
pub async fn resume(state: &Arc<AppState>) -> paycore_store::Result<()> {
    let store = state.batches.clone();
    let active = tokio::task::spawn_blocking(move || store.active_batches())
        .await
        .map_err(|e| paycore_store::StoreError::Database(format!("resume task failed: {e}")))??;
    for batch in active {
        tracing::info!(batch = %batch.id, status = %batch.status, "resuming batch");
        spawn(state.clone(), batch);
    }
    Ok(())
}
