//! The pruner: a background task that removes what the retention windows
//! ([`paycore_store::Retention`], `--idempotency-retention`, `--delivery-retention`,
//! `--file-retention`) let go — saved idempotent responses, the finished webhook delivery log
//! and its outbox events, uploaded batch files of ended batches, and report files.
//!
//! Every [`Config::retention_interval`](crate::Config) it prunes in chunks of [`CHUNK`] rows
//! per kind ([`paycore_store::RetentionStore::prune`], each kind one short transaction on the
//! API's connections, never in the engine's commit), pausing [`PAUSE`] between chunks so that
//! the engine's commits get the write lock in between, until a chunk comes back short. Time is
//! the service's clock ([`Config::clock`](crate::Config)), so tests move it forward. What it
//! removed is counted in `/metrics` (`paycore_retention_pruned_total{kind}`). Transfers,
//! balances, payments, batches and batch items are never pruned.

use crate::AppState;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Rows of each kind removed per transaction.
pub const CHUNK: usize = 1000;
/// The pause between two chunks of one round.
pub const PAUSE: Duration = Duration::from_millis(20);

/// Starts the pruner; it ends when the service stops (or is aborted).
pub fn spawn(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(state.retention_interval).await;
            if state.stopping.load(Ordering::Relaxed) {
                return;
            }
            round(&state).await;
        }
    })
}

/// One round: chunks until every kind comes back short, then the report files.
async fn round(state: &Arc<AppState>) {
    loop {
        let (store, retention, now) = (state.retainer.clone(), state.retention, state.clock.now_ns());
        let pruned = tokio::task::spawn_blocking(move || store.prune(now, &retention, CHUNK)).await;
        let counts = match pruned {
            Ok(Ok(counts)) => counts,
            Ok(Err(error)) => {
                tracing::warn!(%error, "pruning failed; the next round tries again");
                return;
            }
            Err(error) => {
                tracing::error!(%error, "the pruning task panicked");
                return;
            }
        };
        for (kind, n) in [
            ("idempotency", counts.idempotency),
            ("deliveries", counts.deliveries),
            ("outbox", counts.outbox),
            ("batch_files", counts.files),
            ("console_sessions", counts.console_sessions),
        ] {
            state.metrics.count_pruned(kind, n);
        }
        if counts.total() > 0 {
            tracing::debug!(?counts, "pruned");
        }
        if !counts.more_waiting(CHUNK) || state.stopping.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(PAUSE).await;
    }
    if let Some(reports) = state.reports.clone() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_nanos(state.clock.now_ns());
        let before = now.checked_sub(state.retention.files).unwrap_or(SystemTime::UNIX_EPOCH);
        match tokio::task::spawn_blocking(move || reports.prune(before)).await {
            Ok(Ok(removed)) => state.metrics.count_pruned("reports", removed),
            Ok(Err(error)) => tracing::warn!(%error, "pruning report files failed"),
            Err(error) => tracing::error!(%error, "the report pruning task panicked"),
        }
    }
}
