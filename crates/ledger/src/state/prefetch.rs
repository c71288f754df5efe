//! What the engine must load from the store before a batch: the objects it names that are not
//! in memory, and the highest stored ids that let most new ids skip the question.

use super::{Command, Request, State};
use crate::batch::BatchStep;
use crate::fx::Quote;
use crate::payment::Payment;
use crate::transfer::{HoldRecord, NewTransfer, Transfer, TransferOp};
use crate::{ClearingWindowId, Currency, PaymentId, QuoteId, TenantId, TransferId};

/// What the engine must load from storage before executing a batch: objects that are not kept
/// in memory (resolved holds, finished payments, stored transfers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prefetch {
    pub transfers: Vec<TransferId>,
    pub holds: Vec<TransferId>,
    pub payments: Vec<PaymentId>,
    /// The FX quotes that payments created in the batch name, and those of the open
    /// cross-currency payments it scans.
    pub quotes: Vec<QuoteId>,
    /// Accounts whose debits (single transfers and holds) at or after `debits_since` the
    /// limits need: those whose limits a batch changes, or every limited account at recovery.
    pub debits_of: Vec<crate::AccountId>,
    pub debits_since: u64,
    /// Clearing windows to close: the open window of each (tenant, currency), and whether the
    /// closed window's id is taken.
    pub clearing: Vec<(TenantId, Currency, ClearingWindowId)>,
}

impl Prefetch {
    pub fn is_empty(&self) -> bool {
        self.transfers.is_empty()
            && self.holds.is_empty()
            && self.payments.is_empty()
            && self.quotes.is_empty()
            && self.debits_of.is_empty()
            && self.clearing.is_empty()
    }
}

impl State {
    /// Tells the state that no stored transfer has an id above `max` (`None`: the store holds
    /// no transfer), so that `prefetch` skips ids that cannot be stored. The store's primary key
    /// still refuses a duplicate id if this were wrong: the commit would fail, never apply twice.
    pub fn set_stored_transfer_id_max(&mut self, max: Option<TransferId>) {
        self.stored_transfer_id_max = Some(max.unwrap_or(TransferId(0)));
    }

    /// Tells the state that no stored payment has an id above `max` (`None`: no payment is
    /// stored), so that `prefetch` does not look for a new payment's id in the store. Unlike a
    /// transfer's, a payment's row is written by upsert: this must be exact, and is (every
    /// payment is made by `execute`, which raises it in `take_changes`).
    pub fn set_stored_payment_id_max(&mut self, max: Option<PaymentId>) {
        self.stored_payment_id_max = Some(max.unwrap_or(PaymentId(0)));
    }

    /// Whether a transfer with this id may be in the store.
    fn may_be_stored(&self, id: TransferId) -> bool {
        self.stored_transfer_id_max.is_none_or(|max| id <= max)
    }

    /// The stored objects these requests refer to that are not in memory.
    pub fn prefetch(&self, requests: &[Request]) -> Prefetch {
        let mut wanted = Prefetch::default();
        for request in requests {
            match &request.command {
                Command::Transfer(t) => self.prefetch_transfers(std::slice::from_ref(t), &mut wanted),
                Command::Transfers(transfers) => self.prefetch_transfers(transfers, &mut wanted),
                Command::RefundPayment { payment, .. }
                | Command::ConfirmPayment(payment)
                | Command::CapturePayment { payment, .. }
                | Command::CancelPayment(payment) => {
                    if !self.payments.contains_key(payment) {
                        wanted.payments.push(*payment);
                    }
                }
                // A cross-currency payment's scan checks its quote's expiry: read the stored
                // row. (A payment that is not in memory is finished: its scan is refused.)
                Command::ScanPayment { payment, .. } => match self.payments.get(payment) {
                    Some(open) => wanted.quotes.extend(open.fx.as_ref().map(|fx| fx.quote)),
                    None => wanted.payments.push(*payment),
                },
                Command::BatchItems { batch, step, items } => {
                    for item in items {
                        let id = match step {
                            BatchStep::Pay | BatchStep::Hold => batch.item_transfer(item.index),
                            BatchStep::Post => batch.item_resolution(item.index, true),
                            BatchStep::Void => batch.item_resolution(item.index, false),
                        };
                        if self.may_be_stored(id) {
                            wanted.transfers.push(id);
                        }
                        // A refund item's payment, finished, is not in memory.
                        if let Some(refund) = &item.refund {
                            if !self.payments.contains_key(&refund.payment) {
                                wanted.payments.push(refund.payment);
                            }
                        }
                        if matches!(step, BatchStep::Post | BatchStep::Void) {
                            let hold = batch.item_transfer(item.index);
                            if !self.holds.contains_key(&hold) {
                                wanted.holds.push(hold);
                            }
                            // A cross-currency item's fee and payee legs are holds of their own.
                            if item.fx.is_some() {
                                let (target, fee) = super::fx::batch_item_fx_transfers(*batch, item.index);
                                for leg in [target, fee] {
                                    if !self.holds.contains_key(&leg) {
                                        wanted.holds.push(leg);
                                    }
                                }
                            }
                        }
                    }
                }
                // A finished payment is not in memory: load it, or its id would be taken again.
                Command::CreatePayment(new) => {
                    let may_be_stored = self.stored_payment_id_max.is_none_or(|max| new.id <= max);
                    if may_be_stored && !self.payments.contains_key(&new.id) {
                        wanted.payments.push(new.id);
                    }
                    // Quotes are never kept in memory: each use reads the stored row.
                    if let Some(quote) = new.fx_quote {
                        wanted.quotes.push(quote);
                    }
                }
                Command::UpdateAccount { account, update, .. } => {
                    if update.touches_limits() && !wanted.debits_of.contains(account) {
                        wanted.debits_of.push(*account);
                        wanted.debits_since = self.history_since();
                    }
                }
                Command::CloseClearingWindow { window, currency } => {
                    wanted.clearing.push((request.tenant, *currency, *window));
                }
                Command::CreateAccount(_) | Command::EndBatch { .. } => {}
            }
        }
        wanted
    }

    /// Adds objects loaded from storage for the next batch. They are dropped again after it.
    pub fn insert_prefetched(
        &mut self,
        transfers: impl IntoIterator<Item = Transfer>,
        holds: impl IntoIterator<Item = HoldRecord>,
        payments: impl IntoIterator<Item = Payment>,
    ) {
        self.stored_transfers.extend(transfers.into_iter().map(|t| (t.id, t)));
        for hold in holds {
            self.holds.entry(hold.transfer.id).or_insert(hold);
        }
        for payment in payments {
            self.payments.entry(payment.id).or_insert(payment);
        }
    }

    /// Adds the FX quotes loaded from storage for the next batch. They are dropped after it.
    pub fn insert_prefetched_quotes(&mut self, quotes: impl IntoIterator<Item = Quote>) {
        for quote in quotes {
            self.quotes.entry(quote.id).or_insert(quote);
        }
    }

    /// The transfers to load before `transfers` run: those whose id may be stored (to answer
    /// `exists`), and the holds they resolve that are not in memory.
    fn prefetch_transfers(&self, transfers: &[NewTransfer], wanted: &mut Prefetch) {
        for t in transfers {
            if self.may_be_stored(t.id) {
                wanted.transfers.push(t.id);
            }
            if let TransferOp::Post { pending_id, .. } | TransferOp::Void { pending_id } = t.op {
                if !self.holds.contains_key(&pending_id) {
                    wanted.holds.push(pending_id);
                }
            }
        }
    }
}
