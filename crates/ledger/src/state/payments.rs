//! Payments: a payment order moves through its statuses by way of transfers.

use super::transfers::{Move, Resolution};
use super::{CommandError, Deadline, NewPayment, State, NANOS_PER_SECOND, TIMEOUT_MAX_SECONDS};
use crate::payment::{
    CaptureMethod, Payment, PaymentStatus, Refund, RefundStatus, TAG_CANCEL, TAG_CAPTURE, TAG_CONFIRM,
};
use crate::transfer::ResultCode;
use crate::{AccountId, Amount, EventKind, PaymentId, RefundId, TenantId, TransferId};

pub(super) const AMOUNT: &str = "amount";
const EXPIRES_IN_SECONDS: &str = "expires_in_seconds";
const PAYER_ACCOUNT: &str = "payer_account";
pub(super) const PAYEE_ACCOUNT: &str = "payee_account";
const PAYMENT: &str = "payment";
const AMOUNT_RANGE: &str = "amount must be between 1 and 9223372036854775807";
const AMOUNT_POSITIVE: &str = "amount must be greater than zero";
const EXPIRES_IN_SECONDS_RANGE: &str = "expires_in_seconds must be between 1 and 31622400 (366 days)";
/// The fields and messages the errors made here carry: every one is a constant above, so
/// [`CommandError::known_param`] and [`CommandError::known_message`] know all of them.
pub(super) const PARAMS: &[&str] = &[AMOUNT, EXPIRES_IN_SECONDS, PAYER_ACCOUNT, PAYEE_ACCOUNT, PAYMENT];
pub(super) const MESSAGES: &[&str] = &[AMOUNT_RANGE, AMOUNT_POSITIVE, EXPIRES_IN_SECONDS_RANGE];

/// What a transfer refused at confirmation (insufficient funds, ...) does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RefusedTransfer {
    /// The payment fails with the transfer's code (a confirm by the payer named at creation).
    FailsThePayment,
    /// The command is refused and the payment stays open (a scan: another payer, or the same
    /// after a top-up, may scan the code again).
    RefusesTheCommand,
}

impl State {
    pub(super) fn set_payment_status(&mut self, id: PaymentId, status: PaymentStatus, now: u64) {
        let Some(payment) = self.payments.get_mut(&id) else { return };
        if payment.status == PaymentStatus::RequiresConfirmation {
            self.deadlines.remove(&(payment.expires_at, Deadline::Payment(id)));
        }
        payment.status = status;
        payment.updated_at = now.max(payment.updated_at);
        let tenant = payment.tenant;
        self.touched_payments.push(id);
        if let Some(kind) = EventKind::of_payment(status) {
            self.changes.events.push((tenant, kind, id.0));
        }
    }

    pub(super) fn create_payment(
        &mut self,
        tenant: TenantId,
        new: &NewPayment,
        now: u64,
    ) -> Result<Payment, CommandError> {
        if Amount::new(new.amount).is_none() {
            return Err(CommandError::InvalidField { param: AMOUNT, message: AMOUNT_RANGE });
        }
        if new.expires_in_seconds == 0 || new.expires_in_seconds > TIMEOUT_MAX_SECONDS {
            return Err(CommandError::InvalidField { param: EXPIRES_IN_SECONDS, message: EXPIRES_IN_SECONDS_RANGE });
        }
        // Without a payer (scan to pay), the scan checks the payer's account: with a quote, an
        // account in the quote's source currency (the payment's).
        if let Some(payer) = new.payer {
            let payer =
                self.tenant_account(tenant, payer).ok_or(CommandError::AccountNotFound { param: PAYER_ACCOUNT })?;
            if payer.currency != new.currency {
                return Err(CommandError::CurrencyMismatch { param: PAYER_ACCOUNT });
            }
        }
        let payee_currency = self
            .tenant_account(tenant, new.payee)
            .ok_or(CommandError::AccountNotFound { param: PAYEE_ACCOUNT })?
            .currency;
        // A payment in one currency needs no quote (and takes none); one across two names one.
        let quote = match new.fx_quote {
            Some(quote) => Some(self.check_quote(tenant, new, quote, payee_currency)?),
            None if payee_currency != new.currency => {
                return Err(CommandError::CurrencyMismatch { param: PAYEE_ACCOUNT })
            }
            None => None,
        };
        if new.payer == Some(new.payee) {
            return Err(CommandError::SameAccount);
        }
        if self.payments.contains_key(&new.id) {
            return Err(CommandError::AlreadyExists);
        }
        let fx = match &quote {
            Some(quote) => Some(self.take_quote(quote, new.id, now)?),
            None => None,
        };
        let created_at = self.tick(now);
        let payment = Payment {
            id: new.id,
            tenant,
            payer: new.payer,
            payee: new.payee,
            amount: new.amount,
            currency: new.currency,
            capture_method: new.capture_method,
            status: PaymentStatus::RequiresConfirmation,
            description: new.description.clone(),
            failure_code: None,
            amount_captured: 0,
            amount_refunded: 0,
            expires_at: created_at.saturating_add(new.expires_in_seconds * NANOS_PER_SECOND),
            created_at,
            updated_at: created_at,
            transfer: None,
            fx,
            merchant: new.merchant.clone(),
        };
        self.deadlines.insert((payment.expires_at, Deadline::Payment(payment.id)));
        self.payments.insert(payment.id, payment.clone());
        self.touched_payments.push(payment.id);
        Ok(payment)
    }

