//! Batch items through the ledger: each line of a batch is a transfer whose id is derived from
//! the batch id and the line's index, so a batch resumed after a crash finds the lines it paid
//! (result `exists`) and never pays one twice.

use crate::{AccountId, BatchId, Currency, ResultCode, TransferId};

/// One line of a batch, with its accounts already resolved.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BatchItem {
    /// Position of the item in its batch, from 0.
    pub index: u64,
    pub payer: AccountId,
    pub payee: AccountId,
    pub amount: u64,
    pub currency: Currency,
}

/// What to do with a chunk of items.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum BatchStep {
    /// Best effort: pay each item on its own.
    Pay,
    /// Atomic, first phase: hold each item's amount.
    Hold,
    /// Atomic, every hold succeeded: post each hold.
    Post,
    /// Atomic, some hold failed: release each hold.
    Void,
}

/// Where an item stands after a step.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum BatchItemState {
    Succeeded,
    Failed,
    /// Atomic batches: held, waiting for the rest.
    Held,
    /// Atomic batches: held, then released because another item failed.
    Voided,
}

impl BatchItemState {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchItemState::Succeeded => "succeeded",
            BatchItemState::Failed => "failed",
            BatchItemState::Held => "held",
            BatchItemState::Voided => "voided",
        }
    }
}

/// The result of one item in one step, committed with the transfer it made.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BatchItemResult {
    pub batch: BatchId,
    pub index: u64,
    pub step: BatchStep,
    pub state: BatchItemState,
    pub code: ResultCode,
}

/// How a batch ended; committed by the engine after its last item.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum BatchEnd {
    Completed,
    Cancelled,
}

impl BatchId {
    /// The id of the transfer that pays (or holds) item `index`.
    pub fn item_transfer(self, index: u64) -> TransferId {
        TransferId(self.derive(index.wrapping_mul(4)))
    }

    /// The id of the transfer that posts (`post = true`) or releases the hold of item `index`.
    pub fn item_resolution(self, index: u64, post: bool) -> TransferId {
        TransferId(self.derive(index.wrapping_mul(4) + if post { 1 } else { 2 }))
    }
}

impl BatchStep {
    /// The state an item is in before this step: a step moves only items in that state.
    pub fn from_state(self) -> &'static str {
        match self {
            BatchStep::Pay | BatchStep::Hold => "pending",
            BatchStep::Post | BatchStep::Void => "held",
        }
    }
}

/// The state an item is in after `step` gave `code`.
pub(crate) fn item_state(step: BatchStep, code: ResultCode) -> BatchItemState {
    match (step, code.is_success()) {
        (BatchStep::Pay | BatchStep::Post, true) => BatchItemState::Succeeded,
        (BatchStep::Hold, true) => BatchItemState::Held,
        (BatchStep::Void, true) => BatchItemState::Voided,
        (_, false) => BatchItemState::Failed,
    }
}
