//! NACHA returns and notifications of change: the records that tie a return (Addenda 99) or a
//! notification of change (Addenda 98) — an item of its own batch — to the original item it is
//! about, and the [`ReturnStore`] contract.
//!
//! Matching happens at validation (`engine::batches`): the original is found by its trace
//! number ([`ReturnStore::items_by_trace`], written by [`ReturnStore::index_traces`]), and
//! the links are written with [`ReturnStore::record_links`] before the batch is `processing`.
//! A matched return is an ordinary item of its batch that pays the original back (payer and
//! payee swapped), with the id `BatchId::item_transfer` of its own batch and index. When that
//! reversal succeeds, the engine's commit (both backends) marks the original `returned` — a
//! result run of phase 2 on the original's batch, with the R-code — and puts a
//! `batch_item.returned` event in the outbox, in the same transaction as the reversal.

use crate::Result;
use paycore_ledger::{BatchId, Currency, TenantId, TransferId};

/// The result phase that marks an original item `returned`: it overrides phases 0 and 1.
pub const RETURNED_PHASE: u8 = 2;

/// What a link's entry was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// An Addenda 99: its item pays the original back.
    Return,
    /// An Addenda 98: a notice on the original; moves nothing.
    Change,
}

impl LinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Return => "return",
            LinkKind::Change => "change",
        }
    }

    pub fn parse(text: &str) -> Option<LinkKind> {
        match text {
            "return" => Some(LinkKind::Return),
            "change" => Some(LinkKind::Change),
            _ => None,
        }
    }
}

/// A return or notification of change (`batch`, `index`: its own item) and the original item
/// it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemLink {
    pub batch: BatchId,
    pub index: u64,
    pub tenant: TenantId,
    pub kind: LinkKind,
    pub original_batch: BatchId,
    pub original_index: u64,
    /// The R-code (`R01`) or C-code (`C01`).
    pub code: String,
    /// A notification's corrected data, or a return's addenda information.
    pub detail: Option<String>,
    /// A return: the original's amount, which its reversal moves back. A notification: 0.
    pub amount: u64,
    pub currency: Currency,
    /// A return: whether it holds its original (one active return per original). A return
    /// whose reversal failed is released when a later return of the same original comes.
    pub active: bool,
    pub created_at: u64,
}

impl ItemLink {
    /// The transfer that reverses the original: the return item's own transfer.
    pub fn reversal(&self) -> TransferId {
        self.batch.item_transfer(self.index)
    }
}

/// The store's side of returns and notifications of change. Every call but
/// [`ReturnStore::return_link`] takes ids the caller has already checked against the tenant
/// (a batch it read with `BatchStore::batch(tenant, …)`, or items found by tenant).
pub trait ReturnStore: Send + Sync {
    /// Indexes the valid (`pending`) items of the NACHA batch `batch` of `tenant` by their
    /// reference, the trace number. Indexing again adds nothing.
    fn index_traces(&self, tenant: TenantId, batch: BatchId) -> Result<()>;
    /// The indexed items of `tenant` with this trace number, newest batch first.
    fn items_by_trace(&self, tenant: TenantId, trace: &str) -> Result<Vec<(BatchId, u64)>>;
    /// The active return of the original item `index` of `batch`, if any.
    fn active_return(&self, batch: BatchId, index: u64) -> Result<Option<ItemLink>>;
    /// In one transaction: removes the links of `batch` a former validation wrote, releases
    /// the returns `released` names (return items, by batch and index, whose reversal did not
    /// happen), and writes `links`. `Conflict` when another active return already holds an
    /// original one of `links` returns (two return files validated at once): nothing is
    /// written, and validating again finds it `already_returned`.
    fn record_links(&self, batch: BatchId, links: &[ItemLink], released: &[(BatchId, u64)]) -> Result<()>;
    /// The links of the items `first..=last` of `batch`, both ways: those items are (returns
    /// and notifications in `batch`) and those about them (`batch` as the original's).
    fn item_links(&self, batch: BatchId, first: u64, last: u64) -> Result<Vec<ItemLink>>;
    /// The return of `tenant` whose reversal is `reversal` (the object of a
    /// `batch_item.returned` event).
    fn return_link(&self, tenant: TenantId, reversal: TransferId) -> Result<Option<ItemLink>>;
}
