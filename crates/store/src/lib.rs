//! Storage for paycore, behind traits that say nothing of the database under them:
//!
//! - [`Store`], the engine's single-writer side: recover, load what a batch needs, commit a
//!   batch in one durable transaction;
//! - [`Reader`], the API's reads of committed state;
//! - [`BatchStore`] and [`AdminStore`], the API's writes that are not money (batch records
//!   and their items, tenants, keys, webhooks);
//! - [`verify::Verify`], an offline check of everything stored.
//!
//! [`open`] is the one way in (and, for cluster mode's partitioned engines,
//! [`open_partition`] with [`partition_of`] and [`cluster_partitions`]): it picks the backend from the location and returns these as
//! trait objects. The records, the errors and the backend-neutral logic (batch result runs and
//! item statuses in [`batches`], the checks in [`verify`]) live in this crate's root modules;
//! everything that names a database lives under its backend's module (`sqlite`, the embedded
//! default; `postgres`, cluster mode's store of record). Nothing above this crate knows which
//! database it talks to.

pub mod admin;
pub mod backup;
pub mod batches;
pub mod clearing;
mod error;
pub mod files;
pub mod fx;
pub mod interest;
mod partition;
mod pool;
mod postgres;
pub mod retention;
pub mod returns;
mod sqlite;
#[doc(hidden)]
pub mod testing;
pub mod verify;

pub use admin::{
    take_tokens, AdminStore, Attempt, Delivery, OutboxEvent, RateBucket, RateGrant, TenantRecord, WebhookEndpoint,
    MICRO_TOKENS,
};
pub use batches::{BatchItemRow, BatchRecord, BatchStore, BatchTotal, Claim, ItemReference, ItemView, Validated};
pub use clearing::ClearingSummary;
pub use error::{Result, StoreError};
pub use files::FileSink;
pub use fx::{FxStore, RateRecord};
pub use interest::{BalanceHistory, InterestAdvance, InterestRecord, InterestRun, InterestStore};
pub use partition::{partition_of, Leader, PARTITIONS_MAX};
pub use retention::{PruneCounts, Retention, RetentionStore};
pub use returns::{ItemLink, LinkKind, ReturnStore};

use paycore_ledger::{
    Account, AccountId, AuditRecord, ChangeSet, ClearingWindow, ClearingWindowId, Currency, HoldRecord, OpenWindow,
    Payment, PaymentId, PaymentStatus, Prefetch, Refund, TenantId, Transfer, TransferId,
};
use std::path::Path;
use std::sync::Arc;

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
    pub quotes: Vec<paycore_ledger::fx::Quote>,
    /// The single transfers and holds debited from `Prefetch::debits_of` at or after
    /// `Prefetch::debits_since` (other kinds may be included: the ledger ignores them).
    pub debits: Vec<Transfer>,
    /// The open clearing window of each (tenant, currency) asked for.
    pub open_windows: Vec<OpenWindow>,
    /// The clearing window ids asked for that a closed window has already.
    pub window_ids: Vec<ClearingWindowId>,
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
    /// When the key stops working (nanoseconds since the Unix epoch); `None`: never. A record
    /// found by the secret a rotation replaced carries the end of that secret's overlap (or
    /// the key's own expiry, if sooner), and that secret's `hash`.
    pub expires_at: Option<u64>,
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
    /// [`StoreError::Fenced`] (a partition's leader that another has replaced) is final: no
    /// later call of this writer will succeed.
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
    /// The tenant's payments (of one status, if given), newest first (ids are time-ordered);
    /// `page.after` is the last payment of the previous page.
    fn payments(&self, tenant: TenantId, status: Option<PaymentStatus>, page: Page<PaymentId>) -> Result<Vec<Payment>>;
    /// The payment's refunds, oldest first.
    fn refunds(&self, tenant: TenantId, payment: PaymentId) -> Result<Vec<Refund>>;
    fn idempotency(&self, tenant: TenantId, key: &str) -> Result<Option<IdempotencyRecord>>;
    fn api_key(&self, hash: &[u8; 32]) -> Result<Option<ApiKeyRecord>>;
    fn api_key_count(&self) -> Result<u64>;
    /// The changes of an account's status and limits, newest first; `page.after` is the `at`
    /// of the last row of the previous page.
    fn account_audit(&self, tenant: TenantId, account: AccountId, page: Page<u64>) -> Result<Vec<AuditRecord>>;
    /// A closed clearing window of the tenant, with its positions in account order.
    fn clearing_window(&self, tenant: TenantId, id: ClearingWindowId) -> Result<Option<ClearingWindow>>;
    /// The tenant's closed clearing windows (of one currency, if given), last closed first,
    /// without their positions. A cursor that is not one of the tenant's windows gives none.
    fn clearing_windows(
        &self,
        tenant: TenantId,
        currency: Option<Currency>,
        page: Page<ClearingWindowId>,
    ) -> Result<Vec<ClearingSummary>>;
    /// Up to `limit` of the account's transfers (every kind: holds, posts, voids) whose
    /// timestamp lies in `timestamps`, **oldest first**: what a statement reads. Timestamps are
    /// unique and increasing across the ledger, so a caller pages on by starting the next call
    /// one past the last timestamp returned; a page shorter than `limit` is the last. Every
    /// batch commits whole and in the order it executed, so transfers committed after a call
    /// all have timestamps above any it returned.
    fn account_transfers_between(
        &self,
        tenant: TenantId,
        id: AccountId,
        timestamps: std::ops::Range<u64>,
        limit: usize,
    ) -> Result<Vec<Transfer>>;
    /// How far the work done off the commit (the account history's index and the stored
    /// balances) is behind the commits, per partition (the embedded store has one, 0), in
    /// partition order: what `/metrics` reports.
    fn lag(&self) -> Result<Vec<Lag>>;
}

