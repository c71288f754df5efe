//! Retention: what is kept only for a while, and the pruning of it.
//!
//! Three kinds of records outlive their use: the responses saved for `Idempotency-Key`s (a
//! retry comes within minutes, not weeks), the webhook delivery log with the outbox events it
//! was made from, and the uploaded batch files (the batch and its items are what the API and
//! `verify` read; the file is needed only to validate it). [`RetentionStore::prune`] removes
//! one bounded chunk of each kind that is older than its [`Retention`] window, each kind in a
//! short transaction of its own, on the API's connections — never in the engine's commit.
//! Transfers, balances, payments, refunds, batches and batch items are never touched.
//!
//! A replay after its key's record was pruned is a new request: the engine reads saved
//! responses from the store for every batch (it keeps none in memory), so it executes the
//! request as if the key were new.

use crate::Result;
use std::time::Duration;

/// How long each kind of record is kept, measured from its `created_at` by the caller's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Saved responses of `Idempotency-Key`s: 24 hours by default.
    pub idempotency: Duration,
    /// Webhook deliveries that are finished (delivered, given up, or stopped), and outbox
    /// events that have been fanned out and have no delivery left: 30 days by default.
    pub deliveries: Duration,
    /// Uploaded files of batches that have ended (completed, rejected, cancelled), from the
    /// upload: 30 days by default. The batch keeps its record and items; its `file` becomes
    /// `None`.
    pub files: Duration,
}

impl Retention {
    /// The default idempotency window: 24 hours.
    pub const IDEMPOTENCY_DEFAULT: Duration = Duration::from_secs(24 * 3600);
    /// The default window of the delivery log and the outbox: 30 days.
    pub const DELIVERIES_DEFAULT: Duration = Duration::from_secs(30 * 24 * 3600);
    /// The default window of uploaded batch files (and, in the server, report files): 30 days.
    pub const FILES_DEFAULT: Duration = Duration::from_secs(30 * 24 * 3600);
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            idempotency: Retention::IDEMPOTENCY_DEFAULT,
            deliveries: Retention::DELIVERIES_DEFAULT,
            files: Retention::FILES_DEFAULT,
        }
    }
}

/// The cut-off of a window at `now` (nanoseconds): records created strictly before it go.
pub fn cutoff(now: u64, window: Duration) -> u64 {
    now.saturating_sub(u64::try_from(window.as_nanos()).unwrap_or(u64::MAX))
}

/// What one call of [`RetentionStore::prune`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneCounts {
    pub idempotency: usize,
    pub deliveries: usize,
    pub outbox: usize,
    pub files: usize,
    /// Records of signed-out console sessions whose cookies have expired since.
    pub console_sessions: usize,
}

impl PruneCounts {
    /// Whether some kind filled its chunk, so that more may be waiting.
    pub fn more_waiting(&self, limit: usize) -> bool {
        [self.idempotency, self.deliveries, self.outbox, self.files, self.console_sessions].iter().any(|n| *n >= limit)
    }

    pub fn total(&self) -> usize {
        self.idempotency + self.deliveries + self.outbox + self.files + self.console_sessions
    }
}

/// Pruning, on the API's side of a store.
pub trait RetentionStore: Send + Sync {
    /// Removes up to `limit` records of each kind older than its window at `now`
    /// (nanoseconds since the epoch): saved idempotent responses, finished webhook deliveries,
    /// outbox events fanned out with no delivery left, and the files of ended batches (the
    /// batch's `file` set to `None` with the file removed), and the records of signed-out
    /// console sessions whose cookies expired before `now`. Each kind is one short transaction;
    /// safe to run on several nodes at once and to repeat after a crash.
    fn prune(&self, now: u64, retention: &Retention, limit: usize) -> Result<PruneCounts>;
}
