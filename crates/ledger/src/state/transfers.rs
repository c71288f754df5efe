//! Transfers: moves and holds, posting, voiding and expiring holds, and the record of the
//! transfers a batch made.

use super::{Deadline, State, NANOS_PER_SECOND, TIMEOUT_MAX_SECONDS};
use crate::account::counter_plus;
use crate::limits::Limits;
use crate::payment::{PaymentStatus, TAG_EXPIRE};
use crate::transfer::{HoldRecord, HoldStatus, NewTransfer, ResultCode, Transfer, TransferKind, TransferOp};
use crate::{AccountId, Amount, Currency, PaymentId, TenantId, TransferId};

impl State {
    pub(super) fn find_transfer(&self, id: TransferId) -> Option<&Transfer> {
        match self.new_transfers.get(&id) {
            Some(&i) => self.changes.transfers.get(i),
            None => self.stored_transfers.get(&id).or_else(|| self.holds.get(&id).map(|h| &h.transfer)),
        }
    }

    pub(super) fn record_transfer(&mut self, transfer: Transfer) {
        self.new_transfers.insert(transfer.id, self.changes.transfers.len());
        self.changes.transfers.push(transfer);
    }

    pub(super) fn set_hold(&mut self, hold: HoldRecord) {
        let id = hold.transfer.id;
        let previous = self.holds.insert(id, hold.clone());
        if let Some(undo) = &mut self.undo {
            undo.save_hold(id, previous);
        }
        if let Some(at) = hold.transfer.expires_at {
            if hold.status == HoldStatus::Pending {
                self.deadlines.insert((at, Deadline::Hold(id)));
            } else {
                self.deadlines.remove(&(at, Deadline::Hold(id)));
            }
        }
        self.touched_holds.push(id);
    }

    /// Applies one transfer request; `payment` links a hold to the payment it reserves (and
    /// is the only owner that may post or void a payment's hold). A client's amount becomes an
    /// [`Amount`] here, once: everything after works on the checked value.
    pub(super) fn apply(
        &mut self,
        tenant: TenantId,
        t: &NewTransfer,
        now: u64,
        payment: Option<PaymentId>,
    ) -> ResultCode {
        match &t.op {
            TransferOp::Move { debit_account, credit_account, amount, currency, hold } => {
                // invalid_amount and same_account come before invalid_timeout (precedence).
                let Some(amount) = Amount::new(*amount) else { return ResultCode::InvalidAmount };
                if debit_account == credit_account {
                    return ResultCode::SameAccount;
                }
                let expires_at = match hold.map(|h| h.timeout_seconds) {
                    None | Some(None) => None,
                    Some(Some(seconds)) if seconds == 0 || seconds > TIMEOUT_MAX_SECONDS => {
                        return ResultCode::InvalidTimeout
                    }
                    Some(Some(seconds)) => Some(now.saturating_add(seconds * NANOS_PER_SECOND)),
                };
                let mv = Move {
                    id: t.id,
                    debit: *debit_account,
                    credit: *credit_account,
                    amount,
                    currency: *currency,
                    hold: hold.is_some(),
                    expires_at,
                };
                self.apply_move(tenant, &mv, now, payment)
            }
            TransferOp::Post { pending_id, amount } => {
                // invalid_amount comes before everything `resolve` checks (precedence).
                let amount = match amount.map(Amount::new) {
                    Some(None) => return ResultCode::InvalidAmount,
                    checked => checked.flatten(),
                };
                self.resolve(tenant, t.id, *pending_id, Resolution::Post(amount), now, payment)
            }
            TransferOp::Void { pending_id } => self.resolve(tenant, t.id, *pending_id, Resolution::Void, now, payment),
        }
    }

