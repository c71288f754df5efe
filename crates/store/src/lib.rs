//! Storage for paycore, behind two traits: [`Store`], the engine's single-writer side (recover,
//! load what a batch needs, commit a batch in one transaction), and [`Reader`], the API's
//! read side (committed state only). [`sqlite::SqliteStore`] is the embedded implementation.
//!
//! Nothing above this crate knows which database it talks to.

pub mod admin;
pub mod batches;
mod history;
pub mod sqlite;
pub mod verify;

pub use admin::{AdminStore, Attempt, Delivery, OutboxEvent, TenantRecord, WebhookEndpoint};
pub use batches::{BatchItemRow, BatchRecord, BatchStore, BatchTotal, Validated};

use paycore_ledger::{
    Account, AccountId, ChangeSet, HoldRecord, Payment, PaymentId, Prefetch, Refund, TenantId, Transfer, TransferId,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the data folder is for a newer paycore (schema version {found}, this build knows {known})")]
    SchemaTooNew { found: i64, known: i64 },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What the engine rebuilds its state from on start.
#[derive(Debug, Default)]
pub struct Recovered {
    pub accounts: Vec<Account>,
    pub open_holds: Vec<HoldRecord>,
    pub open_payments: Vec<Payment>,
    pub last_timestamp: u64,
    /// The highest transfer id stored, if any (see `State::set_stored_transfer_id_max`).
    pub max_transfer_id: Option<TransferId>,
    /// The highest payment id stored, if any (see `State::set_stored_payment_id_max`).
    pub max_payment_id: Option<PaymentId>,
}

/// Stored objects a batch refers to (see [`paycore_ledger::State::prefetch`]).
#[derive(Debug, Default)]
pub struct Loaded {
    pub transfers: Vec<Transfer>,
    pub holds: Vec<HoldRecord>,
    pub payments: Vec<Payment>,
}

/// The response saved for an `Idempotency-Key`, written in the same transaction as the effect
/// of the request, so that a retry after a crash finds either both or neither.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub tenant: TenantId,
    pub key: String,
    /// SHA-256 of the method, path and body of the first request.
    pub fingerprint: [u8; 32],
    pub status: u16,
    pub body: Vec<u8>,
    pub created_at: u64,
}

/// An API key as stored: only the SHA-256 of the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub tenant: TenantId,
    pub hash: [u8; 32],
    pub scopes: Vec<String>,
    pub created_at: u64,
    pub revoked: bool,
}

/// The engine's side: one writer, one transaction per batch.
pub trait Store: Send {
    /// Everything the engine keeps in memory.
    fn recover(&mut self) -> Result<Recovered>;
    /// The stored objects named by `wanted`; those not found are simply absent.
    fn load(&mut self, wanted: &Prefetch) -> Result<Loaded>;
    /// Saved responses for these idempotency keys, where they exist.
    fn idempotency(&mut self, keys: &[(TenantId, &str)]) -> Result<Vec<IdempotencyRecord>>;
    /// Writes a batch's changes and saved responses in one durable transaction. When this
    /// returns `Ok`, the batch survives a crash; when it returns `Err`, none of it was written.
    fn commit(&mut self, changes: &ChangeSet, idempotency: &[IdempotencyRecord]) -> Result<()>;
}

/// Cursor pagination: up to `limit` items strictly after (older than) `after`.
#[derive(Clone, Copy, Debug)]
pub struct Page<C> {
    pub after: Option<C>,
    pub limit: usize,
}

/// The API's side: reads of committed state, from any thread.
pub trait Reader: Send + Sync {
    fn account(&self, tenant: TenantId, id: AccountId) -> Result<Option<Account>>;
    /// The account's transfers, newest first.
    fn account_transfers(&self, tenant: TenantId, id: AccountId, page: Page<TransferId>) -> Result<Vec<Transfer>>;
    fn transfer(&self, tenant: TenantId, id: TransferId) -> Result<Option<Transfer>>;
    fn payment(&self, tenant: TenantId, id: PaymentId) -> Result<Option<Payment>>;
    /// The payment's refunds, oldest first.
    fn refunds(&self, tenant: TenantId, payment: PaymentId) -> Result<Vec<Refund>>;
    fn idempotency(&self, tenant: TenantId, key: &str) -> Result<Option<IdempotencyRecord>>;
    fn api_key(&self, hash: &[u8; 32]) -> Result<Option<ApiKeyRecord>>;
    fn api_key_count(&self) -> Result<u64>;
    /// Adds an API key (and its tenant, if new). Keys are not money: they are written outside
    /// the engine's batches.
    fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()>;
}
