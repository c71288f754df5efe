//! Account status and limits, decided where a debit is decided (`apply_move`, `resolve`).
//!
//! A limited account (one with `daily_outflow` or `velocity`) has an [`Outflow`] in memory:
//! what it has debited in the current UTC day of the engine's clock, and the timestamps of its
//! last debits (at most `velocity.count`). Nothing else is kept, so memory grows with limited
//! accounts only. The outflow is a function of the stored transfers and the current limits:
//! `recover` rebuilds it from the debits of the last day ([`State::history_wanted`]), and a
//! change of an account's limits rebuilds it the same way (its prefetch loads the account's
//! debits), so an engine that ran and one that recovered decide alike.

use super::{Prefetch, State, NANOS_PER_SECOND};
use crate::account::Account;
use crate::limits::{AccountStatus, LimitBreach, LimitKind, Limits};
use crate::transfer::{ResultCode, Transfer, TransferKind};
use crate::AccountId;
use std::collections::VecDeque;

/// A UTC day in nanoseconds.
pub(super) const DAY_NANOS: u64 = 86_400 * NANOS_PER_SECOND;

/// Recent debits of a limited account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Outflow {
    /// The UTC day (days since the epoch) that `total` counts.
    day: u64,
    /// The sum of the account's debits that day.
    total: u64,
    /// Timestamps of its last debits, oldest first; at most `velocity.count`.
    recent: VecDeque<u64>,
}

impl Outflow {
    /// What the account debited in the day of `at`.
    fn total_on(&self, at: u64) -> u64 {
        if self.day == at / DAY_NANOS {
            self.total
        } else {
            0
        }
    }

    fn record(&mut self, limits: &Limits, amount: u64, at: u64) {
        let day = at / DAY_NANOS;
        if day != self.day {
            self.day = day;
            self.total = 0;
        }
        self.total = self.total.saturating_add(amount);
        let keep = limits.velocity.map_or(0, |v| v.count as usize);
        self.recent.push_back(at);
        while self.recent.len() > keep {
            self.recent.pop_front();
        }
    }
}

/// Whether a stored transfer is a debit that limits count: a single transfer or a hold (a
/// post, void or expiry resolves a hold that was counted when it was placed).
fn counts(t: &Transfer) -> bool {
    matches!(t.kind, TransferKind::Single | TransferKind::Pending)
}

impl State {
    /// The timestamp the next transfer will get (see `tick`), without taking it.
    pub(super) fn next_timestamp(&self, now: u64) -> u64 {
        now.max(self.last_timestamp.saturating_add(1))
    }

    /// The status checks of a move: a closed account takes nothing, a frozen one gives nothing.
    pub(super) fn status_refusal(debit: &Account, credit: &Account) -> Option<ResultCode> {
        if debit.status == AccountStatus::Closed || credit.status == AccountStatus::Closed {
            return Some(ResultCode::AccountClosed);
        }
        (debit.status == AccountStatus::Frozen).then_some(ResultCode::AccountFrozen)
    }

    /// Checks a debit of `amount` at `at` against the account's limits, in the order
    /// `max_payment`, `daily_outflow`, `velocity`. A `limit_exceeded` leaves its details in
    /// `last_breach`. Equal to a limit passes.
    pub(super) fn limit_refusal(
        &mut self,
        account: AccountId,
        limits: &Limits,
        amount: u64,
        at: u64,
    ) -> Option<ResultCode> {
        let mut breach = |limit, value, remaining| {
            self.last_breach = Some(LimitBreach { account, limit, value, requested: amount, remaining });
            Some(ResultCode::LimitExceeded)
        };
        if let Some(max) = limits.max_payment {
            if amount > max {
                return breach(LimitKind::MaxPayment, max, max);
            }
        }
        let outflow = self.outflows.get(&account);
        if let Some(daily) = limits.daily_outflow {
            let spent = outflow.map_or(0, |o| o.total_on(at));
            let remaining = daily.saturating_sub(spent);
            if amount > remaining {
                return breach(LimitKind::DailyOutflow, daily, remaining);
            }
        }
        if let Some(velocity) = limits.velocity {
            let window = velocity.window_seconds.saturating_mul(NANOS_PER_SECOND);
            let since = at.saturating_sub(window);
            let in_window = outflow.map_or(0, |o| o.recent.iter().filter(|&&t| t > since).count());
            if in_window >= velocity.count as usize {
                return Some(ResultCode::VelocityExceeded);
            }
        }
        None
    }

