//! Cross-currency payments: the use of a quote, the FX accounts, and the linked transfers of a
//! payment whose payer and payee hold different currencies.
//!
//! A cross-currency payment moves, all or nothing (one undo log, as a linked chain):
//!
//! ```text
//! payer ──source_amount──▶ liquidity(source currency)
//! liquidity(target currency) ──target_amount──▶ payee
//! payer ──fee──▶ fee revenue(source currency)            (when the fee is not zero)
//! ```
//!
//! With manual capture, confirmation holds the payer's two transfers (source and fee) and moves
//! nothing in the target currency; the capture posts both holds and makes the payee's transfer,
//! of exactly the quoted amounts (a partial capture is refused); a cancel or the expiry releases
//! both holds.

use super::linked::Undo;
use super::transfers::{Move, Resolution};
use super::{CommandError, NewAccount, NewPayment, State};
use crate::account::Overdraft;
use crate::batch::{BatchItem, BatchStep, ItemFx};
use crate::fx::{fee_revenue_account, liquidity_account, Quote};
use crate::payment::{Payment, PaymentFx, TAG_FX_FEE, TAG_FX_FEE_RESOLVE, TAG_FX_TARGET};
use crate::transfer::ResultCode;
use crate::{time_ordered, AccountId, Amount, BatchId, Currency, PaymentId, TenantId, TransferId};

pub(super) const CURRENCY: &str = "currency";
pub(super) const AMOUNT_NOT_QUOTED: &str = "amount must equal the quote's source_amount";
pub(super) const FX_CAPTURE_IN_FULL: &str = "a cross-currency payment is captured in full: leave amount out";
pub(super) const FX_REFUND_UNSUPPORTED: &str = "refunds of cross-currency payments are not supported yet";
pub(super) const PARAMS: &[&str] = &[CURRENCY];
pub(super) const MESSAGES: &[&str] = &[AMOUNT_NOT_QUOTED, FX_CAPTURE_IN_FULL, FX_REFUND_UNSUPPORTED];

/// The metadata of the FX accounts the engine opens, so that a reader of the account sees what
/// it is for.
const LIQUIDITY_METADATA: &str = r#"{"paycore":"fx_liquidity"}"#;
const FEE_REVENUE_METADATA: &str = r#"{"paycore":"fx_fee_revenue"}"#;

/// The ids of a cross-currency payment's other transfers, from the transfer its confirmation
/// made: the payee's transfer (automatic capture; a manual capture derives it from the capture)
/// and the fee's transfer or hold. For `paycore verify`.
pub fn payment_fx_transfers(confirm: TransferId) -> (TransferId, TransferId) {
    (beside(confirm, TAG_FX_TARGET), fee_transfer(confirm))
}

/// The ids of the other legs of cross-currency batch item `index`: the payee's transfer (made
/// by the `Pay` or the `Post` step) and the fee's transfer or hold (`Pay` or `Hold`). The
/// payer's leg has the item's own id ([`BatchId::item_transfer`]). For `paycore verify`.
pub fn batch_item_fx_transfers(batch: BatchId, index: u64) -> (TransferId, TransferId) {
    payment_fx_transfers(batch.item_transfer(index))
}

/// A transfer id derived from another (a payment's confirmation, capture or cancel), in the same
/// millisecond, so that it sorts beside it.
fn beside(id: TransferId, tag: u64) -> TransferId {
    let millis = u64::try_from(id.0 >> 80).unwrap_or(0);
    TransferId(time_ordered(millis, id.derive(tag)))
}

/// The fee's transfer (or hold) of a cross-currency payment whose confirmation made `confirm`.
pub(super) fn fee_transfer(confirm: TransferId) -> TransferId {
    beside(confirm, TAG_FX_FEE)
}

impl State {
    /// Checks a new payment's quote against the payment and the payee's currency, in this
    /// order: the quote exists in the tenant, its source currency is the payment's, its target
    /// the payee's, the amount is its source amount. Whether it is still usable is checked
    /// last, by [`State::take_quote`].
    pub(super) fn check_quote(
        &self,
        tenant: TenantId,
        new: &NewPayment,
        quote: crate::QuoteId,
        payee_currency: Currency,
    ) -> Result<Quote, CommandError> {
        let quote = self.quotes.get(&quote).filter(|q| q.tenant == tenant).ok_or(CommandError::QuoteNotFound)?;
        if quote.from != new.currency {
            return Err(CommandError::CurrencyMismatch { param: CURRENCY });
        }
        if quote.to != payee_currency {
            return Err(CommandError::CurrencyMismatch { param: super::payments::PAYEE_ACCOUNT });
        }
        if quote.source_amount != new.amount {
            return Err(CommandError::InvalidField { param: super::payments::AMOUNT, message: AMOUNT_NOT_QUOTED });
        }
        Ok(quote.clone())
    }