    pub(super) fn apply_move(
        &mut self,
        tenant: TenantId,
        mv: &Move,
        now: u64,
        payment: Option<PaymentId>,
    ) -> ResultCode {
        if mv.debit == mv.credit {
            return ResultCode::SameAccount;
        }
        let kind = if mv.hold { TransferKind::Pending } else { TransferKind::Single };
        if let Some(existing) = self.find_transfer(mv.id) {
            // Another tenant's transfer is never `exists`: its fields stay unknown.
            let same = existing.tenant == tenant
                && existing.kind == kind
                && existing.debit_account == mv.debit
                && existing.credit_account == mv.credit
                && existing.amount == mv.amount.get()
                && existing.currency == mv.currency;
            return if same { ResultCode::Exists } else { ResultCode::ExistsWithDifferentFields };
        }
        let (Some(debit), Some(credit)) =
            (self.tenant_account(tenant, mv.debit), self.tenant_account(tenant, mv.credit))
        else {
            return ResultCode::AccountNotFound;
        };
        if debit.currency != mv.currency || credit.currency != mv.currency {
            return ResultCode::CurrencyMismatch;
        }
        if let Some(refused) = State::status_refusal(debit, credit) {
            return refused;
        }
        let (d, c) = (debit.balances, credit.balances);
        let amount = mv.amount.get();
        let fits = |counter: u64| counter_plus(counter, amount).is_some();
        let no_overflow = if mv.hold {
            fits(d.debits_pending) && fits(c.credits_pending)
        } else {
            fits(d.debits_posted) && fits(c.credits_posted)
        };
        if !no_overflow {
            return ResultCode::Overflow;
        }
        let can_debit = debit.can_debit(amount);
        let limits = debit.limits;
        let limited = limits != Limits::default();
        // The timestamp the transfer will get: the day and the window limits count in.
        let at = self.next_timestamp(now);
        if limited {
            if let Some(refused) = self.limit_refusal(mv.debit, &limits, amount, at) {
                return refused;
            }
        }
        if !can_debit {
            return ResultCode::InsufficientFunds;
        }
        if mv.hold {
            self.update_balances(mv.debit, |b| b.debits_pending += amount);
            self.update_balances(mv.credit, |b| b.credits_pending += amount);
        } else {
            self.update_balances(mv.debit, |b| b.debits_posted += amount);
            self.update_balances(mv.credit, |b| b.credits_posted += amount);
        }
        let transfer = Transfer {
            id: mv.id,
            tenant,
            debit_account: mv.debit,
            credit_account: mv.credit,
            amount,
            currency: mv.currency,
            kind,
            pending_id: None,
            expires_at: mv.expires_at,
            timestamp: self.tick(now),
        };
        if limited {
            self.record_debit(mv.debit, &limits, amount, transfer.timestamp);
        }
        if mv.hold {
            self.set_hold(HoldRecord { transfer: transfer.clone(), status: HoldStatus::Pending, payment });
        }
        self.record_transfer(transfer);
        ResultCode::Ok
    }

