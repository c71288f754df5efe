//! The ids and times the server makes: time-ordered 128-bit ids for everything it creates, and
//! the wall clock in nanoseconds.

use paycore_ledger::{time_ordered, TenantId};
use rand::Rng;
use std::sync::{Mutex, PoisonError};

/// Nanoseconds since the Unix epoch.
pub(crate) fn now_ns() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

/// A new time-ordered 128-bit id, above every id this process made before. Ids made in the
/// same millisecond still sort in the order they were made (as monotonic ULIDs do: the random
/// part steps up by a random amount), so that the engine can tell a new transfer or payment
/// from a stored one by its id alone, without a lookup that would find nothing.
pub(crate) fn new_id() -> u128 {
    static LAST: Mutex<u128> = Mutex::new(0);
    let mut rng = rand::thread_rng();
    let fresh = time_ordered(now_ns() / 1_000_000, rng.gen());
    let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
    *last = fresh.max(last.saturating_add(1 + u128::from(rng.gen::<u32>())));
    *last
}

/// A new id in text, `{prefix}_` and 26 base32 digits, for the things the ledger has no id type
/// for (API keys, requests); time-ordered like every id [`new_id`] makes.
pub(crate) fn new_prefixed_id(prefix: &str) -> String {
    let text = TenantId(new_id()).to_string();
    format!("{prefix}_{}", text.trim_start_matches("ten_"))
}