    /// Uses the quote for `payment`: refused as `quote_expired` when its lock has passed at
    /// `now` or a payment used it already (in an earlier batch or earlier in this one). Opens the
    /// tenant's FX accounts the payment will need, and returns the payment's FX side.
    pub(super) fn take_quote(
        &mut self,
        quote: &Quote,
        payment: PaymentId,
        now: u64,
    ) -> Result<PaymentFx, CommandError> {
        let used = self.quotes.get(&quote.id).is_none_or(|q| q.used_by.is_some());
        if used || now >= quote.expires_at {
            return Err(CommandError::QuoteExpired);
        }
        if let Some(stored) = self.quotes.get_mut(&quote.id) {
            stored.used_by = Some(payment);
        }
        self.changes.quotes_used.push((quote.id, payment));
        self.open_fx_account(quote.tenant, liquidity_account(quote.tenant, quote.from), quote.from, true, now);
        self.open_fx_account(quote.tenant, liquidity_account(quote.tenant, quote.to), quote.to, true, now);
        self.open_fx_account(quote.tenant, fee_revenue_account(quote.tenant, quote.from), quote.from, false, now);
        Ok(PaymentFx {
            quote: quote.id,
            rate: quote.rate,
            target_currency: quote.to,
            target_amount: quote.target_amount,
            fee: quote.fee,
        })
    }

    /// Opens one of the tenant's FX accounts unless it exists: a liquidity account without an
    /// overdraft limit (its balance is the platform's position in the currency), or a fee
    /// revenue account that cannot go below zero.
    fn open_fx_account(&mut self, tenant: TenantId, id: AccountId, currency: Currency, liquidity: bool, now: u64) {
        if self.accounts.contains_key(&id) {
            return;
        }
        let new = NewAccount {
            id,
            currency,
            overdraft: if liquidity { Overdraft::Unlimited } else { Overdraft::Limit(0) },
            reference: None,
            metadata: Some(if liquidity { LIQUIDITY_METADATA } else { FEE_REVENUE_METADATA }.to_owned()),
        };
        // The id is new (checked above) and has no reference: this cannot be refused.
        let _ = self.create_account(tenant, &new, now);
    }

    /// Runs `steps` as one linked chain: if one fails, everything they changed is undone and
    /// its code returned.
    fn all_or_nothing(&mut self, steps: impl FnOnce(&mut State) -> ResultCode) -> ResultCode {
        self.undo = Some(Undo::starting_at(self.changes.transfers.len()));
        let code = steps(self);
        if code != ResultCode::Ok {
            self.rollback();
        }
        self.undo = None;
        code
    }

    /// Confirms a cross-currency payment: with automatic capture its three transfers, with
    /// manual capture the holds of the payer's two. `transfer` is the payer's (source) transfer.
    pub(super) fn fx_confirm(
        &mut self,
        tenant: TenantId,
        payment: &Payment,
        fx: &PaymentFx,
        transfer: TransferId,
        manual: bool,
        now: u64,
    ) -> ResultCode {
        let (Some(source), Some(target)) = (Amount::new(payment.amount), Amount::new(fx.target_amount)) else {
            return ResultCode::InvalidAmount;
        };
        // A payment with a quote has its payer by now: named at creation, or bound by its scan.
        let Some(payer) = payment.payer else { return ResultCode::AccountNotFound };
        let fee = Amount::new(fx.fee);
        let expires_at = manual.then_some(payment.expires_at);
        self.all_or_nothing(|state| {
            let payer_side = Move {
                id: transfer,
                debit: payer,
                credit: liquidity_account(tenant, payment.currency),
                amount: source,
                currency: payment.currency,
                hold: manual,
                expires_at,
            };
            let code = state.apply_move(tenant, &payer_side, now, Some(payment.id));
            if code != ResultCode::Ok {
                return code;
            }
            if let Some(fee) = fee {
                let fee_side = Move {
                    id: fee_transfer(transfer),
                    debit: payer,
                    credit: fee_revenue_account(tenant, payment.currency),
                    amount: fee,
                    currency: payment.currency,
                    hold: manual,
                    expires_at,
                };
                let code = state.apply_move(tenant, &fee_side, now, Some(payment.id));
                if code != ResultCode::Ok {
                    return code;
                }
            }
            if manual {
                return ResultCode::Ok;
            }
            state.fx_pay_out(tenant, payment, fx, beside(transfer, TAG_FX_TARGET), target, now)
        })
    }

    /// The payee's side: the target amount out of the liquidity account of its currency.
    fn fx_pay_out(
        &mut self,
        tenant: TenantId,
        payment: &Payment,
        fx: &PaymentFx,
        id: TransferId,
        target: Amount,
        now: u64,
    ) -> ResultCode {
        let payee_side = Move {
            id,
            debit: liquidity_account(tenant, fx.target_currency),
            credit: payment.payee,
            amount: target,
            currency: fx.target_currency,
            hold: false,
            expires_at: None,
        };
        self.apply_move(tenant, &payee_side, now, None)
    }

