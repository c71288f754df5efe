//! The API's side of the SQLite store: a bounded pool of connections that see committed data
//! only, and the reads of [`Reader`].

use super::codec::{
    account_from, blob_id, id_blob, idempotency_from, opt_uint, payment_from, refund_from, shard_key, transfer_from,
    uint,
};
use super::fresh::{poisoned, Fresh};
use super::history;
use super::open::connect;
use crate::pool::Pool;
use crate::{ApiKeyRecord, ClearingSummary, IdempotencyRecord, Page, Reader, Result};
use paycore_ledger::{
    Account, AccountId, AuditRecord, ClearingWindow, ClearingWindowId, Currency, Payment, PaymentId, PaymentStatus,
    Refund, TenantId, Transfer, TransferId,
};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::PathBuf;
use std::sync::Mutex;

/// The API's reads and writes, safe to share between threads: each call borrows a connection
/// from a pool of at most `connections_max` ([`Pool`]), waiting for one when all are in use.
pub(super) struct SqliteReader {
    /// The data folder, which holds the uploaded batch files (`super::files`).
    folder: PathBuf,
    path: PathBuf,
    history: PathBuf,
    pool: Pool<Connection>,
    /// The connection that writes batch items during validation, with `synchronous=NORMAL`
    /// (see `batches::insert_items`); one writer at a time, and never lent to anything else.
    items: Mutex<Option<Connection>>,
    /// Balances committed since the last checkpoint (see [`super::commit::SqliteStore`]):
    /// newer than the rows.
    fresh: Fresh,
}

/// Connections kept idle in the pool; up to `connections_max` may be open while many requests
/// read at once, the ones past this number are closed when they come back.
const POOL_IDLE_MAX: usize = 16;

impl SqliteReader {
    pub(super) fn new(folder: PathBuf, path: PathBuf, history: PathBuf, connections_max: usize) -> SqliteReader {
        SqliteReader {
            folder,
            path,
            history,
            pool: Pool::new(connections_max, POOL_IDLE_MAX, |_| true),
            items: Mutex::new(None),
            fresh: Fresh::default(),
        }
    }

    /// The data folder.
    pub(super) fn folder(&self) -> &std::path::Path {
        &self.folder
    }

    /// The balances the engine's commits publish to the readers.
    pub(super) fn fresh(&self) -> Fresh {
        self.fresh.clone()
    }

    /// An account as `read` finds it, with its balances as last committed: the row, unless
    /// newer balances wait in memory for a checkpoint.
    pub(super) fn account_with(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<Option<Account>>,
    ) -> Result<Option<Account>> {
        // The connection first, then the lock: a call that waits for a pooled connection never
        // holds the lock the engine's commit needs.
        self.with(|conn| {
            let fresh = self.fresh.read().map_err(|_| poisoned())?;
            let account = read(conn)?;
            Ok(account.map(|mut account| {
                if let Some(balances) = fresh.get(&account.id) {
                    account.balances = *balances;
                }
                account
            }))
        })
    }

    /// Runs `f` on a pooled connection.
    pub(super) fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let mut lease = self.pool.lease(|| {
            let conn = connect(&self.path)?;
            history::attach(&conn, &self.history)?;
            Ok(conn)
        })?;
        f(lease.conn()?)
    }

    /// Runs `f` on the batch item writer's own connection, the only one at `synchronous=NORMAL`.
    pub(super) fn with_item_writer<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        // A writer that panicked left the slot empty (its connection dropped): the next one
        // opens a new connection, so the poison carries nothing to refuse.
        let mut slot = self.items.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let conn = match slot.take() {
            Some(conn) => conn,
            None => {
                let conn = connect(&self.path)?;
                // Not synced: see `batches::insert_items`.
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                conn
            }
        };
        let result = f(&conn);
        *slot = Some(conn);
        result
    }
}