    /// The payment, if it belongs to `tenant` and is in one of `allowed` statuses.
    fn payment_in(&self, tenant: TenantId, id: PaymentId, allowed: &[PaymentStatus]) -> Result<Payment, CommandError> {
        let payment = self.payments.get(&id).filter(|p| p.tenant == tenant).ok_or(CommandError::PaymentNotFound)?;
        if !allowed.contains(&payment.status) {
            return Err(CommandError::UnexpectedState { status: payment.status });
        }
        Ok(payment.clone())
    }

    fn update_payment(&mut self, payment: Payment) -> Payment {
        self.touched_payments.push(payment.id);
        self.payments.insert(payment.id, payment.clone());
        payment
    }

    pub(super) fn confirm(&mut self, tenant: TenantId, id: PaymentId, now: u64) -> Result<Payment, CommandError> {
        let payment = self.payment_in(tenant, id, &[PaymentStatus::RequiresConfirmation])?;
        let payer = payment.payer.ok_or(CommandError::PayerRequired)?;
        self.confirm_by(payment, payer, RefusedTransfer::FailsThePayment, now)
    }

    /// Scan to pay: binds `payer` to the payment and confirms it, all in this one command, so
    /// that of two scans of one code exactly one wins. The payment must require confirmation
    /// (an expired one has been expired at the start of this batch) and have no payer yet, or
    /// this one; the payer's account must be of this tenant, in the payment's currency.
    pub(super) fn scan(
        &mut self,
        tenant: TenantId,
        id: PaymentId,
        payer: AccountId,
        now: u64,
    ) -> Result<Payment, CommandError> {
        let mut payment = self.payment_in(tenant, id, &[PaymentStatus::RequiresConfirmation])?;
        if payment.payer.is_some_and(|bound| bound != payer) {
            return Err(CommandError::PayerMismatch);
        }
        // A cross-currency payment's rate holds for its quote's life only: a scan after it (or
        // of a quote that is no longer stored) is refused and moves nothing; the payment stays
        // open until it expires or is cancelled. (`prefetch` loads the quote for the scan.)
        if let Some(fx) = &payment.fx {
            if self.quotes.get(&fx.quote).is_none_or(|quote| now >= quote.expires_at) {
                return Err(CommandError::QuoteExpired);
            }
        }
        let account =
            self.tenant_account(tenant, payer).ok_or(CommandError::AccountNotFound { param: PAYER_ACCOUNT })?;
        if account.currency != payment.currency {
            return Err(CommandError::CurrencyMismatch { param: PAYER_ACCOUNT });
        }
        if payer == payment.payee {
            return Err(CommandError::SameAccount);
        }
        // Bound on this copy only: it is stored (with the payment's new status) only if the
        // confirmation goes through.
        payment.payer = Some(payer);
        self.confirm_by(payment, payer, RefusedTransfer::RefusesTheCommand, now)
    }

