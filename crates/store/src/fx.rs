//! FX rates, the tenant's fee, and quotes: not money until a payment uses a quote, so the API
//! writes them outside the engine's batches (like tenants and webhooks). A quote's *use* is the
//! engine's: it loads the quote with a batch ([`crate::Loaded::quotes`]) and the batch's commit
//! marks it used ([`paycore_ledger::ChangeSet::quotes_used`]).

use crate::{IdempotencyRecord, Result};
use paycore_ledger::fx::{Quote, Rate};
use paycore_ledger::{Currency, QuoteId, TenantId};

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
}
