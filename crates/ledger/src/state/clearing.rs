//! Closing a clearing window: the boundary is the close's own timestamp on the engine's clock,
//! so a transfer executed before the close (in an earlier batch, or earlier in this one) is in
//! the closed window and one executed after it is in the next; none is in both, none is lost.
//!
//! What a window counts is posted money: single transfers, and the post of a hold with the
//! amount posted. Holds, voids and expiries move no posted balance and are not counted. The
//! store gives the posted debits and credits committed since the window opened
//! ([`OpenWindow`], loaded before the batch); the close adds those of its own batch that came
//! before it. An account's closing balance is its posted balance at the close (the state holds
//! every account), and its opening balance is the closing minus the net, which is its balance
//! when the window opened because every posted movement since then is in the window.

use super::{CommandError, State};
use crate::clearing::{ClearingPosition, ClearingWindow, OpenWindow};
use crate::transfer::{ResultCode, TransferKind};
use crate::{AccountId, ClearingWindowId, Currency, TenantId, AMOUNT_MAX};
use std::collections::BTreeMap;

impl State {
    /// Adds what the store holds of the clearing windows a batch closes (see
    /// [`State::prefetch`]): the open window of each (tenant, currency) asked for, and the ids
    /// of closed windows that exist already. Dropped again after the batch.
    pub fn insert_clearing(
        &mut self,
        open: impl IntoIterator<Item = OpenWindow>,
        stored_ids: impl IntoIterator<Item = ClearingWindowId>,
    ) {
        for window in open {
            self.open_windows.entry((window.tenant, window.currency)).or_insert(window);
        }
        self.stored_window_ids.extend(stored_ids);
    }

    /// Closes the open window of `tenant` in `currency` now, or says why not: `AlreadyExists`
    /// (a window with this id was closed before: a retried close), `WindowEmpty` (no posted
    /// transfer since the window opened), `Rejected(Overflow)` (the window's gross volume
    /// would pass `AMOUNT_MAX`; close more often).
    pub(super) fn close_clearing_window(
        &mut self,
        tenant: TenantId,
        id: ClearingWindowId,
        currency: Currency,
        now: u64,
    ) -> Result<ClearingWindow, CommandError> {
        if self.stored_window_ids.contains(&id) {
            return Err(CommandError::AlreadyExists);
        }
        // The engine always loads it (`prefetch`); a state used without a store starts at the
        // beginning of time, and a store holding windows refuses the sequence number twice.
        let open = self.open_windows.get(&(tenant, currency)).cloned().unwrap_or(OpenWindow {
            tenant,
            currency,
            sequence: 1,
            opened_at: 0,
            moved: Vec::new(),
        });
        let moved = self.moved_since(&open);
        if moved.is_empty() {
            return Err(CommandError::WindowEmpty);
        }
        let mut positions = Vec::with_capacity(moved.len());
        let (mut gross, mut sum_net) = (0u128, 0i128);
        for (account, (debits, credits)) in moved {
            let closing = self.accounts.get(&account).map(|a| a.balances.posted());
            let position = closing.and_then(|closing| position(account, closing, debits, credits));
            let Some(position) = position else { return Err(CommandError::Rejected(ResultCode::Overflow)) };
            gross += u128::from(position.debits);
            sum_net += i128::from(position.net);
            positions.push(position);
        }
        // Each posted transfer debits one account of the window and credits another by the
        // same amount: a broken sum means the state is not what the transfers say.
        assert!(sum_net == 0, "clearing window of {tenant} in {currency}: the nets sum to {sum_net}, not 0");
        let gross_volume = u64::try_from(gross)
            .ok()
            .filter(|g| *g <= AMOUNT_MAX)
            .ok_or(CommandError::Rejected(ResultCode::Overflow))?;
        let closed_at = self.tick(now);
        let window = ClearingWindow {
            id,
            tenant,
            currency,
            sequence: open.sequence,
            opened_at: open.opened_at,
            closed_at,
            gross_volume,
            positions,
        };
        self.open_windows.insert(
            (tenant, currency),
            OpenWindow { tenant, currency, sequence: open.sequence + 1, opened_at: closed_at, moved: Vec::new() },
        );
        self.stored_window_ids.insert(id);
        self.changes.clearing_windows.push(window.clone());
        Ok(window)
    }

    /// Posted debits and credits per account in the open window: the stored ones, plus this
    /// batch's posted transfers of the tenant and currency after the window opened. Sums are
    /// exact (u128); in account id order.
    fn moved_since(&self, open: &OpenWindow) -> BTreeMap<AccountId, (u128, u128)> {
        let mut moved: BTreeMap<AccountId, (u128, u128)> = BTreeMap::new();
        for &(account, debits, credits) in &open.moved {
            let entry = moved.entry(account).or_default();
            entry.0 += u128::from(debits);
            entry.1 += u128::from(credits);
        }
        let posted = self.changes.transfers.iter().filter(|t| {
            t.tenant == open.tenant
                && t.currency == open.currency
                && t.timestamp > open.opened_at
                && matches!(t.kind, TransferKind::Single | TransferKind::PostPending)
        });
        for t in posted {
            moved.entry(t.debit_account).or_default().0 += u128::from(t.amount);
            moved.entry(t.credit_account).or_default().1 += u128::from(t.amount);
        }
        // An account whose stored row said it moved nothing is not a position.
        moved.retain(|_, (debits, credits)| *debits > 0 || *credits > 0);
        moved
    }
}

/// One account's position, or `None` if a figure leaves ±`AMOUNT_MAX`.
fn position(account: AccountId, closing: i64, debits: u128, credits: u128) -> Option<ClearingPosition> {
    let within = |value: i128| i64::try_from(value).ok().filter(|v| v.unsigned_abs() <= AMOUNT_MAX);
    let net = i128::try_from(credits).ok()? - i128::try_from(debits).ok()?;
    let opening = i128::from(closing) - net;
    Some(ClearingPosition {
        account,
        opening: within(opening)?,
        debits: u64::try_from(debits).ok().filter(|d| *d <= AMOUNT_MAX)?,
        credits: u64::try_from(credits).ok().filter(|c| *c <= AMOUNT_MAX)?,
        net: within(net)?,
        closing,
    })
}
