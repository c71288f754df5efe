//! Point reads on the write path — the saved response of an `Idempotency-Key`, the transfer
//! a replayed `POST /v1/transfers` names — on one thread of their own. (A fresh single
//! transfer needs no read: the engine answers with it.)
//!
//! Store reads may block, so they stay off the async workers. `spawn_blocking` does that, but
//! per read it wakes a pooled thread and, with many requests at once, runs as many reads in
//! parallel as there are requests, so the store's reader pool opens and closes connections.
//! Under load that hop cost more CPU than the read itself (`perf` on the server at 64 clients:
//! a third of its samples were in waking, switching to and parking blocking threads, and 5% in
//! opening reader connections). Here the reads queue to one thread that sleeps only when there
//! is nothing to read: a burst of requests costs one wake-up, and the thread keeps one warm
//! connection with its prepared statements. These reads are point lookups by primary key of
//! rows just committed, so one thread is not a bottleneck; list reads keep `spawn_blocking`.

use crate::error::ApiError;
use paycore_store::Reader;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;

/// Reads that may wait for the thread; beyond this, a read falls back to `spawn_blocking`.
const WAITING_MAX: usize = 4096;

type Job = Box<dyn FnOnce(&dyn Reader) + Send>;

/// The submitting side; the thread ends when this is dropped.
pub struct PointReads {
    jobs: SyncSender<Job>,
    reader: Arc<dyn Reader>,
}

impl PointReads {
    /// Starts the thread, reading through `reader`.
    pub fn start(reader: Arc<dyn Reader>) -> std::io::Result<PointReads> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(WAITING_MAX);
        let thread_reader = reader.clone();
        std::thread::Builder::new().name("paycore-reads".into()).spawn(move || {
            while let Ok(job) = queue.recv() {
                // A panicking read answers its request with an error (its reply is dropped);
                // the thread goes on with the next one.
                let _ = catch_unwind(AssertUnwindSafe(|| job(thread_reader.as_ref())));
            }
        })?;
        Ok(PointReads { jobs, reader })
    }

    /// Runs `f` on the read thread and waits for its result; if the read panics, the answer
    /// is a 500 with `failed` as its message.
    pub async fn read<T: Send + 'static>(
        &self,
        failed: &'static str,
        f: impl FnOnce(&dyn Reader) -> paycore_store::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |reader| {
            // The request may have gone away (client disconnected): nothing to tell then.
            let _ = tx.send(f(reader));
        });
        match self.jobs.try_send(job) {
            Ok(()) => Ok(rx.await.map_err(|_| ApiError::internal(failed))??),
            // Full (or the thread is gone): read on a blocking thread as before.
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                let reader = self.reader.clone();
                tokio::task::spawn_blocking(move || job(reader.as_ref()))
                    .await
                    .map_err(|_| ApiError::internal(failed))?;
                Ok(rx.await.map_err(|_| ApiError::internal(failed))??)
            }
        }
    }
}