/// One partition's clock and how far the two kinds of work done off its commits have come
/// ([`Reader::lag`]); every timestamp is the ledger's (nanoseconds since the Unix epoch, 0 for
/// none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lag {
    pub partition: u32,
    /// The timestamp of the partition's last committed event.
    pub clock: u64,
    /// Every transfer at or before this is in the account history's index; listings read the
    /// ones after it from the transfers themselves.
    pub history_through: u64,
    /// The stored balances hold every transfer at or before this; a read of a balance (and a
    /// recovery) adds the transfers after it.
    pub balances_through: u64,
}

impl Lag {
    /// The clock's lead over the history's index: the commit time of what is not indexed yet.
    pub fn history_behind(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.clock.saturating_sub(self.history_through))
    }

    /// The clock's lead over the stored balances.
    pub fn balances_behind(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.clock.saturating_sub(self.balances_through))
    }
}

/// How a store is opened; [`Options::default`] is what `paycore serve` uses unless told.
#[derive(Clone, Debug)]
pub struct Options {
    /// The most connections the API's reads and writes hold at once; a call that finds them
    /// all busy waits for one. Bounds the memory and file handles a burst of requests can take.
    pub reader_connections_max: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options { reader_connections_max: READER_CONNECTIONS_DEFAULT }
    }
}

/// The default of [`Options::reader_connections_max`]: more than the HTTP and blocking threads
/// that read at once on a small machine, few enough to keep a burst's memory small.
pub const READER_CONNECTIONS_DEFAULT: usize = 32;

/// Everything the API side of a store does: reads of committed state, the writes that are not
/// money (batch records and items, tenants, keys, webhooks, FX rates and quotes, interest
/// terms), pruning, and the offline check. A backend implements the seven traits on one
/// handle; callers upcast it to the one they need.
pub trait ApiStore:
    Reader + BatchStore + AdminStore + FxStore + InterestStore + RetentionStore + verify::Verify
{
}

impl<T: Reader + BatchStore + AdminStore + FxStore + InterestStore + RetentionStore + verify::Verify> ApiStore for T {}

/// An opened store: the engine's writer and the API's handle, as trait objects.
pub struct Opened {
    /// The engine's side. There is one per location: [`open`] refuses a location that
    /// another process holds.
    pub store: Box<dyn Store>,
    /// The API's side, shared by every request and background job.
    pub api: Arc<dyn ApiStore>,
}

