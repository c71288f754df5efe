//! Batch items: each is a transfer whose id derives from the batch and the item's index.

use super::payments::RefundOrder;
use super::{CommandError, State};
use crate::batch::{item_state, BatchItem, BatchItemResult, BatchStep, ItemRefund};
use crate::transfer::{NewTransfer, ResultCode, TransferOp};
use crate::{BatchId, TenantId};

impl State {
    pub(super) fn batch_items(
        &mut self,
        tenant: TenantId,
        batch: BatchId,
        step: BatchStep,
        items: &[BatchItem],
        now: u64,
    ) -> Vec<ResultCode> {
        let mut codes = Vec::with_capacity(items.len());
        for item in items {
            let paid = batch.item_transfer(item.index);
            if let Some(refund) = &item.refund {
                let code = self.refund_batch_item(tenant, batch, step, item, refund, now);
                codes.push(code);
                if !matches!(code, ResultCode::Exists | ResultCode::ExistsWithDifferentFields) {
                    let state = item_state(step, code);
                    self.changes.batch_items.push(BatchItemResult { batch, index: item.index, step, state, code });
                }
                continue;
            }
            if let Some(fx) = &item.fx {
                let code = self.fx_batch_item(tenant, batch, step, item, fx, now);
                codes.push(code);
                if !matches!(code, ResultCode::Exists | ResultCode::ExistsWithDifferentFields) {
                    let state = item_state(step, code);
                    self.changes.batch_items.push(BatchItemResult { batch, index: item.index, step, state, code });
                }
                continue;
            }
            let op = match step {
                BatchStep::Pay | BatchStep::Hold => TransferOp::Move {
                    debit_account: item.payer,
                    credit_account: item.payee,
                    amount: item.amount,
                    currency: item.currency,
                    hold: (step == BatchStep::Hold).then_some(crate::Hold { timeout_seconds: None }),
                },
                BatchStep::Post => TransferOp::Post { pending_id: paid, amount: None },
                BatchStep::Void => TransferOp::Void { pending_id: paid },
            };
            let id = match step {
                BatchStep::Pay | BatchStep::Hold => paid,
                BatchStep::Post => batch.item_resolution(item.index, true),
                BatchStep::Void => batch.item_resolution(item.index, false),
            };
            let code = self.apply(tenant, &NewTransfer { id, linked: false, op }, now, None);
            codes.push(code);
            // The item's transfer exists: this step already ran for it, and its result was
            // committed with that transfer. Recording it again would count it twice.
            if matches!(code, ResultCode::Exists | ResultCode::ExistsWithDifferentFields) {
                continue;
            }
            self.changes.batch_items.push(BatchItemResult {
                batch,
                index: item.index,
                step,
                state: item_state(step, code),
                code,
            });
        }
        codes
    }

    /// A refunds batch's item: the ledger's one refund ([`State::make_refund`]), with the
    /// refund's and the transfer's ids derived from the batch and the index. Its transfer
    /// already made means the item ran before (`exists`, nothing again); a refund the rules
    /// refuse is the item's failure code. Only a succeeded refund is recorded as a refund (a
    /// failed item's result says why; an item sent again after failing runs again, as a
    /// transfer item does, and must not find a refund of its id). Refunds are best effort only:
    /// the API refuses an atomic refunds batch, and a hold step fails the item.
    fn refund_batch_item(
        &mut self,
        tenant: TenantId,
        batch: BatchId,
        step: BatchStep,
        item: &BatchItem,
        refund: &ItemRefund,
        now: u64,
    ) -> ResultCode {
        if step != BatchStep::Pay {
            return ResultCode::PaymentNotRefundable;
        }
        let transfer = batch.item_transfer(item.index);
        if let Some(existing) = self.find_transfer(transfer) {
            let same = existing.tenant == tenant
                && existing.debit_account == item.payer
                && existing.credit_account == item.payee
                && existing.amount == item.amount;
            return if same { ResultCode::Exists } else { ResultCode::ExistsWithDifferentFields };
        }
        let order = RefundOrder {
            payment: refund.payment,
            refund: batch.item_refund(item.index),
            transfer,
            amount: Some(item.amount),
            reason: refund.reason.as_deref(),
        };
        match self.make_refund(tenant, order, now) {
            Ok((made, _)) => {
                let code = made.failure_code.unwrap_or(ResultCode::Ok);
                if code == ResultCode::Ok {
                    self.changes.refunds.push(made);
                }
                code
            }
            Err(error) => refund_refusal(&error),
        }
    }
}

/// The result code of a refund item the refund's rules refuse.
fn refund_refusal(error: &CommandError) -> ResultCode {
    match error {
        CommandError::PaymentNotFound => ResultCode::PaymentNotFound,
        CommandError::AmountTooLarge { .. } => ResultCode::AmountExceedsRefundable,
        CommandError::InvalidField { param: "amount", .. } => ResultCode::InvalidAmount,
        // Not succeeded (yet, or any more), no payer, cross-currency.
        _ => ResultCode::PaymentNotRefundable,
    }
}
