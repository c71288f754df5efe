//! Clearing (settlement) windows: per tenant and currency, one window is open at all times; a
//! close ends it at an instant of the engine's clock and opens the next. A closed window
//! reports, per account that moved in it, the posted money it paid and received.

use crate::{AccountId, ClearingWindowId, Currency, TenantId};

/// One account's position in a closed window, in minor units. Balances are posted balances
/// (credits − debits: money received is positive), so `net = credits − debits` and
/// `closing = opening + net`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ClearingPosition {
    pub account: AccountId,
    /// The account's posted balance when the window opened.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "crate::serde_impls::signed"))]
    pub opening: i64,
    /// The posted amounts the account paid in the window (single transfers and posts of holds).
    #[cfg_attr(feature = "serde", serde(deserialize_with = "crate::serde_impls::counter"))]
    pub debits: u64,
    /// The posted amounts the account received in the window.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "crate::serde_impls::counter"))]
    pub credits: u64,
    #[cfg_attr(feature = "serde", serde(deserialize_with = "crate::serde_impls::signed"))]
    pub net: i64,
    /// The account's posted balance when the window closed.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "crate::serde_impls::signed"))]
    pub closing: i64,
}

/// A closed clearing window: every posted transfer of its tenant and currency with a timestamp
/// in `(opened_at, closed_at]`, netted per account. Per window, the nets sum to zero and the
/// gross volume is the sum of the debits (each transfer counted once).
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ClearingWindow {
    pub id: ClearingWindowId,
    pub tenant: TenantId,
    pub currency: Currency,
    /// 1 for the tenant's first window in this currency, then 2, 3, …
    pub sequence: u64,
    /// The previous window's `closed_at` (0 for the first window: the beginning of time).
    pub opened_at: u64,
    /// The close's timestamp on the engine's clock, unique among the ledger's timestamps.
    pub closed_at: u64,
    /// Σ debits over the positions.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "crate::serde_impls::counter"))]
    pub gross_volume: u64,
    /// In account id order; only accounts with posted money moved in the window.
    pub positions: Vec<ClearingPosition>,
}

/// The open window of a tenant and currency as the store holds it, for a close to finish: its
/// sequence number, when it opened, and the posted debits and credits per account committed
/// since (the state machine adds those of its own batch).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OpenWindow {
    pub tenant: TenantId,
    pub currency: Currency,
    pub sequence: u64,
    pub opened_at: u64,
    /// (account, posted debits, posted credits) since `opened_at`.
    pub moved: Vec<(AccountId, u64, u64)>,
}
