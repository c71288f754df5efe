//! The API's side of the PostgreSQL store: a small bounded pool of connections, and the reads
//! of [`Reader`].

use super::codec::{
    account_from, all, get, hash, id, id_bytes, idempotency_from, opt_hash, opt_uint, payment_from, refund_from,
    transfer_from, uint,
};
use super::open::connect;
use crate::pool::Pool;
use crate::{ApiKeyRecord, ClearingSummary, IdempotencyRecord, Page, Reader, Result};
use paycore_ledger::{
    Account, AccountId, AuditRecord, ClearingWindow, ClearingWindowId, Currency, Payment, PaymentId, PaymentStatus,
    Refund, TenantId, Transfer, TransferId,
};
use postgres::Client;
use std::sync::Arc;

/// The API's reads and writes, safe to share between threads: each call borrows a connection
/// from a pool of at most `connections_max` ([`Pool`], as the SQLite store's), waiting for one
/// when all are in use. A connection that broke is closed rather than given back, so a
/// restarted server costs each pooled connection one failed call, answered `Unavailable`.
pub(super) struct PostgresReader {
    connections: Arc<Connections>,
}

/// The pool and where its connections go; shared with the readers of stored batch files
/// (`super::files`), which outlive a call.
pub(super) struct Connections {
    url: String,
    pool: Pool<Client>,
}

/// Connections kept idle in the pool; up to `connections_max` may be open while many requests
/// run at once, the ones past this number are closed when they come back.
const POOL_IDLE_MAX: usize = 8;

impl Connections {
    /// Runs `f` on a pooled connection.
    pub(super) fn with<T>(&self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let mut lease = self.pool.lease(|| connect(&self.url))?;
        f(lease.conn()?)
    }
}

impl Drop for Connections {
    /// Closes the idle connections on a thread of its own: closing one runs the client's own
    /// runtime, which panics on a thread that drives async tasks — where the last handle of a
    /// server's store is often dropped.
    fn drop(&mut self) {
        let idle = self.pool.take_idle();
        if idle.is_empty() {
            return;
        }
        if let Ok(closing) = std::thread::Builder::new().name("pg-close".into()).spawn(move || drop(idle)) {
            let _ = closing.join();
        }
    }
}

impl PostgresReader {
    pub(super) fn new(url: String, connections_max: usize) -> PostgresReader {
        let pool = Pool::new(connections_max, POOL_IDLE_MAX, |client: &Client| !client.is_closed());
        PostgresReader { connections: Arc::new(Connections { url, pool }) }
    }

    /// Runs `f` on a pooled connection.
    pub(super) fn with<T>(&self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        self.connections.with(f)
    }

    /// The pool, for what keeps using it after a call returns.
    pub(super) fn connections(&self) -> Arc<Connections> {
        self.connections.clone()
    }

    /// How many connections the pool holds (idle or lent); for tests.
    #[cfg(test)]
    pub(super) fn open_connections(&self) -> usize {
        self.connections.pool.open()
    }
}

impl Reader for PostgresReader {
    fn clearing_window(&self, tenant: TenantId, id: ClearingWindowId) -> Result<Option<ClearingWindow>> {
        self.with(|client| {
            // One snapshot: the window and its positions.
            let mut tx = client
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let window = super::clearing::window(&mut tx, tenant, id)?;
            tx.commit()?;
            Ok(window)
        })
    }

    fn clearing_windows(
        &self,
        tenant: TenantId,
        currency: Option<Currency>,
        page: Page<ClearingWindowId>,
    ) -> Result<Vec<ClearingSummary>> {
        self.with(|client| super::clearing::windows(client, tenant, currency, page))
    }

    fn account(&self, tenant: TenantId, id: AccountId) -> Result<Option<Account>> {
        self.with(|client| {
            // One snapshot: the row, its checkpoint and the transfers since (see `balances`).
            let mut tx = super::batches::snapshot(client)?;
            let account = tx
                .query_opt(
                    "SELECT * FROM accounts WHERE id = $1 AND tenant = $2",
                    &[&id_bytes(id.0), &id_bytes(tenant.0)],
                )?
                .map(|row| account_from(&row))
                .transpose()?;
            let mut account = account.into_iter().collect::<Vec<_>>();
            super::balances::bring_up_to_date(&mut tx, &mut account)?;
            tx.commit()?;
            Ok(account.pop())
        })
    }

    fn account_transfers(&self, tenant: TenantId, id: AccountId, page: Page<TransferId>) -> Result<Vec<Transfer>> {
        self.with(|client| {
            let before = match page.after {
                None => i64::MAX,
                Some(cursor) => {
                    let found = client.query_opt(
                        "SELECT timestamp FROM transfers WHERE id = $1 AND tenant = $2",
                        &[&id_bytes(cursor.0), &id_bytes(tenant.0)],
                    )?;
                    match found {
                        Some(row) => get(&row, "timestamp")?,
                        None => return Ok(Vec::new()),
                    }
                }
            };
            let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
            // Newest first from the account's runs and from the unindexed tail, then merged.
            let split = super::history::split_of_tenant(client, tenant)?;
            let rows = client.query(
                super::history::NEWEST_BEFORE,
                &[&id_bytes(id.0), &before, &id_bytes(tenant.0), &limit, &split],
            )?;
            all(&rows, transfer_from)
        })
    }

    fn transfer(&self, tenant: TenantId, id: TransferId) -> Result<Option<Transfer>> {
        self.with(|client| {
            client
                .query_opt(
                    "SELECT * FROM transfers WHERE id = $1 AND tenant = $2",
                    &[&id_bytes(id.0), &id_bytes(tenant.0)],
                )?
                .map(|row| transfer_from(&row))
                .transpose()
        })
    }