    fn confirm_by(
        &mut self,
        mut payment: Payment,
        payer: AccountId,
        refused: RefusedTransfer,
        now: u64,
    ) -> Result<Payment, CommandError> {
        let (tenant, id) = (payment.tenant, payment.id);
        let manual = payment.capture_method == CaptureMethod::Manual;
        let transfer = TransferId(id.derive_at(TAG_CONFIRM, now));
        // The amount was checked when the payment was made; one that is not an amount fails
        // the payment with invalid_amount.
        let code = match (Amount::new(payment.amount), payment.fx.clone()) {
            (_, Some(fx)) => self.fx_confirm(tenant, &payment, &fx, transfer, manual, now),
            (Some(amount), None) => {
                let mv = Move {
                    id: transfer,
                    debit: payer,
                    credit: payment.payee,
                    amount,
                    currency: payment.currency,
                    hold: manual,
                    expires_at: manual.then_some(payment.expires_at),
                };
                self.apply_move(tenant, &mv, now, Some(id))
            }
            (None, None) => ResultCode::InvalidAmount,
        };
        // A refusal by the accounts' status or limits is not the payment's failure: the
        // confirm is refused and the payment still requires confirmation (a frozen account may
        // be unfrozen, tomorrow's outflow is a new day).
        match code {
            ResultCode::LimitExceeded => {
                if let Some(breach) = self.last_breach.take() {
                    return Err(CommandError::LimitExceeded(breach));
                }
                return Err(CommandError::Rejected(code));
            }
            ResultCode::VelocityExceeded | ResultCode::AccountFrozen | ResultCode::AccountClosed => {
                return Err(CommandError::Rejected(code));
            }
            ResultCode::Ok => {}
            _ if refused == RefusedTransfer::RefusesTheCommand => return Err(CommandError::Rejected(code)),
            _ => {}
        }
        self.deadlines.remove(&(payment.expires_at, Deadline::Payment(id)));
        payment.updated_at = now.max(payment.updated_at);
        if code == ResultCode::Ok {
            payment.transfer = Some(transfer);
            if manual {
                payment.status = PaymentStatus::RequiresCapture;
            } else {
                payment.status = PaymentStatus::Succeeded;
                payment.amount_captured = payment.amount;
            }
        } else {
            payment.status = PaymentStatus::Failed;
            payment.failure_code = Some(code);
        }
        if let Some(kind) = EventKind::of_payment(payment.status) {
            self.changes.events.push((tenant, kind, id.0));
        }
        Ok(self.update_payment(payment))
    }

    pub(super) fn capture(
        &mut self,
        tenant: TenantId,
        id: PaymentId,
        amount: Option<u64>,
        now: u64,
    ) -> Result<Payment, CommandError> {
        let mut payment = self.payment_in(tenant, id, &[PaymentStatus::RequiresCapture])?;
        if payment.fx.is_some() && amount.is_some_and(|a| a != payment.amount) {
            return Err(CommandError::InvalidField { param: AMOUNT, message: super::fx::FX_CAPTURE_IN_FULL });
        }
        let amount = amount.unwrap_or(payment.amount);
        if amount == 0 {
            return Err(CommandError::InvalidField { param: AMOUNT, message: AMOUNT_POSITIVE });
        }
        if amount > payment.amount {
            return Err(CommandError::AmountTooLarge { max: payment.amount });
        }
        // Between 1 and the payment's amount, itself an amount: this fails only on a payment
        // that was never checked.
        let checked = Amount::new(amount).ok_or(CommandError::Rejected(ResultCode::InvalidAmount))?;
        let hold = payment.transfer.ok_or(CommandError::Rejected(ResultCode::PendingNotFound))?;
        let capture = TransferId(id.derive_at(TAG_CAPTURE, now));
        let code = match payment.fx.clone() {
            Some(fx) => self.fx_capture(tenant, &payment, &fx, hold, capture, now),
            None => self.resolve(tenant, capture, hold, Resolution::Post(Some(checked)), now, Some(id)),
        };
        if code != ResultCode::Ok {
            return Err(CommandError::Rejected(code));
        }
        payment.status = PaymentStatus::Succeeded;
        payment.amount_captured = amount;
        payment.updated_at = now.max(payment.updated_at);
        self.changes.events.push((tenant, EventKind::PaymentSucceeded, id.0));
        Ok(self.update_payment(payment))
    }

