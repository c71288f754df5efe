//! A thread of the engine's store that works on its own connection until the store drops it
//! (the history's `Indexer`, the balances' `IdleCheckpoints`).

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// The thread; dropping it stops the thread at its next wait and joins it.
pub(super) struct Background {
    stop: Arc<Stop>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the thread waits on between its rounds: a tick, or the store's drop.
#[derive(Default)]
pub(super) struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    /// Waits `tick`, or less if the store is dropped meanwhile; whether it was.
    pub(super) fn wait(&self, tick: Duration) -> bool {
        let stopped = self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        self.wake.wait_timeout_while(stopped, tick, |stopped| !*stopped).map_or(true, |(stopped, _)| *stopped)
    }

    /// Whether the store was dropped, without waiting.
    pub(super) fn stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Background {
    /// Starts `run` on a thread named `name`; `what` names it in the error if it cannot start.
    pub(super) fn start(name: &str, what: &str, run: impl FnOnce(&Stop) + Send + 'static) -> Background {
        let stop = Arc::new(Stop::default());
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(&stopped))
            .map_err(|error| tracing::error!(%error, "cannot start {what}"))
            .ok();
        Background { stop, thread }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        *self.stop.stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.stop.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
