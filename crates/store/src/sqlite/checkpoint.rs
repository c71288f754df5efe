//! WAL checkpoints on a thread of the store, beside the engine's commits.

use super::open::connect;
use crate::{Result, StoreError};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the [`Checkpointer`] copies what the commits appended to the WAL.
const CHECKPOINT_POLL: Duration = Duration::from_millis(20);

/// Copies the frames that commits append to the WAL into the database file, on a thread and
/// connection of its own (a passive checkpoint every [`CHECKPOINT_POLL`]: it never waits for,
/// nor holds up, the engine's commits or the readers).
///
/// SQLite checkpoints inside the commit that takes the WAL past `wal_autocheckpoint` frames:
/// a profile of payments at 64 clients put 18% of the engine thread's time there, and those
/// commits are the slow tail of the commit times. (Raising the threshold to 10 000 frames cut
/// that share to 5% but made each checkpoint long: the payments' p99 went from 11 to 30 ms.)
/// The WAL can only start over from its beginning once every frame is in the database file,
/// which a checkpoint racing the commits never quite reaches; so the commits keep their
/// automatic checkpoint, which now finds all but the last few milliseconds of frames copied,
/// finishes the copy, and lets the next commit restart the WAL. Checkpoints run with
/// `synchronous=FULL` (the WAL is synced before frames are copied, the database file after)
/// and never change what is committed: nothing acknowledged depends on this thread.
pub(super) struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub(super) fn start(path: &Path) -> Result<Checkpointer> {
        let conn = connect(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("paycore-checkpoint".into())
                .spawn(move || {
                    // Whether the last checkpoint failed: a failure (a full disk, where the
                    // database file cannot grow) is logged once, not every 20 ms, and its end too.
                    let mut failing = false;
                    while !stop.load(Ordering::Relaxed) {
                        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                        match result {
                            Err(error) if !failing => {
                                failing = true;
                                let error = StoreError::from(error);
                                tracing::warn!(%error, "WAL checkpoint failed; retrying every 20 ms, the commits' own checkpoints go on");
                            }
                            Err(_) => {}
                            Ok(()) if failing => {
                                failing = false;
                                tracing::info!("WAL checkpoints succeed again");
                            }
                            Ok(()) => {}
                        }
                        std::thread::park_timeout(CHECKPOINT_POLL);
                    }
                })
                .map_err(|e| StoreError::Internal(format!("cannot start the checkpointer: {e}")))?
        };
        Ok(Checkpointer { stop, thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