    pub(super) fn cancel(&mut self, tenant: TenantId, id: PaymentId, now: u64) -> Result<Payment, CommandError> {
        let mut payment =
            self.payment_in(tenant, id, &[PaymentStatus::RequiresConfirmation, PaymentStatus::RequiresCapture])?;
        if payment.status == PaymentStatus::RequiresCapture {
            let hold = payment.transfer.ok_or(CommandError::Rejected(ResultCode::PendingNotFound))?;
            let cancel = TransferId(id.derive_at(TAG_CANCEL, now));
            let code = match payment.fx.clone() {
                Some(fx) => self.fx_cancel(tenant, &payment, &fx, hold, cancel, now),
                None => self.resolve(tenant, cancel, hold, Resolution::Void, now, Some(id)),
            };
            if code != ResultCode::Ok {
                return Err(CommandError::Rejected(code));
            }
        } else {
            self.deadlines.remove(&(payment.expires_at, Deadline::Payment(id)));
        }
        payment.status = PaymentStatus::Cancelled;
        payment.updated_at = now.max(payment.updated_at);
        Ok(self.update_payment(payment))
    }

    /// A refund of the API (`Command::RefundPayment`): succeeded or failed, it is recorded.
    pub(super) fn refund(
        &mut self,
        tenant: TenantId,
        order: RefundOrder<'_>,
        now: u64,
    ) -> Result<(Refund, Payment), CommandError> {
        let (refund, payment) = self.make_refund(tenant, order, now)?;
        self.changes.refunds.push(refund.clone());
        Ok((refund, payment))
    }

    /// Refunds all that is left of a succeeded payment, or `order.amount`: the payee pays the
    /// payer back, by the transfer `order.transfer`. The one refund path of the ledger: the
    /// API's refunds and a refunds batch's items both come here. The caller records the
    /// refund (`changes.refunds`).
    pub(super) fn make_refund(
        &mut self,
        tenant: TenantId,
        order: RefundOrder<'_>,
        now: u64,
    ) -> Result<(Refund, Payment), CommandError> {
        let id = order.payment;
        let mut payment = self.payment_in(tenant, id, &[PaymentStatus::Succeeded])?;
        // A payment succeeds only once it has a payer.
        let payer = payment.payer.ok_or(CommandError::PayerRequired)?;
        if payment.fx.is_some() {
            return Err(CommandError::InvalidField { param: PAYMENT, message: super::fx::FX_REFUND_UNSUPPORTED });
        }
        let refundable = payment.amount_captured - payment.amount_refunded;
        let amount = order.amount.unwrap_or(refundable);
        if refundable == 0 {
            return Err(CommandError::AmountTooLarge { max: 0 });
        }
        if amount == 0 {
            return Err(CommandError::InvalidField { param: AMOUNT, message: AMOUNT_POSITIVE });
        }
        if amount > refundable {
            return Err(CommandError::AmountTooLarge { max: refundable });
        }
        let transfer = order.transfer;
        // Between 1 and what was captured, itself at most the payment's amount.
        let code = match Amount::new(amount) {
            Some(checked) => {
                let mv = Move {
                    id: transfer,
                    debit: payment.payee,
                    credit: payer,
                    amount: checked,
                    currency: payment.currency,
                    hold: false,
                    expires_at: None,
                };
                self.apply_move(tenant, &mv, now, None)
            }
            None => ResultCode::InvalidAmount,
        };
        let ok = code == ResultCode::Ok;
        if ok {
            payment.amount_refunded += amount;
            payment.updated_at = now.max(payment.updated_at);
            payment = self.update_payment(payment);
            self.changes.events.push((tenant, EventKind::PaymentRefunded, id.0));
        }
        let refund = Refund {
            id: order.refund,
            tenant,
            payment: id,
            amount,
            currency: payment.currency,
            status: if ok { RefundStatus::Succeeded } else { RefundStatus::Failed },
            failure_code: (!ok).then_some(code),
            transfer,
            created_at: self.tick(now),
            reason: order.reason.map(str::to_owned),
        };
        Ok((refund, payment))
    }
}

/// A refund to make: which payment, the refund's id and transfer's id, how much (`None`: all
/// that is left) and the reason stored with it.
pub(super) struct RefundOrder<'a> {
    pub payment: PaymentId,
    pub refund: RefundId,
    pub transfer: TransferId,
    pub amount: Option<u64>,
    pub reason: Option<&'a str>,
}
