//! The change set: what one `execute` changed, collected for the store to write in one
//! transaction, and the end of the batch that hands it over.

use super::{HashSet, State};
use crate::account::{Account, Balances};
use crate::batch::{BatchEnd, BatchItemResult};
use crate::clearing::ClearingWindow;
use crate::limits::AuditRecord;
use crate::payment::{Payment, Refund};
use crate::transfer::{HoldRecord, HoldStatus, Transfer};
use crate::{AccountId, BatchId, EventKind, PaymentId, QuoteId, TenantId};

/// Everything one `execute` changed, as final values, for the store to write in one
/// transaction.
#[derive(Clone, Debug, Default)]
pub struct ChangeSet {
    pub transfers: Vec<Transfer>,
    /// Accounts opened in this batch (written whole).
    pub new_accounts: Vec<Account>,
    /// Accounts whose balances changed (including new ones).
    pub balances: Vec<(AccountId, Balances)>,
    pub holds: Vec<HoldRecord>,
    pub payments: Vec<Payment>,
    pub refunds: Vec<Refund>,
    pub batch_items: Vec<BatchItemResult>,
    pub batch_ends: Vec<(BatchId, BatchEnd)>,
    /// Webhook events of payments (tenant, type, payment id), in the order they happened,
    /// for the store to write to its outbox in the same transaction.
    pub events: Vec<(TenantId, EventKind, u128)>,
    pub last_timestamp: u64,
    /// FX quotes used in this batch, each by the payment that used it: the store marks them
    /// used in the batch's transaction.
    pub quotes_used: Vec<(QuoteId, PaymentId)>,
    /// Accounts whose status or limits changed (the store writes those fields), in order.
    pub updated_accounts: Vec<Account>,
    /// One audit row per account update, written in the same transaction.
    pub audit: Vec<AuditRecord>,
    /// Clearing windows closed in this batch, with their positions.
    pub clearing_windows: Vec<ClearingWindow>,
}

impl ChangeSet {
    /// Whether the batch changed nothing that needs writing.
    pub fn is_empty(&self) -> bool {
        self.transfers.is_empty()
            && self.new_accounts.is_empty()
            && self.balances.is_empty()
            && self.holds.is_empty()
            && self.payments.is_empty()
            && self.refunds.is_empty()
            && self.batch_items.is_empty()
            && self.batch_ends.is_empty()
            && self.events.is_empty()
            && self.quotes_used.is_empty()
            && self.updated_accounts.is_empty()
            && self.audit.is_empty()
            && self.clearing_windows.is_empty()
    }
}

impl State {
    /// The changes of the last `execute`, and the end of that batch: objects that are no longer
    /// open leave memory.
    pub fn take_changes(&mut self) -> ChangeSet {
        let mut changes = std::mem::take(&mut self.changes);
        let mut seen = HashSet::default();
        for (id, (_, before)) in &self.before {
            // A rolled-back linked chain leaves balances as they were: nothing to write.
            if let Some(account) = self.accounts.get(id).filter(|a| a.balances != *before) {
                changes.balances.push((*id, account.balances));
            }
        }
        // In id order, so that the same batch always writes the same bytes in the same order.
        changes.balances.sort_unstable_by_key(|(id, _)| *id);
        for id in self.touched_holds.drain(..) {
            if seen.insert(id.0) {
                if let Some(hold) = self.holds.get(&id) {
                    changes.holds.push(hold.clone());
                }
            }
        }
        seen.clear();
        for id in self.touched_payments.drain(..) {
            if seen.insert(id.0) {
                if let Some(payment) = self.payments.get(&id) {
                    changes.payments.push(payment.clone());
                }
            }
        }
        changes.last_timestamp = self.last_timestamp;
        if let Some(max) = &mut self.stored_transfer_id_max {
            if let Some(highest) = changes.transfers.iter().map(|t| t.id).max() {
                *max = (*max).max(highest);
            }
        }
        if let Some(max) = &mut self.stored_payment_id_max {
            if let Some(highest) = changes.payments.iter().map(|p| p.id).max() {
                *max = (*max).max(highest);
            }
        }
        self.before.clear();
        self.debit_history.clear();
        self.last_breach = None;
        self.new_transfers.clear();
        self.stored_transfers.clear();
        self.quotes.clear();
        self.open_windows.clear();
        self.stored_window_ids.clear();
        self.holds.retain(|_, h| h.status == HoldStatus::Pending);
        self.payments.retain(|_, p| p.status.is_open());
        changes
    }

    /// Changes an account's balances, remembering the values before (for the double-entry
    /// check at the end of the batch, and to undo a failed linked chain).
    pub(super) fn update_balances(&mut self, id: AccountId, change: impl FnOnce(&mut Balances)) {
        let Some(account) = self.accounts.get_mut(&id) else { return };
        self.before.entry(id).or_insert((account.currency, account.balances));
        if let Some(undo) = &mut self.undo {
            undo.save_account(id, account.balances);
        }
        change(&mut account.balances);
    }
}
