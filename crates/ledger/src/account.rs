//! Accounts and their balances.

use crate::limits::{AccountStatus, Limits};
use crate::{AccountId, Currency, TenantId, AMOUNT_MAX};

/// How far below zero an account may go.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Overdraft {
    /// At most this many minor units below zero (0: never below zero).
    Limit(u64),
    /// No limit: funding, settlement and external accounts, whose balance mirrors money held
    /// outside the ledger.
    Unlimited,
}

/// The four balance counters of an account, each only ever increased by the amount of a
/// transfer (pending counters also decrease when a hold is posted or voided). Kept apart, as
/// in TigerBeetle, so that every balance can be recomputed from the transfers.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Balances {
    #[cfg_attr(feature = "serde", serde(deserialize_with = "crate::serde_impls::counter"))]
    pub debits_posted: u64,
    #[cfg_attr(feature = "serde", serde(deserialize_with = "crate::serde_impls::counter"))]
    pub credits_posted: u64,
    #[cfg_attr(feature = "serde", serde(deserialize_with = "crate::serde_impls::counter"))]
    pub debits_pending: u64,
    #[cfg_attr(feature = "serde", serde(deserialize_with = "crate::serde_impls::counter"))]
    pub credits_pending: u64,
}

impl Balances {
    /// Credits minus debits: money received is positive.
    pub fn posted(&self) -> i64 {
        // Both counters are at most AMOUNT_MAX = i64::MAX, so neither the conversions nor the
        // difference can overflow.
        i64::try_from(self.credits_posted).unwrap_or(i64::MAX) - i64::try_from(self.debits_posted).unwrap_or(i64::MAX)
    }

    /// What the account can still spend: posted − pending debits + overdraft limit.
    /// `None` for an unlimited account.
    pub fn available(&self, overdraft: Overdraft) -> Option<i128> {
        match overdraft {
            Overdraft::Unlimited => None,
            Overdraft::Limit(limit) => {
                Some(i128::from(self.posted()) - i128::from(self.debits_pending) + i128::from(limit))
            }
        }
    }

    pub(crate) fn within_bounds(&self) -> bool {
        [self.debits_posted, self.credits_posted, self.debits_pending, self.credits_pending]
            .iter()
            .all(|&c| c <= AMOUNT_MAX)
    }
}

/// `counter + amount`, if it stays within [`AMOUNT_MAX`], the bound of every balance counter
/// (passing it is the result `overflow`).
pub(crate) fn counter_plus(counter: u64, amount: u64) -> Option<u64> {
    counter.checked_add(amount).filter(|&sum| sum <= AMOUNT_MAX)
}

/// A ledger account. Its currency and overdraft are fixed when it is opened.
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Account {
    pub id: AccountId,
    pub tenant: TenantId,
    pub currency: Currency,
    pub overdraft: Overdraft,
    /// An external identifier (IBAN, account number), unique per tenant.
    pub reference: Option<String>,
    /// Opaque to the ledger (a JSON object for the API).
    pub metadata: Option<String>,
    pub balances: Balances,
    /// Nanoseconds since the Unix epoch, assigned by the engine.
    pub created_at: u64,
    /// What the account may do (`PATCH /v1/accounts/{id}`).
    pub status: AccountStatus,
    /// Its risk limits (`PATCH /v1/accounts/{id}`).
    pub limits: Limits,
}

impl Account {
    /// Whether `amount` more can be debited without going past the overdraft limit,
    /// counting the holds already placed.
    pub(crate) fn can_debit(&self, amount: u64) -> bool {
        match self.balances.available(self.overdraft) {
            None => true,
            Some(available) => available >= i128::from(amount),
        }
    }
}
