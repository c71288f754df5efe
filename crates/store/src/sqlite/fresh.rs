//! The balances the engine's commits publish to the readers before a checkpoint writes them
//! to `accounts`.

use crate::StoreError;
use paycore_ledger::{AccountId, Balances};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Balances committed since the last checkpoint, newer than the `accounts` rows (shared with
/// the readers). The engine holds the write lock from just before a commit becomes visible
/// until the map has its balances, and a reader holds the read lock while it reads an account,
/// so that no reader sees a commit's other rows (a batch's counters, a transfer) without its
/// balances, or the rows of a checkpoint without the map it clears.
pub(super) type Fresh = Arc<RwLock<HashMap<AccountId, Balances>>>;

/// The error of a lock on [`Fresh`] that a panicking thread left poisoned.
pub(super) fn poisoned() -> StoreError {
    StoreError::Internal("a thread panicked while holding the balances in memory".into())
}
