//! Batch items: each is a transfer whose id derives from the batch and the item's index.

use super::State;
use crate::batch::{item_state, BatchItem, BatchItemResult, BatchStep};
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
}
