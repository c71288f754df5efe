//! Batch items through the ledger: each line of a batch is a transfer whose id is derived from
//! the batch id and the line's index, so a batch resumed after a crash finds the lines it paid
//! (result `exists`) and never pays one twice.

use crate::{AccountId, BatchId, Currency, PaymentId, QuoteId, RefundId, ResultCode, TransferId};

/// One line of a batch, with its accounts already resolved.
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BatchItem {
    /// Position of the item in its batch, from 0.
    pub index: u64,
    pub payer: AccountId,
    pub payee: AccountId,
    pub amount: u64,
    pub currency: Currency,
    /// A cross-currency item (the payer's account is in another currency than `currency`,
    /// which is the payee's): what the payer pays for `amount`, fixed at validation by the
    /// batch's quote for the pair. `None`: payer and payee hold `currency`.
    pub fx: Option<ItemFx>,
    /// A refunds batch's item: `amount` of the payment goes back from its payee (`payer`
    /// here) to its payer (`payee` here), through the ledger's refund (the rules of
    /// `POST /v1/payments/{id}/refunds`). `None`: a payment from `payer` to `payee`.
    pub refund: Option<ItemRefund>,
}

/// What makes a batch item a refund: the payment it refunds and the reason stored on the
/// refund. The refund's id is [`BatchId::item_refund`], its transfer's
/// [`BatchId::item_transfer`], so a resent item finds its transfer (`exists`).
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ItemRefund {
    pub payment: PaymentId,
    pub reason: Option<String>,
}

/// The payer's side of a cross-currency batch item, in the payer's currency (the quote's
/// source currency): `source_amount` to the liquidity account, `fee` to the fee revenue
/// account. Per item, `(source_amount, _, fee) = quote_amounts(Fixed::Target(amount), …)`: the
/// ceiling of the item's amount at the quote's rate, and the ceiling of its fee; the batch's
/// quote for the pair holds the sums. See [`crate::fx::batch_item_fx`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ItemFx {
    pub quote: QuoteId,
    pub source_amount: u64,
    pub fee: u64,
}

/// What to do with a chunk of items.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
    /// The status this result gives its item.
    pub fn as_str(self) -> &'static str {
        crate::ItemStatus::from(self).as_str()
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
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum BatchEnd {
    Completed,
    Cancelled,
}

/// Bits at the bottom of an item's transfer id that hold its index and step.
const ITEM_BITS: u32 = 42;

impl BatchId {
    /// The id of the transfer that pays (or holds) item `index`.
    pub fn item_transfer(self, index: u64) -> TransferId {
        self.item_id(index, 0)
    }

    /// The id of the refund that item `index` of a refunds batch makes: the bits of its
    /// transfer's id ([`BatchId::item_transfer`]), in the refunds' own id space.
    pub fn item_refund(self, index: u64) -> RefundId {
        RefundId(self.item_transfer(index).0)
    }

    /// The id of the transfer that posts (`post = true`) or releases the hold of item `index`.
    pub fn item_resolution(self, index: u64, post: bool) -> TransferId {
        self.item_id(index, if post { 1 } else { 2 })
    }

    /// What [`BatchId::item_transfer`] and [`BatchId::item_resolution`] (with a post) may have
    /// made `transfer` from: the range of batch ids that share its top bits, and the item's
    /// index. `None` for a tag no post or payment carries (a release of a hold). Any id has a
    /// reading: whether a batch of that range and an item of that index exist, and match the
    /// transfer, is for the caller to check.
    pub fn item_of(transfer: TransferId) -> Option<(std::ops::RangeInclusive<BatchId>, u64)> {
        let mask = (1u128 << ITEM_BITS) - 1;
        let low = transfer.0 & mask;
        if low & 3 > 1 {
            return None;
        }
        let first = transfer.0 & !mask;
        let index = u64::try_from(low >> 2).ok()?;
        Some((BatchId(first)..=BatchId(first | mask), index))
    }

    /// The batch id's time-ordered top bits, then the index and a tag: a batch's transfers get
    /// increasing ids, so the store appends them to its index instead of scattering them. The
    /// top 86 bits (48 of milliseconds, 38 random) keep batches apart; 40 bits of index allow
    /// a trillion items.
    fn item_id(self, index: u64, tag: u64) -> TransferId {
        let low = u128::from((index << 2 | tag) & ((1 << ITEM_BITS) - 1));
        TransferId((self.0 >> ITEM_BITS << ITEM_BITS) | low)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn an_item_transfer_reads_back_as_its_batch_and_index() {
        let batch = BatchId(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        for index in [0, 1, 7, (1 << 40) - 1] {
            for id in [batch.item_transfer(index), batch.item_resolution(index, true)] {
                let (range, found) = BatchId::item_of(id).unwrap();
                assert!(range.contains(&batch), "{index}");
                assert_eq!(found, index);
            }
            assert_eq!(BatchId::item_of(batch.item_resolution(index, false)), None);
        }
    }

    #[test]
    fn item_ids_are_distinct_and_increasing() {
        let a = BatchId(crate::time_ordered(1_700_000_000_000, 7 << 42));
        let b = BatchId(crate::time_ordered(1_700_000_000_000, 8 << 42));
        assert!(a.item_transfer(0) < a.item_transfer(1));
        assert!(a.item_transfer(1) < a.item_transfer(2));
        assert_ne!(a.item_transfer(5), b.item_transfer(5));
        let ids = [a.item_transfer(9), a.item_resolution(9, true), a.item_resolution(9, false)];
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    }
}