    /// Posts, voids or expires a hold. `owner` is the payment on whose behalf (`None` for a
    /// client's transfer): a payment's hold is found only by its payment, so that a client
    /// cannot post or void it behind the payment's back.
    // Long on purpose: the checks of a post or void in their documented precedence, then its effect; split, the precedence would be harder to read.
    pub(super) fn resolve(
        &mut self,
        tenant: TenantId,
        id: TransferId,
        pending_id: TransferId,
        how: Resolution,
        now: u64,
        owner: Option<PaymentId>,
    ) -> ResultCode {
        let kind = match how {
            Resolution::Post(_) => TransferKind::PostPending,
            Resolution::Void => TransferKind::VoidPending,
            Resolution::Expire => TransferKind::ExpirePending,
        };
        if let Some(existing) = self.find_transfer(id) {
            let same_amount = match how {
                Resolution::Post(Some(amount)) => existing.amount == amount.get(),
                _ => true,
            };
            let same = existing.tenant == tenant
                && existing.kind == kind
                && existing.pending_id == Some(pending_id)
                && same_amount;
            return if same { ResultCode::Exists } else { ResultCode::ExistsWithDifferentFields };
        }
        let Some(hold) = self.holds.get(&pending_id).filter(|h| h.transfer.tenant == tenant && h.payment == owner)
        else {
            return ResultCode::PendingNotFound;
        };
        match hold.status {
            HoldStatus::Pending => {}
            HoldStatus::Posted => return ResultCode::PendingAlreadyPosted,
            HoldStatus::Voided => return ResultCode::PendingAlreadyVoided,
            HoldStatus::Expired => return ResultCode::PendingExpired,
        }
        if how != Resolution::Expire && hold.transfer.expires_at.is_some_and(|at| at <= now) {
            return ResultCode::PendingExpired;
        }
        let held = hold.transfer.clone();
        let posted = match how {
            Resolution::Post(amount) => amount.map_or(held.amount, Amount::get),
            Resolution::Void | Resolution::Expire => 0,
        };
        if posted > held.amount {
            return ResultCode::AmountExceedsPending;
        }
        // A post is a debit: a frozen (or closed) account refuses it. Voids and expiries only
        // release the hold and always pass.
        if matches!(how, Resolution::Post(_)) {
            if let (Some(d), Some(c)) =
                (self.accounts.get(&held.debit_account), self.accounts.get(&held.credit_account))
            {
                if let Some(refused) = State::status_refusal(d, c) {
                    return refused;
                }
            }
        }
        if posted > 0 {
            let (Some(d), Some(c)) = (self.accounts.get(&held.debit_account), self.accounts.get(&held.credit_account))
            else {
                return ResultCode::AccountNotFound;
            };
            let fits = |counter: u64| counter_plus(counter, posted).is_some();
            if !fits(d.balances.debits_posted) || !fits(c.balances.credits_posted) {
                return ResultCode::Overflow;
            }
        }
        let released = held.amount;
        self.update_balances(held.debit_account, |b| {
            b.debits_pending -= released;
            b.debits_posted += posted;
        });
        self.update_balances(held.credit_account, |b| {
            b.credits_pending -= released;
            b.credits_posted += posted;
        });
        let status = match how {
            Resolution::Post(_) => HoldStatus::Posted,
            Resolution::Void => HoldStatus::Voided,
            Resolution::Expire => HoldStatus::Expired,
        };
        let payment = self.holds.get(&pending_id).and_then(|h| h.payment);
        self.set_hold(HoldRecord { transfer: held.clone(), status, payment });
        let timestamp = self.tick(now);
        self.record_transfer(Transfer {
            id,
            tenant,
            debit_account: held.debit_account,
            credit_account: held.credit_account,
            amount: if posted > 0 { posted } else { released },
            currency: held.currency,
            kind,
            pending_id: Some(pending_id),
            expires_at: None,
            timestamp,
        });
        ResultCode::Ok
    }

    pub(super) fn expire_due(&mut self, now: u64) {
        while let Some(&(at, deadline)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            match deadline {
                Deadline::Hold(id) => {
                    let Some(hold) = self.holds.get(&id) else { continue };
                    let (tenant, payment) = (hold.transfer.tenant, hold.payment);
                    let code = self.resolve(
                        tenant,
                        TransferId(id.derive_at(TAG_EXPIRE, now)),
                        id,
                        Resolution::Expire,
                        now,
                        payment,
                    );
                    // A cross-currency payment holds two transfers (source and fee) with one
                    // deadline: the first to expire ends the payment.
                    let open = |p: &PaymentId| {
                        self.payments.get(p).is_some_and(|p| p.status == PaymentStatus::RequiresCapture)
                    };
                    if code == ResultCode::Ok {
                        if let Some(payment) = payment.filter(open) {
                            self.set_payment_status(payment, PaymentStatus::Expired, now);
                        }
                    }
                }
                Deadline::Payment(id) => {
                    if self.payments.get(&id).is_some_and(|p| p.status == PaymentStatus::RequiresConfirmation) {
                        self.set_payment_status(id, PaymentStatus::Expired, now);
                    }
                }
            }
        }
    }
}

/// A move of money, or a hold, between two accounts: what `apply_move` takes from a client's
/// transfer, a payment or a refund.
pub(super) struct Move {
    pub(super) id: TransferId,
    pub(super) debit: AccountId,
    pub(super) credit: AccountId,
    pub(super) amount: Amount,
    pub(super) currency: Currency,
    pub(super) hold: bool,
    pub(super) expires_at: Option<u64>,
}

/// What becomes of a hold.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Resolution {
    /// All of the hold, or this much of it.
    Post(Option<Amount>),
    Void,
    Expire,
}
