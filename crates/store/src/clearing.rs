//! Clearing windows in the store, the backend-neutral half: the records the API reads, and how
//! a backend turns its rows into the [`OpenWindow`] a close needs.
//!
//! A close is decided by the engine (`State::close_clearing_window`), from what `Store::load`
//! gives it before the batch: the open window's sequence number and opening instant, and the
//! posted debits and credits per account committed since. The backend reads those from
//! `transfers` by timestamp range (the index every backend has on `timestamp`) filtered by tenant,
//! currency and kind: one scan of the transfers since the window opened, paid at the close
//! rather than on every transfer (the engine keeps no per-window counters, so the hot path and
//! recovery cost nothing more). The commit then only inserts the closed window and its
//! positions, which the state machine computed.

use paycore_ledger::{AccountId, ClearingWindow, Currency, OpenWindow, TenantId, TransferKind};
use std::collections::BTreeMap;

/// A closed window as listed: its totals without its positions, and how many there are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClearingSummary {
    /// The window, with `positions` empty.
    pub window: ClearingWindow,
    /// The number of its positions (accounts that moved posted money in it).
    pub accounts: u64,
}

/// The transfer kinds a window counts: those that move posted money, at their amount (a post's
/// amount is the amount posted).
pub const POSTED_KINDS: [TransferKind; 2] = [TransferKind::Single, TransferKind::PostPending];

/// The open window of `tenant` in `currency`, given the last closed one (its sequence number and
/// `closed_at`, if any) and the (debit account, credit account, amount) of every posted transfer
/// of the tenant and currency since.
pub fn open_window(
    tenant: TenantId,
    currency: Currency,
    last: Option<(u64, u64)>,
    posted: impl IntoIterator<Item = (AccountId, AccountId, u64)>,
) -> OpenWindow {
    let mut moved: BTreeMap<AccountId, (u64, u64)> = BTreeMap::new();
    for (debit, credit, amount) in posted {
        // An account's posted debits in a window are at most its debit counter (at most
        // AMOUNT_MAX): saturating never bites on data the ledger wrote.
        let d = moved.entry(debit).or_default();
        d.0 = d.0.saturating_add(amount);
        let c = moved.entry(credit).or_default();
        c.1 = c.1.saturating_add(amount);
    }
    OpenWindow {
        tenant,
        currency,
        sequence: last.map_or(1, |(sequence, _)| sequence + 1),
        opened_at: last.map_or(0, |(_, closed_at)| closed_at),
        moved: moved.into_iter().map(|(account, (debits, credits))| (account, debits, credits)).collect(),
    }
}
