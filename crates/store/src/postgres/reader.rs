//! The API's side of the PostgreSQL store: a small bounded pool of connections, and the reads
//! of [`Reader`].

use super::codec::{
    account_from, all, get, hash, id, id_bytes, idempotency_from, payment_from, refund_from, transfer_from, uint,
};
use super::open::connect;
use crate::{ApiKeyRecord, IdempotencyRecord, Page, Reader, Result, StoreError};
use paycore_ledger::{Account, AccountId, Payment, PaymentId, Refund, TenantId, Transfer, TransferId};
use postgres::Client;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The API's reads and writes, safe to share between threads: each call borrows a connection
/// from a pool of at most `connections_max`, waiting for one when all are in use.
///
/// The pool is a mutex, a condition variable and a vector, as the SQLite store's: a pool
/// crate (`r2d2`, `deadpool`) would add a dependency and a background thread for what is
/// thirty lines here. A connection that failed is not given back, so a restarted server
/// costs each pooled connection one failed call, answered `Unavailable`.
pub(super) struct PostgresReader {
    url: String,
    pool: Mutex<Pool>,
    /// Signalled when a connection goes back to the pool (or a slot frees up).
    returned: Condvar,
    connections_max: usize,
}

/// The pool's connections: those idle, and how many exist in all (idle or lent).
struct Pool {
    idle: Vec<Client>,
    open: usize,
}

/// Connections kept idle in the pool; up to `connections_max` may be open while many requests
/// read at once, the ones past this number are closed when they come back.
const POOL_IDLE_MAX: usize = 8;
/// The longest a call waits for a connection when all are lent before it answers `Busy`.
const POOL_WAIT_MAX: Duration = Duration::from_secs(30);

/// A connection lent by the pool; it goes back when dropped, unless it broke.
struct Lease<'a> {
    reader: &'a PostgresReader,
    client: Option<Client>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut pool = self.reader.lock_pool();
        match self.client.take() {
            Some(client) if !client.is_closed() && pool.idle.len() < POOL_IDLE_MAX => pool.idle.push(client),
            _ => pool.open -= 1,
        }
        drop(pool);
        self.reader.returned.notify_one();
    }
}

impl PostgresReader {
    pub(super) fn new(url: String, connections_max: usize) -> PostgresReader {
        PostgresReader {
            url,
            pool: Mutex::new(Pool { idle: Vec::new(), open: 0 }),
            returned: Condvar::new(),
            connections_max: connections_max.max(1),
        }
    }

    /// Runs `f` on a pooled connection.
    pub(super) fn with<T>(&self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let mut lease = self.lease()?;
        match lease.client.as_mut() {
            Some(client) => f(client),
            None => Err(StoreError::Internal("a lease without its connection".into())),
        }
    }

    fn lock_pool(&self) -> MutexGuard<'_, Pool> {
        // The pool's state is two plain fields, valid even if a holder panicked.
        self.pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lease(&self) -> Result<Lease<'_>> {
        let mut pool = self.lock_pool();
        loop {
            if let Some(client) = pool.idle.pop() {
                return Ok(Lease { reader: self, client: Some(client) });
            }
            if pool.open < self.connections_max {
                pool.open += 1;
                drop(pool);
                // From here the slot is the lease's: a failed connect gives it back on drop.
                let mut lease = Lease { reader: self, client: None };
                lease.client = Some(connect(&self.url)?);
                return Ok(lease);
            }
            let (next, waited) =
                self.returned.wait_timeout(pool, POOL_WAIT_MAX).unwrap_or_else(std::sync::PoisonError::into_inner);
            pool = next;
            if waited.timed_out() && pool.idle.is_empty() && pool.open >= self.connections_max {
                return Err(StoreError::Busy(format!(
                    "all {} store connections stayed in use for {} s",
                    self.connections_max,
                    POOL_WAIT_MAX.as_secs()
                )));
            }
        }
    }

    /// How many connections the pool holds (idle or lent); for tests.
    #[cfg(test)]
    pub(super) fn open_connections(&self) -> usize {
        self.lock_pool().open
    }
}

impl Reader for PostgresReader {
    fn account(&self, tenant: TenantId, id: AccountId) -> Result<Option<Account>> {
        self.with(|client| {
            client
                .query_opt(
                    "SELECT * FROM accounts WHERE id = $1 AND tenant = $2",
                    &[&id_bytes(id.0), &id_bytes(tenant.0)],
                )?
                .map(|row| account_from(&row))
                .transpose()
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
            // Newest first from each per-account index, then merged: two short index scans.
            let rows = client.query(
                "SELECT * FROM (
                     (SELECT * FROM transfers WHERE debit_account = $1 AND timestamp < $2 AND tenant = $3
                      ORDER BY timestamp DESC LIMIT $4)
                     UNION ALL
                     (SELECT * FROM transfers WHERE credit_account = $1 AND timestamp < $2 AND tenant = $3
                      ORDER BY timestamp DESC LIMIT $4)
                 ) t ORDER BY timestamp DESC LIMIT $4",
                &[&id_bytes(id.0), &before, &id_bytes(tenant.0), &limit],
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
            let Some(row) = client.query_opt("SELECT * FROM api_keys WHERE hash = $1", &[key_hash])? else {
                return Ok(None);
            };
            let scopes: &str = get(&row, "scopes")?;
            Ok(Some(ApiKeyRecord {
                id: get(&row, "id")?,
                tenant: TenantId(id(&row, "tenant")?),
                hash: hash(&row, "hash")?,
                scopes: scopes.split_whitespace().map(str::to_owned).collect(),
                created_at: uint(&row, "created_at")?,
                revoked: get(&row, "revoked")?,
            }))
        })
    }

    fn api_key_count(&self) -> Result<u64> {
        self.with(|client| {
            let n: i64 = client.query_one("SELECT count(*) FROM api_keys WHERE NOT revoked", &[])?.try_get(0)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }
}