    /// Captures a held cross-currency payment: posts the payer's holds in full and pays the
    /// payee the quoted target amount, whatever the rate is now. `capture` is the id of the
    /// post of the source hold `hold`.
    pub(super) fn fx_capture(
        &mut self,
        tenant: TenantId,
        payment: &Payment,
        fx: &PaymentFx,
        hold: TransferId,
        capture: TransferId,
        now: u64,
    ) -> ResultCode {
        let Some(target) = Amount::new(fx.target_amount) else { return ResultCode::InvalidAmount };
        self.all_or_nothing(|state| {
            let code = state.resolve(tenant, capture, hold, Resolution::Post(None), now, Some(payment.id));
            if code != ResultCode::Ok {
                return code;
            }
            if fx.fee > 0 {
                let fee_hold = fee_transfer(hold);
                let id = beside(capture, TAG_FX_FEE_RESOLVE);
                let code = state.resolve(tenant, id, fee_hold, Resolution::Post(None), now, Some(payment.id));
                if code != ResultCode::Ok {
                    return code;
                }
            }
            state.fx_pay_out(tenant, payment, fx, beside(capture, TAG_FX_TARGET), target, now)
        })
    }

    /// Releases both holds of a held cross-currency payment. `cancel` is the id of the void of
    /// the source hold `hold`.
    pub(super) fn fx_cancel(
        &mut self,
        tenant: TenantId,
        payment: &Payment,
        fx: &PaymentFx,
        hold: TransferId,
        cancel: TransferId,
        now: u64,
    ) -> ResultCode {
        self.all_or_nothing(|state| {
            let code = state.resolve(tenant, cancel, hold, Resolution::Void, now, Some(payment.id));
            if code != ResultCode::Ok || fx.fee == 0 {
                return code;
            }
            let id = beside(cancel, TAG_FX_FEE_RESOLVE);
            state.resolve(tenant, id, fee_transfer(hold), Resolution::Void, now, Some(payment.id))
        })
    }

    /// One cross-currency batch item in one step, all legs or none (one linked chain):
    ///
    /// - `Pay`: payer → liquidity(source) `source_amount` (the item's own transfer id), payer →
    ///   fee revenue(source) `fee`, liquidity(target) → payee `amount`;
    /// - `Hold`: the same three legs as holds, so that everything that could refuse the item
    ///   (funds, the payee's status) refuses it in the first phase of an atomic batch;
    /// - `Post`: the three holds posted; `Void`: the three holds released.
    ///
    /// Every leg's id derives from the batch and the index ([`batch_item_fx_transfers`]; a
    /// resolution's from the item's resolution id), so a resumed batch finds the item's first
    /// leg (`exists`) and makes none of them again.
    pub(super) fn fx_batch_item(
        &mut self,
        tenant: TenantId,
        batch: BatchId,
        step: BatchStep,
        item: &BatchItem,
        fx: &ItemFx,
        now: u64,
    ) -> ResultCode {
        let (Some(source), Some(target)) = (Amount::new(fx.source_amount), Amount::new(item.amount)) else {
            return ResultCode::InvalidAmount;
        };
        let Some(payer) = self.accounts.get(&item.payer).filter(|a| a.tenant == tenant) else {
            return ResultCode::AccountNotFound;
        };
        let source_currency = payer.currency;
        if source_currency == item.currency {
            return ResultCode::CurrencyMismatch;
        }
        let paid = batch.item_transfer(item.index);
        let (target_id, fee_id) = batch_item_fx_transfers(batch, item.index);
        let fee = Amount::new(fx.fee);
        if let BatchStep::Post | BatchStep::Void = step {
            let post = step == BatchStep::Post;
            let id = batch.item_resolution(item.index, post);
            let how = if post { Resolution::Post(None) } else { Resolution::Void };
            return self.all_or_nothing(|state| {
                let code = state.resolve(tenant, id, paid, how, now, None);
                if code != ResultCode::Ok {
                    return code;
                }
                if fee.is_some() {
                    let code = state.resolve(tenant, beside(id, TAG_FX_FEE_RESOLVE), fee_id, how, now, None);
                    if code != ResultCode::Ok {
                        return code;
                    }
                }
                state.resolve(tenant, beside(id, TAG_FX_TARGET), target_id, how, now, None)
            });
        }
        self.open_fx_account(tenant, liquidity_account(tenant, source_currency), source_currency, true, now);
        self.open_fx_account(tenant, liquidity_account(tenant, item.currency), item.currency, true, now);
        self.open_fx_account(tenant, fee_revenue_account(tenant, source_currency), source_currency, false, now);
        let hold = step == BatchStep::Hold;
        let leg =
            |id, debit, credit, amount, currency| Move { id, debit, credit, amount, currency, hold, expires_at: None };
        let mut legs = vec![leg(paid, item.payer, liquidity_account(tenant, source_currency), source, source_currency)];
        if let Some(fee) = fee {
            legs.push(leg(fee_id, item.payer, fee_revenue_account(tenant, source_currency), fee, source_currency));
        }
        legs.push(leg(target_id, liquidity_account(tenant, item.currency), item.payee, target, item.currency));
        self.all_or_nothing(|state| {
            for leg in &legs {
                let code = state.apply_move(tenant, leg, now, None);
                if code != ResultCode::Ok {
                    return code;
                }
            }
            ResultCode::Ok
        })
    }
}