    fn payment(&self, tenant: TenantId, id: PaymentId) -> Result<Option<Payment>> {
        self.with(|client| {
            client
                .query_opt(
                    "SELECT * FROM payments WHERE id = $1 AND tenant = $2",
                    &[&id_bytes(id.0), &id_bytes(tenant.0)],
                )?
                .map(|row| payment_from(&row))
                .transpose()
        })
    }

    fn payments(&self, tenant: TenantId, status: Option<PaymentStatus>, page: Page<PaymentId>) -> Result<Vec<Payment>> {
        let before = id_bytes(page.after.map_or(u128::MAX, |id| id.0));
        let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
        self.with(|client| {
            let rows = client.query(
                "SELECT * FROM payments WHERE tenant = $1 AND ($2::text IS NULL OR status = $2) AND id < $3
                 ORDER BY id DESC LIMIT $4",
                &[&id_bytes(tenant.0), &status.map(PaymentStatus::as_str), &before, &limit],
            )?;
            all(&rows, payment_from)
        })
    }

    fn refunds(&self, tenant: TenantId, payment: PaymentId) -> Result<Vec<Refund>> {
        self.with(|client| {
            let rows = client.query(
                "SELECT * FROM refunds WHERE payment = $1 AND tenant = $2 ORDER BY created_at",
                &[&id_bytes(payment.0), &id_bytes(tenant.0)],
            )?;
            all(&rows, refund_from)
        })
    }

    fn idempotency(&self, tenant: TenantId, key: &str) -> Result<Option<IdempotencyRecord>> {
        self.with(|client| {
            client
                .query_opt("SELECT * FROM idempotency WHERE tenant = $1 AND key = $2", &[&id_bytes(tenant.0), &key])?
                .map(|row| idempotency_from(&row))
                .transpose()
        })
    }

    fn api_key(&self, key_hash: &[u8; 32]) -> Result<Option<ApiKeyRecord>> {
        self.with(|client| {
            let row = client
                .query_opt("SELECT * FROM api_keys WHERE hash = $1 OR previous_hash = $1", &[&key_hash.as_slice()])?;
            row.map(|row| api_key_from(&row, Some(key_hash))).transpose()
        })
    }

    fn api_key_count(&self) -> Result<u64> {
        self.with(|client| {
            let n: i64 = client.query_one("SELECT count(*) FROM api_keys WHERE NOT revoked", &[])?.try_get(0)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn account_audit(&self, tenant: TenantId, account: AccountId, page: Page<u64>) -> Result<Vec<AuditRecord>> {
        self.with(|client| super::limits::account_audit(client, tenant, account, page.after, page.limit))
    }

    fn account_transfers_between(
        &self,
        tenant: TenantId,
        id: AccountId,
        timestamps: std::ops::Range<u64>,
        limit: usize,
    ) -> Result<Vec<Transfer>> {
        let from = i64::try_from(timestamps.start).unwrap_or(i64::MAX);
        let to = i64::try_from(timestamps.end).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(|client| {
            // Oldest first from the account's runs and from the unindexed tail, then merged.
            let split = super::history::split_of_tenant(client, tenant)?;
            let rows = client.query(
                super::history::OLDEST_BETWEEN,
                &[&id_bytes(id.0), &from, &to, &id_bytes(tenant.0), &limit, &split],
            )?;
            all(&rows, transfer_from)
        })
    }

    fn lag(&self) -> Result<Vec<crate::Lag>> {
        self.with(|client| {
            let stamp = |t: i64| u64::try_from(t).unwrap_or(0);
            let mut lags = Vec::new();
            for row in client.query(LAG, &[])? {
                lags.push(crate::Lag {
                    partition: u32::try_from(row.try_get::<_, i32>(0)?).unwrap_or(0),
                    clock: stamp(row.try_get(1)?),
                    history_through: stamp(row.try_get(2)?),
                    balances_through: stamp(row.try_get(3)?),
                });
            }
            Ok(lags)
        })
    }
}

/// Each partition's clock, history watermark (none yet: nothing indexed) and balances
/// checkpoint ([`Reader::lag`]), as the README's "what to watch" query reads them.
const LAG: &str = "SELECT p.id, p.last_timestamp, coalesce(h.through, 0), p.balances_through
     FROM partitions p LEFT JOIN history_watermarks h ON h.partition = p.id ORDER BY p.id";

/// An `api_keys` row; when `found_by` is the secret a rotation replaced, the record is that
/// secret's: its hash, and the end of its overlap as the expiry.
pub(super) fn api_key_from(row: &postgres::Row, found_by: Option<&[u8; 32]>) -> Result<ApiKeyRecord> {
    let scopes: &str = get(row, "scopes")?;
    let mut record = ApiKeyRecord {
        id: get(row, "id")?,
        tenant: TenantId(id(row, "tenant")?),
        hash: hash(row, "hash")?,
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        created_at: uint(row, "created_at")?,
        revoked: get(row, "revoked")?,
        expires_at: opt_uint(row, "expires_at")?,
    };
    if let (Some(found_by), Some(previous)) = (found_by, opt_hash(row, "previous_hash")?) {
        if *found_by == previous && *found_by != record.hash {
            record.hash = previous;
            // Stored never past the key's own expiry; no overlap end stored is a secret
            // that already stopped.
            record.expires_at = Some(opt_uint(row, "previous_expires_at")?.unwrap_or(0));
        }
    }
    Ok(record)
}