/// Where a store lives, as given on the command line: a folder (the embedded SQLite store) or
/// a `postgres://` URL (the PostgreSQL store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location<'a> {
    Folder(&'a Path),
    Postgres(&'a str),
}

impl<'a> Location<'a> {
    pub fn parse(location: &'a Path) -> Location<'a> {
        match location.to_str() {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => Location::Postgres(url),
            _ => Location::Folder(location),
        }
    }
}

/// Opens (creating if needed) the store at `location` with the default [`Options`].
pub fn open(location: impl AsRef<Path>) -> Result<Opened> {
    open_with(location.as_ref(), &Options::default())
}

/// Opens (creating if needed) the store at `location`: migrates its schema, takes the
/// location's single-writer lock, and returns the engine's writer and the API's handles. A
/// PostgreSQL store's writer leads every partition of the cluster (see [`open_partition`]),
/// so it never writes beside a partition's leader.
pub fn open_with(location: &Path, options: &Options) -> Result<Opened> {
    match Location::parse(location) {
        Location::Folder(folder) => sqlite::open(folder, options),
        Location::Postgres(url) => postgres::open(url, options),
    }
}

/// The partition count of the cluster whose store is at the `postgres://` URL `url`: the
/// first call records it (`requested`, or 1) and creates the partitions; later calls read it
/// back, and refuse a `requested` count other than the recorded one
/// ([`StoreError::Refused`]: "this cluster was created with 2 partitions; --partitions cannot
/// change").
pub fn cluster_partitions(url: &str, requested: Option<u32>) -> Result<u32> {
    postgres::cluster_partitions(url, requested)
}

/// The partition count recorded at the `postgres://` URL `url`; `None` while no cluster was
/// created there (no engine has started yet). Records nothing: an API node waits on it rather
/// than create a cluster of one partition under engines about to ask for more.
pub fn recorded_cluster_partitions(url: &str) -> Result<Option<u32>> {
    postgres::recorded_partitions(url)
}

/// The API's side of the cluster's store at the `postgres://` URL `url` (migrated if needed),
/// with no writer: an API node of cluster mode, whose writes go through the queue to the
/// partitions' leaders. Any number of processes may hold one.
pub fn open_api(url: &str, options: &Options) -> Result<Arc<dyn ApiStore>> {
    postgres::open_api(url, options)
}

/// Leads `partition` of the cluster whose store is at the `postgres://` URL `url`: takes the
/// partition's leader lock on the engine's connection ([`StoreError::InUse`] while another
/// process leads it, or holds the whole store through [`open`]), then takes the next fencing
/// epoch. The [`Leader`]'s store recovers only the partition's tenants, and each of its
/// commits checks the epoch in the same transaction ([`StoreError::Fenced`] once a newer
/// leader took it). The partition count is the cluster's ([`cluster_partitions`]; 1 when
/// none is recorded yet); a `partition` outside it is [`StoreError::Refused`].
pub fn open_partition(url: &str, partition: u32, options: &Options) -> Result<Leader> {
    postgres::open_partition(url, partition, options)
}

/// An engine process's wish to lead a partition it prefers while another process leads it,
/// held for as long as this value lives (a connection of its own). The leader of that
/// partition, when it did not name it among those it prefers, sees the wish
/// ([`PartitionWishes::wished`]) and hands the partition over: so a preferring engine that was down gets its partitions back
/// once it is up again. Connects, and must be dropped, off the async runtime's threads.
pub struct PartitionWish {
    _connection: ::postgres::Client,
}

/// Takes the wish to lead `partition` of the cluster at the `postgres://` URL `url`.
pub fn wish_to_lead(url: &str, partition: u32) -> Result<PartitionWish> {
    Ok(PartitionWish { _connection: postgres::wish_to_lead(url, partition)? })
}

/// A connection that tells which partitions some process wishes to lead. Connects, is used,
/// and must be dropped, off the async runtime's threads.
pub struct PartitionWishes {
    connection: ::postgres::Client,
}

impl PartitionWishes {
    pub fn connect(url: &str) -> Result<PartitionWishes> {
        Ok(PartitionWishes { connection: postgres::connect(url)? })
    }

    /// The partitions some process holds a [`PartitionWish`] for, in order.
    pub fn wished(&mut self) -> Result<Vec<u32>> {
        postgres::wished(&mut self.connection)
    }
}

/// Opens the store at `location` without its writer, for offline checks (`paycore verify`)
/// and tools: it creates nothing and fails when there is no store there.
pub fn open_for_verify(location: impl AsRef<Path>) -> Result<Arc<dyn ApiStore>> {
    match Location::parse(location.as_ref()) {
        Location::Folder(folder) => sqlite::open_for_verify(folder),
        Location::Postgres(url) => postgres::open_for_verify(url),
    }
}