impl Reader for SqliteReader {
    fn clearing_window(&self, tenant: TenantId, id: ClearingWindowId) -> Result<Option<ClearingWindow>> {
        self.with(|conn| {
            // One read transaction: the window and its positions from one snapshot.
            let tx = conn.unchecked_transaction()?;
            let window = super::clearing::window(&tx, tenant, id)?;
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
        self.with(|conn| super::clearing::windows(conn, tenant, currency, page))
    }

    fn account(&self, tenant: TenantId, id: AccountId) -> Result<Option<Account>> {
        self.account_with(|conn| {
            conn.prepare_cached("SELECT * FROM accounts WHERE shard = ?3 AND id = ?1 AND tenant = ?2")?
                .query_row(params![id_blob(id.0), id_blob(tenant.0), shard_key(id)], account_from)
                .optional()
        })
    }

    fn account_transfers(&self, tenant: TenantId, id: AccountId, page: Page<TransferId>) -> Result<Vec<Transfer>> {
        self.with(|conn| {
            let before = match page.after {
                None => i64::MAX,
                Some(cursor) => {
                    let ts: Option<i64> = conn
                        .prepare_cached("SELECT timestamp FROM transfers WHERE id = ?1 AND tenant = ?2")?
                        .query_row(params![id_blob(cursor.0), id_blob(tenant.0)], |r| r.get(0))
                        .optional()?;
                    match ts {
                        Some(ts) => ts,
                        None => return Ok(Vec::new()),
                    }
                }
            };
            let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
            // One read transaction over both files: the watermark and the entries below it
            // come from one snapshot of history.db, and the main database is never behind it.
            let tx = conn.unchecked_transaction()?;
            let watermark: i64 = tx.query_row("SELECT timestamp FROM history.watermark", [], |r| r.get(0))?;
            // Newest first: the unindexed tail (timestamps above the watermark), a range of the
            // table's key ...
            let mut rows = tx
                .prepare_cached(
                    "SELECT * FROM transfers
                     WHERE timestamp > ?1 AND timestamp < ?2 AND (debit_account = ?3 OR credit_account = ?3)
                       AND tenant = ?4
                     ORDER BY timestamp DESC LIMIT ?5",
                )?
                .query_map(params![watermark, before, id_blob(id.0), id_blob(tenant.0), limit], transfer_from)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            // ... then the indexed part, newest first.
            let rest = page.limit.saturating_sub(rows.len());
            let timestamps = history::indexed(&tx, id.0, before.min(watermark.saturating_add(1)), rest)?;
            let mut stmt = tx.prepare_cached("SELECT * FROM transfers WHERE timestamp = ?1 AND tenant = ?2")?;
            for timestamp in timestamps {
                if let Some(t) = stmt.query_row(params![timestamp, id_blob(tenant.0)], transfer_from).optional()? {
                    rows.push(t);
                }
            }
            Ok(rows)
        })
    }

    fn transfer(&self, tenant: TenantId, id: TransferId) -> Result<Option<Transfer>> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT * FROM transfers WHERE id = ?1 AND tenant = ?2")?
                .query_row(params![id_blob(id.0), id_blob(tenant.0)], transfer_from)
                .optional()?)
        })
    }

    fn payment(&self, tenant: TenantId, id: PaymentId) -> Result<Option<Payment>> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT * FROM payments WHERE id = ?1 AND tenant = ?2")?
                .query_row(params![id_blob(id.0), id_blob(tenant.0)], payment_from)
                .optional()?)
        })
    }

    fn payments(&self, tenant: TenantId, status: Option<PaymentStatus>, page: Page<PaymentId>) -> Result<Vec<Payment>> {
        let before = id_blob(page.after.map_or(u128::MAX, |id| id.0));
        let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
        self.with(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT * FROM payments WHERE tenant = ?1 AND (?2 IS NULL OR status = ?2) AND id < ?3
                     ORDER BY id DESC LIMIT ?4",
                )?
                .query_map(params![id_blob(tenant.0), status.map(PaymentStatus::as_str), before, limit], payment_from)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn refunds(&self, tenant: TenantId, payment: PaymentId) -> Result<Vec<Refund>> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT * FROM refunds WHERE payment = ?1 AND tenant = ?2 ORDER BY created_at")?
                .query_map(params![id_blob(payment.0), id_blob(tenant.0)], refund_from)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn idempotency(&self, tenant: TenantId, key: &str) -> Result<Option<IdempotencyRecord>> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT * FROM idempotency WHERE tenant = ?1 AND key = ?2")?
                .query_row(params![id_blob(tenant.0), key], idempotency_from)
                .optional()?)
        })
    }

    fn api_key(&self, hash: &[u8; 32]) -> Result<Option<ApiKeyRecord>> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT * FROM api_keys WHERE hash = ?1 OR previous_hash = ?1")?
                .query_row([hash], |row| api_key_from(row, Some(hash)))
                .optional()?)
        })
    }

    fn api_key_count(&self) -> Result<u64> {
        self.with(|conn| {
            let n: i64 = conn.query_row("SELECT count(*) FROM api_keys WHERE revoked = 0", [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn account_audit(&self, tenant: TenantId, account: AccountId, page: Page<u64>) -> Result<Vec<AuditRecord>> {
        self.with(|conn| super::limits::account_audit(conn, tenant, account, page.after, page.limit))
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
        self.with(|conn| {
            // One read transaction over both files, as in `account_transfers`.
            let tx = conn.unchecked_transaction()?;
            let watermark: i64 = tx.query_row("SELECT timestamp FROM history.watermark", [], |r| r.get(0))?;
            // Oldest first: the indexed part (at or below the watermark) ...
            let timestamps = history::indexed_ascending(&tx, id.0, from, to.min(watermark.saturating_add(1)), limit)?;
            let mut rows = Vec::with_capacity(timestamps.len());
            let mut stmt = tx.prepare_cached("SELECT * FROM transfers WHERE timestamp = ?1 AND tenant = ?2")?;
            for timestamp in timestamps {
                if let Some(t) = stmt.query_row(params![timestamp, id_blob(tenant.0)], transfer_from).optional()? {
                    rows.push(t);
                }
            }
            // ... then the unindexed tail above it, a range of the table's key.
            let rest = limit.saturating_sub(rows.len());
            if rest > 0 && to > watermark {
                let tail = tx
                    .prepare_cached(
                        "SELECT * FROM transfers
                         WHERE timestamp > ?1 AND timestamp >= ?2 AND timestamp < ?3
                           AND (debit_account = ?4 OR credit_account = ?4) AND tenant = ?5
                         ORDER BY timestamp LIMIT ?6",
                    )?
                    .query_map(
                        params![
                            watermark,
                            from,
                            to,
                            id_blob(id.0),
                            id_blob(tenant.0),
                            i64::try_from(rest).unwrap_or(i64::MAX)
                        ],
                        transfer_from,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                rows.extend(tail);
            }
            Ok(rows)
        })
    }

    fn lag(&self) -> Result<Vec<crate::Lag>> {
        self.with(|conn| {
            // One read transaction over both files, as the listings read them.
            let tx = conn.unchecked_transaction()?;
            let clock: Option<i64> = tx
                .query_row("SELECT timestamp FROM transfers ORDER BY timestamp DESC LIMIT 1", [], |r| r.get(0))
                .optional()?;
            let history: i64 = tx.query_row("SELECT timestamp FROM history.watermark", [], |r| r.get(0))?;
            let balances = super::commit::balances_through(&tx)?.earliest();
            tx.commit()?;
            let stamp = |t: i64| u64::try_from(t).unwrap_or(0);
            Ok(vec![crate::Lag {
                partition: 0,
                clock: clock.map_or(0, stamp),
                history_through: stamp(history),
                balances_through: balances,
            }])
        })
    }
}

/// An `api_keys` row; when `found_by` is the secret a rotation replaced, the record is that
/// secret's: its hash, and the end of its overlap as the expiry.
pub(super) fn api_key_from(row: &rusqlite::Row, found_by: Option<&[u8; 32]>) -> rusqlite::Result<ApiKeyRecord> {
    let scopes: String = row.get("scopes")?;
    let revoked: i64 = row.get("revoked")?;
    let mut record = ApiKeyRecord {
        id: row.get("id")?,
        tenant: TenantId(blob_id(row, "tenant")?),
        hash: row.get("hash")?,
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        created_at: uint(row, "created_at")?,
        revoked: revoked != 0,
        expires_at: opt_uint(row, "expires_at")?,
    };
    let previous: Option<[u8; 32]> = row.get("previous_hash")?;
    if let (Some(found_by), Some(previous)) = (found_by, previous) {
        if *found_by == previous && *found_by != record.hash {
            record.hash = previous;
            // Stored never past the key's own expiry; no overlap end stored is a secret
            // that already stopped.
            record.expires_at = Some(opt_uint(row, "previous_expires_at")?.unwrap_or(0));
        }
    }
    Ok(record)
}