    /// Counts a debit that was applied, if the account is limited (saving the outflow for the
    /// linked chain's undo first).
    pub(super) fn record_debit(&mut self, account: AccountId, limits: &Limits, amount: u64, at: u64) {
        if !limits.need_history() {
            return;
        }
        let outflow = self.outflows.entry(account).or_default();
        if let Some(undo) = &mut self.undo {
            undo.save_outflow(account, outflow.clone());
        }
        outflow.record(limits, amount, at);
    }

    /// Puts an account's outflow back as it was before a linked chain.
    pub(super) fn restore_outflow(&mut self, account: AccountId, outflow: Outflow) {
        self.outflows.insert(account, outflow);
    }

    /// Rebuilds an account's outflow from its debits loaded from the store and those this
    /// batch made so far; drops it if the account's limits need none.
    pub(super) fn rebuild_outflow(&mut self, account: AccountId) {
        let Some(limits) = self.accounts.get(&account).map(|a| a.limits) else { return };
        if !limits.need_history() {
            self.outflows.remove(&account);
            return;
        }
        let mut debits: Vec<(u64, u64)> = self.debit_history.get(&account).cloned().unwrap_or_default();
        debits.extend(
            self.changes
                .transfers
                .iter()
                .filter(|t| t.debit_account == account && counts(t))
                .map(|t| (t.timestamp, t.amount)),
        );
        debits.sort_unstable();
        debits.dedup();
        let mut outflow = Outflow::default();
        for (at, amount) in debits {
            outflow.record(&limits, amount, at);
        }
        self.outflows.insert(account, outflow);
    }

    /// What `recover` must load for the limits: the last day of debits of every limited
    /// account (empty when no account is limited).
    pub fn history_wanted(&self) -> Prefetch {
        let mut debits_of: Vec<AccountId> =
            self.accounts.values().filter(|a| a.limits.need_history()).map(|a| a.id).collect();
        debits_of.sort_unstable();
        Prefetch { debits_of, debits_since: self.history_since(), ..Prefetch::default() }
    }

    /// The earliest debit a limit can still count: a day before the last timestamp (the
    /// longest velocity window is a day, and the current UTC day began less than a day ago).
    pub(super) fn history_since(&self) -> u64 {
        self.last_timestamp.saturating_sub(DAY_NANOS)
    }

    /// Adds debits loaded from the store (a [`Prefetch`]'s `debits_of`) for this batch, or for
    /// recovery. Transfers that are not debits limits count are ignored.
    pub fn insert_debit_history(&mut self, transfers: impl IntoIterator<Item = Transfer>) {
        for t in transfers.into_iter().filter(counts) {
            self.debit_history.entry(t.debit_account).or_default().push((t.timestamp, t.amount));
        }
    }

    /// After `recover` and [`State::insert_debit_history`]: builds the outflow of every
    /// limited account.
    pub fn rebuild_limit_history(&mut self) {
        let limited: Vec<AccountId> =
            self.accounts.values().filter(|a| a.limits.need_history()).map(|a| a.id).collect();
        for account in limited {
            self.rebuild_outflow(account);
        }
        self.debit_history.clear();
    }

    /// What an account debited in the UTC day of `at`, as the engine counts it (for tests and
    /// diagnostics).
    pub fn outflow_on(&self, account: AccountId, at: u64) -> u64 {
        self.outflows.get(&account).map_or(0, |o| o.total_on(at))
    }
}
