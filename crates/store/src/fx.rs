//! FX rates, the tenant's fee, and quotes: not money until a payment uses a quote, so the API
//! writes them outside the engine's batches (like tenants and webhooks). A quote's *use* is the
//! engine's: it loads the quote with a batch ([`crate::Loaded::quotes`]) and the batch's commit
//! marks it used ([`paycore_ledger::ChangeSet::quotes_used`]).

use crate::{IdempotencyRecord, Result};
use paycore_ledger::fx::{Quote, Rate};
use paycore_ledger::{BatchId, Currency, ItemFx, QuoteId, TenantId};

/// A tenant's rate for one currency pair: one unit of `base` is worth `rate` units of `quote`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateRecord {
    pub tenant: TenantId,
    pub base: Currency,
    pub quote: Currency,
    pub rate: Rate,
    pub updated_at: u64,
}

/// Rates, the fee and quotes.
pub trait FxStore: Send + Sync {
    /// Sets the tenant's rate for the pair (replacing the one before).
    fn set_rate(&self, rate: &RateRecord) -> Result<()>;
    /// The tenant's rates, by base then quote currency code.
    fn rates(&self, tenant: TenantId) -> Result<Vec<RateRecord>>;
    fn rate(&self, tenant: TenantId, base: Currency, quote: Currency) -> Result<Option<RateRecord>>;
    /// The tenant's FX fee in basis points: 0 unless set.
    fn fee_bps(&self, tenant: TenantId) -> Result<u32>;
    fn set_fee_bps(&self, tenant: TenantId, fee_bps: u32, now: u64) -> Result<()>;
    /// Stores a new quote and, in the same transaction, the response saved for the request's
    /// `Idempotency-Key` ([`crate::StoreError::Conflict`] if the quote's id or the key exists:
    /// then neither is written).
    fn insert_quote(&self, quote: &Quote, saved: Option<&IdempotencyRecord>) -> Result<()>;
    fn quote(&self, tenant: TenantId, id: QuoteId) -> Result<Option<Quote>>;
    /// Stores, in one transaction, the quotes a batch locked at validation (one per currency
    /// pair, each row naming the batch) and the payer side of each of its cross-currency items
    /// (by index). Written before validation ends; [`FxStore::clear_batch_fx`] first.
    fn insert_batch_fx(&self, batch: BatchId, quotes: &[Quote], items: &[(u64, ItemFx)]) -> Result<()>;
    /// Forgets what [`FxStore::insert_batch_fx`] stored for the batch (validation starts again).
    fn clear_batch_fx(&self, batch: BatchId) -> Result<()>;
    /// The quotes of a batch, by source then target currency code.
    fn batch_quotes(&self, batch: BatchId) -> Result<Vec<Quote>>;
    /// The payer sides of the batch's cross-currency items with indexes in `first..=last`, by
    /// index.
    fn batch_item_fx(&self, batch: BatchId, first: u64, last: u64) -> Result<Vec<(u64, ItemFx)>>;
}
