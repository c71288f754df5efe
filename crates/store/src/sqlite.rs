//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`, so a commit is on
//! disk (fsync) before it returns.
//!
//! One writer connection belongs to the engine ([`SqliteStore`]); readers ([`SqliteReader`])
//! share a small pool of connections and see committed data only. An exclusive lock on
//! `<data>/LOCK` keeps a second process from opening the same data folder: two writers would
//! mean two engines, and two engines can spend the same money twice.

use crate::history::{self, Indexer, HISTORY_FILE};
use crate::{ApiKeyRecord, IdempotencyRecord, Loaded, Page, Reader, Recovered, Result, Store, StoreError};
use paycore_ledger::{
    Account, AccountId, Balances, CaptureMethod, ChangeSet, Currency, HoldRecord, HoldStatus, Overdraft, Payment,
    PaymentId, PaymentStatus, Prefetch, Refund, RefundId, RefundStatus, ResultCode, TenantId, Transfer, TransferId,
    TransferKind,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_batches.sql"),
    include_str!("../migrations/0003_tenants_webhooks.sql"),
    include_str!("../migrations/0004_history_out_of_commit.sql"),
    include_str!("../migrations/0005_balances_checkpoint.sql"),
    include_str!("../migrations/0006_batch_results.sql"),
];

const DATABASE_FILE: &str = "paycore.db";
const LOCK_FILE: &str = "LOCK";

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// Opens (creating if needed) the data folder: migrates the schema, locks the folder, and
/// returns the engine's writer and the API's reader.
pub fn open(data_dir: &Path) -> Result<(SqliteStore, SqliteReader)> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| StoreError::Database(format!("cannot create {}: {e}", data_dir.display())))?;
    let lock = File::create(data_dir.join(LOCK_FILE))
        .map_err(|e| StoreError::Database(format!("cannot create the lock file: {e}")))?;
    lock.try_lock().map_err(|_| {
        StoreError::Database(format!(
            "{} is in use by another paycore process (its LOCK file is held)",
            data_dir.display()
        ))
    })?;
    let path = data_dir.join(DATABASE_FILE);
    let mut writer = connect(&path)?;
    migrate(&mut writer)?;
    // The engine's connection is used by the engine thread only: no SQLite mutex around each
    // call. A larger page cache keeps the accounts and the B-trees' right edges in memory.
    writer.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    // When another connection holds the write lock (an API key, a batch's items, the webhook
    // fan-out), SQLite's default busy handler sleeps 1, 2, 5, 10 … ms between tries; the engine
    // retries every 50 µs instead, so that it never waits much longer than the lock is held.
    writer.busy_handler(Some(engine_busy))?;
    // WAL checkpoints: see [`Checkpointer`].
    writer.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
    let checkpointer = Checkpointer::start(&path)?;
    let history_path = data_dir.join(HISTORY_FILE);
    let indexer = Indexer::start(path.clone(), history::open_for_writing(&writer, &history_path)?)?;
    let reader = SqliteReader::new(path, history_path);
    let store = SqliteStore {
        conn: writer,
        indexer,
        _checkpointer: checkpointer,
        fresh: reader.fresh.clone(),
        checkpointed_at: Instant::now(),
        _lock: lock,
    };
    Ok((store, reader))
}

/// The engine connection's busy handler: retry every 50 µs, for up to 5 s in all.
fn engine_busy(attempt: i32) -> bool {
    std::thread::sleep(Duration::from_micros(50));
    attempt < 100_000
}

/// The engine connection's page cache, in KiB.
const WRITER_CACHE_KIB: i64 = 64 * 1024;

/// WAL frames after which a commit checkpoints (SQLite's `wal_autocheckpoint`; its default).
const WAL_CHECKPOINT_PAGES: i64 = 1000;
/// How often the [`Checkpointer`] copies what the commits appended to the WAL.
const CHECKPOINT_POLL: Duration = Duration::from_millis(20);

/// Copies the frames that commits append to the WAL into the database file, on a thread and
/// connection of its own (a passive checkpoint every [`CHECKPOINT_POLL`]: it never waits for,
/// nor holds up, the engine's commits or the readers).
///
/// SQLite checkpoints inside the commit that takes the WAL past `wal_autocheckpoint` frames:
/// a profile of payments at 64 clients put 18% of the engine thread's time there, and those
/// commits are the slow tail of the commit times. (Raising the threshold to 10 000 frames cut
/// that share to 5% but made each checkpoint long: the payments' p99 went from 11 to 30 ms.)
/// The WAL can only start over from its beginning once every frame is in the database file,
/// which a checkpoint racing the commits never quite reaches; so the commits keep their
/// automatic checkpoint, which now finds all but the last few milliseconds of frames copied,
/// finishes the copy, and lets the next commit restart the WAL. Checkpoints run with
/// `synchronous=FULL` (the WAL is synced before frames are copied, the database file after)
/// and never change what is committed: nothing acknowledged depends on this thread.
struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Checkpointer> {
        let conn = connect(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("paycore-checkpoint".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                        if let Err(error) = result {
                            tracing::warn!(%error, "WAL checkpoint failed; the commits' own checkpoints go on");
                        }
                        std::thread::park_timeout(CHECKPOINT_POLL);
                    }
                })
                .map_err(|e| StoreError::Database(format!("cannot start the checkpointer: {e}")))?
        };
        Ok(Checkpointer { stop, thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// Opens a data folder read-only for offline checks; fails if a server holds it.
pub fn open_reader(data_dir: &Path) -> Result<SqliteReader> {
    let path = data_dir.join(DATABASE_FILE);
    if !path.exists() {
        return Err(StoreError::Database(format!("{} has no paycore database", data_dir.display())));
    }
    Ok(SqliteReader::new(path, data_dir.join(HISTORY_FILE)))
}

fn connect(path: &Path) -> Result<Connection> {
    // Each connection is used by one thread at a time (the engine's, or a reader borrowed from
    // the pool): SQLite's own mutexes would only add cost.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if version > known {
        return Err(StoreError::SchemaTooNew { found: version, known });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
    }
    Ok(())
}

// Conversions between ledger values and columns.

pub(crate) fn id_blob(id: u128) -> [u8; 16] {
    id.to_be_bytes()
}

pub(crate) fn blob_id(row: &Row, column: &str) -> rusqlite::Result<u128> {
    let bytes: [u8; 16] = row.get(column)?;
    Ok(u128::from_be_bytes(bytes))
}

pub(crate) fn opt_blob_id(row: &Row, column: &str) -> rusqlite::Result<Option<u128>> {
    let bytes: Option<[u8; 16]> = row.get(column)?;
    Ok(bytes.map(u128::from_be_bytes))
}

/// Amounts and counters are at most `i64::MAX`, so they fit SQLite's integers exactly.
pub(crate) fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn uint(row: &Row, column: &str) -> rusqlite::Result<u64> {
    let value: i64 = row.get(column)?;
    u64::try_from(value).map_err(|_| corrupt(column, "a negative amount or time"))
}

pub(crate) fn opt_uint(row: &Row, column: &str) -> rusqlite::Result<Option<u64>> {
    let value: Option<i64> = row.get(column)?;
    value.map(|v| u64::try_from(v).map_err(|_| corrupt(column, "a negative amount or time"))).transpose()
}

fn corrupt(column: &str, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("column {column} holds {what}").into(),
    )
}

fn parsed<T>(row: &Row, column: &str, parse: impl Fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let text: String = row.get(column)?;
    parse(&text).ok_or_else(|| corrupt(column, &format!("unknown value {text:?}")))
}

fn currency(row: &Row) -> rusqlite::Result<Currency> {
    parsed(row, "currency", Currency::from_code)
}

pub(crate) fn account_from(row: &Row) -> rusqlite::Result<Account> {
    Ok(Account {
        id: AccountId(blob_id(row, "id")?),
        tenant: TenantId(blob_id(row, "tenant")?),
        currency: currency(row)?,
        overdraft: match opt_uint(row, "overdraft_limit")? {
            Some(limit) => Overdraft::Limit(limit),
            None => Overdraft::Unlimited,
        },
        reference: row.get("reference")?,
        metadata: row.get("metadata")?,
        balances: Balances {
            debits_posted: uint(row, "debits_posted")?,
            credits_posted: uint(row, "credits_posted")?,
            debits_pending: uint(row, "debits_pending")?,
            credits_pending: uint(row, "credits_pending")?,
        },
        created_at: uint(row, "created_at")?,
    })
}

pub(crate) fn transfer_from(row: &Row) -> rusqlite::Result<Transfer> {
    Ok(Transfer {
        id: TransferId(blob_id(row, "id")?),
        tenant: TenantId(blob_id(row, "tenant")?),
        debit_account: AccountId(blob_id(row, "debit_account")?),
        credit_account: AccountId(blob_id(row, "credit_account")?),
        amount: uint(row, "amount")?,
        currency: currency(row)?,
        kind: parsed(row, "kind", TransferKind::parse)?,
        pending_id: opt_blob_id(row, "pending_id")?.map(TransferId),
        expires_at: opt_uint(row, "expires_at")?,
        timestamp: uint(row, "timestamp")?,
    })
}

// Columns by position: naming a column scans the statement's column names for every value,
// which costs more than the value for rows read by the thousand (replay, batch items).

pub(crate) fn uint_at(row: &Row, i: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(i)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(i, value))
}

pub(crate) fn id_at(row: &Row, i: usize) -> rusqlite::Result<Option<u128>> {
    let bytes: Option<[u8; 16]> = row.get(i)?;
    Ok(bytes.map(u128::from_be_bytes))
}

pub(crate) fn currency_at(row: &Row, i: usize) -> rusqlite::Result<Option<Currency>> {
    Ok(match row.get_ref(i)? {
        rusqlite::types::ValueRef::Text(code) => std::str::from_utf8(code).ok().and_then(Currency::from_code),
        _ => None,
    })
}

/// The columns [`transfer_at`] decodes, in its order.
const TRANSFER_SELECT: &str =
    "id, tenant, debit_account, credit_account, amount, currency, kind, pending_id, expires_at, timestamp";

/// A transfer selected as [`TRANSFER_SELECT`], read by position.
fn transfer_at(row: &Row) -> rusqlite::Result<Transfer> {
    let unknown = |i: usize, what: &str| corrupt(TRANSFER_SELECT.split(", ").nth(i).unwrap_or("?"), what);
    let id = |i: usize| id_at(row, i)?.ok_or_else(|| unknown(i, "NULL"));
    let kind = row.get_ref(6)?.as_str()?;
    let expires_at: Option<i64> = row.get(8)?;
    Ok(Transfer {
        id: TransferId(id(0)?),
        tenant: TenantId(id(1)?),
        debit_account: AccountId(id(2)?),
        credit_account: AccountId(id(3)?),
        amount: uint_at(row, 4)?,
        currency: currency_at(row, 5)?.ok_or_else(|| unknown(5, "an unknown currency"))?,
        kind: TransferKind::parse(kind).ok_or_else(|| unknown(6, "an unknown kind"))?,
        pending_id: id_at(row, 7)?.map(TransferId),
        expires_at: expires_at.map(|v| u64::try_from(v).map_err(|_| unknown(8, "a negative time"))).transpose()?,
        timestamp: uint_at(row, 9)?,
    })
}

fn hold_from(row: &Row) -> rusqlite::Result<HoldRecord> {
    Ok(HoldRecord {
        transfer: transfer_from(row)?,
        status: parsed(row, "status", HoldStatus::parse)?,
        payment: opt_blob_id(row, "payment")?.map(PaymentId),
    })
}

pub(crate) fn payment_from(row: &Row) -> rusqlite::Result<Payment> {
    let failure: Option<String> = row.get("failure_code")?;
    Ok(Payment {
        id: PaymentId(blob_id(row, "id")?),
        tenant: TenantId(blob_id(row, "tenant")?),
        payer: AccountId(blob_id(row, "payer")?),
        payee: AccountId(blob_id(row, "payee")?),
        amount: uint(row, "amount")?,
        currency: currency(row)?,
        capture_method: parsed(row, "capture_method", CaptureMethod::parse)?,
        status: parsed(row, "status", PaymentStatus::parse)?,
        description: row.get("description")?,
        failure_code: failure.map(|f| ResultCode::parse(&f).ok_or_else(|| corrupt("failure_code", &f))).transpose()?,
        amount_captured: uint(row, "amount_captured")?,
        amount_refunded: uint(row, "amount_refunded")?,
        expires_at: uint(row, "expires_at")?,
        created_at: uint(row, "created_at")?,
        updated_at: uint(row, "updated_at")?,
        transfer: opt_blob_id(row, "transfer")?.map(TransferId),
    })
}

pub(crate) fn refund_from(row: &Row) -> rusqlite::Result<Refund> {
    let failure: Option<String> = row.get("failure_code")?;
    Ok(Refund {
        id: RefundId(blob_id(row, "id")?),
        tenant: TenantId(blob_id(row, "tenant")?),
        payment: PaymentId(blob_id(row, "payment")?),
        amount: uint(row, "amount")?,
        currency: currency(row)?,
        status: parsed(row, "status", RefundStatus::parse)?,
        failure_code: failure.map(|f| ResultCode::parse(&f).ok_or_else(|| corrupt("failure_code", &f))).transpose()?,
        transfer: TransferId(blob_id(row, "transfer")?),
        created_at: uint(row, "created_at")?,
    })
}

fn idempotency_from(row: &Row) -> rusqlite::Result<IdempotencyRecord> {
    let status: i64 = row.get("status")?;
    Ok(IdempotencyRecord {
        tenant: TenantId(blob_id(row, "tenant")?),
        key: row.get("key")?,
        fingerprint: row.get("fingerprint")?,
        status: u16::try_from(status).map_err(|_| corrupt("status", "an invalid HTTP status"))?,
        body: row.get("body")?,
        created_at: uint(row, "created_at")?,
    })
}

const HOLD_COLUMNS: &str = "SELECT t.*, h.status, h.payment FROM holds h JOIN transfers t ON t.id = h.id";

/// Balances committed since the last checkpoint, newer than the `accounts` rows (shared with
/// the readers). The engine holds the write lock from just before a commit becomes visible
/// until the map has its balances, and a reader holds the read lock while it reads an account,
/// so that no reader sees a commit's other rows (a batch's counters, a transfer) without its
/// balances, or the rows of a checkpoint without the map it clears.
type Fresh = Arc<RwLock<HashMap<AccountId, Balances>>>;

/// The most accounts whose balances wait for a checkpoint (bounds the memory of `Fresh`).
const FRESH_MAX: usize = 200_000;
/// The longest balances wait for a checkpoint while batches keep committing; a restart replays
/// the transfers since the last one.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The engine's connection.
///
/// A commit appends transfers but does not rewrite the balances of the accounts they touch:
/// rewriting ~8 000 account rows per 8 189-transfer batch was half of the commit's statements.
/// Committed balances wait in memory (`fresh`, which readers consult first) and are written to
/// `accounts` by a checkpoint (every [`CHECKPOINT_EVERY`], inside a commit), which also records
/// `meta.balances_through`, the timestamp they are valid at. Balances are a function of the
/// transfers, so nothing acknowledged depends on the checkpoint: after a crash, `recover`
/// replays the transfers after `balances_through` and checkpoints at once.
pub struct SqliteStore {
    conn: Connection,
    /// Keeps `history.db` up with `transfers`; stops with the store.
    indexer: Indexer,
    /// Copies the WAL into the database file beside the commits; stops with the store.
    _checkpointer: Checkpointer,
    fresh: Fresh,
    checkpointed_at: Instant,
    /// Held for as long as the store lives.
    _lock: File,
}

impl Store for SqliteStore {
    fn recover(&mut self) -> Result<Recovered> {
        self.replay_balances()?;
        let conn = &self.conn;
        let accounts = conn
            .prepare("SELECT * FROM accounts")?
            .query_map([], account_from)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let open_holds = conn
            .prepare(&format!("{HOLD_COLUMNS} WHERE h.status = 'pending'"))?
            .query_map([], hold_from)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let open_payments = conn
            .prepare("SELECT * FROM payments WHERE status IN ('requires_confirmation', 'requires_capture')")?
            .query_map([], payment_from)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let last: Option<i64> =
            conn.query_row("SELECT value FROM meta WHERE key = 'last_timestamp'", [], |r| r.get(0)).optional()?;
        // The primary key's last entry: one B-tree descent.
        let max_transfer_id: Option<[u8; 16]> = conn.query_row("SELECT max(id) FROM transfers", [], |r| r.get(0))?;
        let max_payment_id: Option<[u8; 16]> = conn.query_row("SELECT max(id) FROM payments", [], |r| r.get(0))?;
        Ok(Recovered {
            accounts,
            open_holds,
            open_payments,
            last_timestamp: u64::try_from(last.unwrap_or(0)).unwrap_or(0),
            max_transfer_id: max_transfer_id.map(|b| TransferId(u128::from_be_bytes(b))),
            max_payment_id: max_payment_id.map(|b| PaymentId(u128::from_be_bytes(b))),
        })
    }

    fn load(&mut self, wanted: &Prefetch) -> Result<Loaded> {
        let mut loaded = Loaded::default();
        let mut ids: Vec<u128> = wanted.transfers.iter().map(|id| id.0).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut point = self.conn.prepare_cached("SELECT * FROM transfers WHERE id = ?1")?;
        let mut range = self.conn.prepare_cached("SELECT * FROM transfers WHERE id BETWEEN ?1 AND ?2")?;
        // Close ids (a batch's items: the batch id with the item's index in the low bits) are
        // read with one range scan instead of a lookup each.
        for run in ids.chunk_by(|a, b| b - a <= RUN_GAP_MAX) {
            if let [id] = run {
                if let Some(t) = point.query_row([id_blob(*id)], transfer_from).optional()? {
                    loaded.transfers.push(t);
                }
                continue;
            }
            let (first, last) = (run[0], run[run.len() - 1]);
            let mut rows = range.query([id_blob(first), id_blob(last)])?;
            while let Some(row) = rows.next()? {
                let t = transfer_from(row)?;
                if run.binary_search(&t.id.0).is_ok() {
                    loaded.transfers.push(t);
                }
            }
        }
        let mut stmt = self.conn.prepare_cached(&format!("{HOLD_COLUMNS} WHERE h.id = ?1"))?;
        for id in &wanted.holds {
            if let Some(h) = stmt.query_row([id_blob(id.0)], hold_from).optional()? {
                loaded.holds.push(h);
            }
        }
        let mut stmt = self.conn.prepare_cached("SELECT * FROM payments WHERE id = ?1")?;
        for id in &wanted.payments {
            if let Some(p) = stmt.query_row([id_blob(id.0)], payment_from).optional()? {
                loaded.payments.push(p);
            }
        }
        Ok(loaded)
    }

    fn idempotency(&mut self, keys: &[(TenantId, &str)]) -> Result<Vec<IdempotencyRecord>> {
        let mut stmt = self.conn.prepare_cached("SELECT * FROM idempotency WHERE tenant = ?1 AND key = ?2")?;
        let mut found = Vec::new();
        for (tenant, key) in keys {
            if let Some(r) = stmt.query_row(params![id_blob(tenant.0), key], idempotency_from).optional()? {
                found.push(r);
            }
        }
        Ok(found)
    }

    fn commit(&mut self, changes: &ChangeSet, idempotency: &[IdempotencyRecord]) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO accounts (id, tenant, currency, overdraft_limit, reference, metadata,
                     debits_posted, credits_posted, debits_pending, credits_pending, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 0, 0, 0, ?7)",
            )?;
            for account in &changes.new_accounts {
                let limit = match account.overdraft {
                    Overdraft::Limit(limit) => Some(int(limit)),
                    Overdraft::Unlimited => None,
                };
                stmt.execute(params![
                    id_blob(account.id.0),
                    id_blob(account.tenant.0),
                    account.currency.code(),
                    limit,
                    account.reference,
                    account.metadata,
                    int(account.created_at),
                ])?;
            }
            insert_transfers(&tx, &changes.transfers)?;
            let mut stmt = tx.prepare_cached(
                "INSERT INTO holds (id, status, payment) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET status = excluded.status",
            )?;
            for h in &changes.holds {
                stmt.execute(params![id_blob(h.transfer.id.0), h.status.as_str(), h.payment.map(|p| id_blob(p.0))])?;
            }
            let mut stmt = tx.prepare_cached(
                "INSERT INTO payments (id, tenant, payer, payee, amount, currency, capture_method,
                     status, description, failure_code, amount_captured, amount_refunded,
                     expires_at, created_at, updated_at, transfer)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
                 ON CONFLICT (id) DO UPDATE SET status = excluded.status,
                     failure_code = excluded.failure_code, amount_captured = excluded.amount_captured,
                     amount_refunded = excluded.amount_refunded, updated_at = excluded.updated_at,
                     transfer = excluded.transfer",
            )?;
            for p in &changes.payments {
                stmt.execute(params![
                    id_blob(p.id.0),
                    id_blob(p.tenant.0),
                    id_blob(p.payer.0),
                    id_blob(p.payee.0),
                    int(p.amount),
                    p.currency.code(),
                    p.capture_method.as_str(),
                    p.status.as_str(),
                    p.description,
                    p.failure_code.map(ResultCode::as_str),
                    int(p.amount_captured),
                    int(p.amount_refunded),
                    int(p.expires_at),
                    int(p.created_at),
                    int(p.updated_at),
                    p.transfer.map(|t| id_blob(t.0)),
                ])?;
            }
            let mut stmt = tx.prepare_cached(
                "INSERT INTO refunds (id, tenant, payment, amount, currency, status, failure_code,
                     transfer, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for r in &changes.refunds {
                stmt.execute(params![
                    id_blob(r.id.0),
                    id_blob(r.tenant.0),
                    id_blob(r.payment.0),
                    int(r.amount),
                    r.currency.code(),
                    r.status.as_str(),
                    r.failure_code.map(ResultCode::as_str),
                    id_blob(r.transfer.0),
                    int(r.created_at),
                ])?;
            }
            let mut stmt = tx.prepare_cached(
                "INSERT INTO idempotency (tenant, key, fingerprint, status, body, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for r in idempotency {
                stmt.execute(params![id_blob(r.tenant.0), r.key, r.fingerprint, r.status, r.body, int(r.created_at)])?;
            }
            let mut stmt =
                tx.prepare_cached("INSERT INTO outbox (tenant, type, object, created_at) VALUES (?1, ?2, ?3, ?4)")?;
            for (tenant, kind, object) in &changes.events {
                stmt.execute(params![id_blob(tenant.0), kind, id_blob(*object), int(changes.last_timestamp)])?;
            }
            crate::batches::commit_batch_changes(&tx, changes)?;
            tx.prepare_cached(
                "INSERT INTO meta (key, value) VALUES ('last_timestamp', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute([int(changes.last_timestamp)])?;
        }
        let fresh_len = self.fresh.read().map_or(FRESH_MAX, |f| f.len());
        let checkpoint = fresh_len + changes.balances.len() > FRESH_MAX
            || (self.checkpointed_at.elapsed() >= CHECKPOINT_EVERY && fresh_len + changes.balances.len() > 0);
        if checkpoint {
            let mut all: HashMap<AccountId, Balances> =
                self.fresh.read().map_err(|_| poisoned())?.iter().map(|(id, b)| (*id, *b)).collect();
            all.extend(changes.balances.iter().copied());
            write_balances(&tx, all.into_iter(), changes.last_timestamp)?;
        }
        let mut fresh = self.fresh.write().map_err(|_| poisoned())?;
        tx.commit()?;
        if checkpoint {
            fresh.clear();
            self.checkpointed_at = Instant::now();
        } else {
            fresh.extend(changes.balances.iter().copied());
        }
        drop(fresh);
        self.indexer.committed(changes.transfers.len());
        Ok(())
    }
}

/// Rows per `INSERT` statement for the bulk inserts (transfers, batch items): one statement
/// per row cost more in statement set-up and tear-down than in the B-tree work itself.
pub(crate) const ROWS_PER_INSERT: usize = 64;
const TRANSFER_COLUMNS: usize = 10;

/// Inserts `rows` with `head` (`INSERT INTO t (…) VALUES `) and [`ROWS_PER_INSERT`] rows of
/// `columns` parameters per statement; `bind` binds one row's values after an offset.
pub(crate) fn insert_rows<T>(
    conn: &Connection,
    head: &str,
    columns: usize,
    rows: &[T],
    mut bind: impl FnMut(&mut rusqlite::Statement<'_>, usize, &T) -> rusqlite::Result<()>,
) -> Result<()> {
    let row = format!("({})", vec!["?"; columns].join(", "));
    let many = format!("{head}{}", vec![row.as_str(); ROWS_PER_INSERT].join(", "));
    let mut chunks = rows.chunks_exact(ROWS_PER_INSERT);
    let mut stmt = conn.prepare_cached(&many)?;
    for chunk in &mut chunks {
        for (i, value) in chunk.iter().enumerate() {
            bind(&mut stmt, i * columns, value)?;
        }
        stmt.raw_execute()?;
    }
    let mut stmt = conn.prepare_cached(&format!("{head}{row}"))?;
    for value in chunks.remainder() {
        bind(&mut stmt, 0, value)?;
        stmt.raw_execute()?;
    }
    Ok(())
}

fn insert_transfers(tx: &Connection, transfers: &[Transfer]) -> Result<()> {
    let head = "INSERT INTO transfers (id, tenant, debit_account, credit_account, amount, currency, kind, pending_id,
                    expires_at, timestamp) VALUES ";
    insert_rows(tx, head, TRANSFER_COLUMNS, transfers, bind_transfer)
}

/// Binds one transfer's columns, in `insert_transfers`' order, after `offset` parameters.
fn bind_transfer(stmt: &mut rusqlite::Statement<'_>, offset: usize, t: &Transfer) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(offset + 1, id_blob(t.id.0))?;
    stmt.raw_bind_parameter(offset + 2, id_blob(t.tenant.0))?;
    stmt.raw_bind_parameter(offset + 3, id_blob(t.debit_account.0))?;
    stmt.raw_bind_parameter(offset + 4, id_blob(t.credit_account.0))?;
    stmt.raw_bind_parameter(offset + 5, int(t.amount))?;
    stmt.raw_bind_parameter(offset + 6, t.currency.code())?;
    stmt.raw_bind_parameter(offset + 7, t.kind.as_str())?;
    stmt.raw_bind_parameter(offset + 8, t.pending_id.map(|p| id_blob(p.0)))?;
    stmt.raw_bind_parameter(offset + 9, t.expires_at.map(int))?;
    stmt.raw_bind_parameter(offset + 10, int(t.timestamp))
}

/// Ids closer than this are read with one range scan in [`SqliteStore::load`].
const RUN_GAP_MAX: u128 = 1 << 16;

fn poisoned() -> StoreError {
    StoreError::Database("a thread panicked while holding the balances in memory".into())
}

/// Writes `balances` to `accounts` and records the timestamp they are valid at.
fn write_balances(
    conn: &Connection,
    balances: impl Iterator<Item = (AccountId, Balances)>,
    through: u64,
) -> Result<()> {
    let mut balances: Vec<(AccountId, Balances)> = balances.collect();
    // In key order: each page of `accounts` is visited once.
    balances.sort_unstable_by_key(|(id, _)| *id);
    let mut stmt = conn.prepare_cached(
        "UPDATE accounts SET debits_posted = ?2, credits_posted = ?3, debits_pending = ?4,
             credits_pending = ?5 WHERE id = ?1",
    )?;
    for (id, b) in &balances {
        let updated = stmt.execute(params![
            id_blob(id.0),
            int(b.debits_posted),
            int(b.credits_posted),
            int(b.debits_pending),
            int(b.credits_pending),
        ])?;
        if updated != 1 {
            return Err(StoreError::Corrupt(format!("balance update for missing account {id}")));
        }
    }
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('balances_through', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [int(through)],
    )?;
    Ok(())
}

/// The timestamp the balances in `accounts` are valid at: every transfer after it is replayed
/// on them to get the balances now.
pub(crate) fn balances_through(conn: &Connection) -> Result<i64> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = 'balances_through'", [], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

impl Drop for SqliteStore {
    /// A last checkpoint, so that the next start has nothing to replay (best effort: `recover`
    /// replays whatever is missing).
    fn drop(&mut self) {
        let result = (|| -> Result<()> {
            let balances: Vec<(AccountId, Balances)> =
                self.fresh.read().map_err(|_| poisoned())?.iter().map(|(id, b)| (*id, *b)).collect();
            if balances.is_empty() {
                return Ok(());
            }
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let last: i64 = tx.query_row("SELECT value FROM meta WHERE key = 'last_timestamp'", [], |r| r.get(0))?;
            write_balances(&tx, balances.into_iter(), u64::try_from(last).unwrap_or(0))?;
            let mut fresh = self.fresh.write().map_err(|_| poisoned())?;
            tx.commit()?;
            fresh.clear();
            Ok(())
        })();
        if let Err(error) = result {
            tracing::warn!(%error, "no checkpoint of the balances at shutdown; the next start replays them");
        }
    }
}

impl SqliteStore {
    /// Brings `accounts` up to date with the transfers (after a crash, the balances of up to
    /// [`CHECKPOINT_EVERY`] of batches were only in memory) and checkpoints them.
    fn replay_balances(&mut self) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let through = balances_through(&tx)?;
        let mut replayed: HashMap<AccountId, Balances> = HashMap::new();
        let mut last = None;
        {
            let mut tail = tx
                .prepare(&format!("SELECT {TRANSFER_SELECT} FROM transfers WHERE timestamp > ?1 ORDER BY timestamp"))?;
            let mut account = tx.prepare_cached("SELECT * FROM accounts WHERE id = ?1")?;
            let mut held = tx.prepare_cached("SELECT amount FROM transfers WHERE id = ?1")?;
            let mut rows = tail.query([through])?;
            while let Some(row) = rows.next()? {
                let t = transfer_at(row)?;
                let held = match t.pending_id {
                    None => 0,
                    Some(p) => held
                        .query_row([id_blob(p.0)], |r| r.get::<_, i64>(0))
                        .optional()?
                        .and_then(|a| u64::try_from(a).ok())
                        .ok_or_else(|| StoreError::Corrupt(format!("{} resolves a missing hold {p}", t.id)))?,
                };
                let mut balances = |id: AccountId| -> Result<Balances> {
                    if let Some(b) = replayed.get(&id) {
                        return Ok(*b);
                    }
                    let stored = account.query_row([id_blob(id.0)], account_from).optional()?;
                    Ok(stored
                        .ok_or_else(|| StoreError::Corrupt(format!("{} moves money of missing account {id}", t.id)))?
                        .balances)
                };
                let (mut debit, mut credit) = (balances(t.debit_account)?, balances(t.credit_account)?);
                t.replay(held, &mut debit, &mut credit)
                    .ok_or_else(|| StoreError::Corrupt(format!("{} takes a balance out of range on replay", t.id)))?;
                replayed.insert(t.debit_account, debit);
                replayed.insert(t.credit_account, credit);
                last = Some(t.timestamp);
            }
        }
        if let Some(last) = last {
            tracing::info!(accounts = replayed.len(), "balances replayed from the transfers after the last checkpoint");
            write_balances(&tx, replayed.into_iter(), last)?;
        }
        let mut fresh = self.fresh.write().map_err(|_| poisoned())?;
        tx.commit()?;
        fresh.clear();
        drop(fresh);
        self.checkpointed_at = Instant::now();
        Ok(())
    }

    /// Brings `history.db` up to date now rather than when the indexer next runs (for tests
    /// and tools; listings are complete either way).
    pub fn index_history(&mut self, data_dir: &Path) -> Result<()> {
        let mut history = history::open_for_writing(&self.conn, &data_dir.join(HISTORY_FILE))?;
        while history::index_pass(&self.conn, &mut history, 65_536)? > 0 {}
        Ok(())
    }
}

/// Read access for the API, safe to share between threads: each call borrows a pooled
/// connection.
#[derive(Clone)]
pub struct SqliteReader {
    path: Arc<PathBuf>,
    history: Arc<PathBuf>,
    pool: Arc<Mutex<Vec<Connection>>>,
    /// Balances committed since the last checkpoint (see [`SqliteStore`]): newer than the rows.
    fresh: Fresh,
}

/// Connections kept idle in the pool; more may be open while many requests read at once.
const POOL_IDLE_MAX: usize = 16;

impl SqliteReader {
    fn new(path: PathBuf, history: PathBuf) -> SqliteReader {
        SqliteReader {
            path: Arc::new(path),
            history: Arc::new(history),
            pool: Arc::new(Mutex::new(Vec::new())),
            fresh: Fresh::default(),
        }
    }

    /// An account as `read` finds it, with its balances as last committed: the row, unless
    /// newer balances wait in memory for a checkpoint.
    pub(crate) fn account_with(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<Option<Account>>,
    ) -> Result<Option<Account>> {
        let fresh = self.fresh.read().map_err(|_| poisoned())?;
        let account = self.with(|conn| Ok(read(conn)?))?;
        Ok(account.map(|mut account| {
            if let Some(balances) = fresh.get(&account.id) {
                account.balances = *balances;
            }
            account
        }))
    }

    pub(crate) fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.pool.lock().ok().and_then(|mut pool| pool.pop());
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let conn = connect(&self.path)?;
                history::attach(&conn, &self.history)?;
                conn
            }
        };
        let result = f(&conn);
        if let Ok(mut pool) = self.pool.lock() {
            if pool.len() < POOL_IDLE_MAX {
                pool.push(conn);
            }
        }
        result
    }

    /// Every account, transfer, hold and payment, for offline verification: calls `each`
    /// with every transfer in timestamp order.
    pub fn for_each_transfer(&self, mut each: impl FnMut(Transfer)) -> Result<()> {
        self.with(|conn| {
            let mut stmt = conn.prepare("SELECT * FROM transfers ORDER BY timestamp")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                each(transfer_from(row)?);
            }
            Ok(())
        })
    }

    /// Every account.
    pub fn accounts(&self) -> Result<Vec<Account>> {
        self.with(|conn| {
            Ok(conn.prepare("SELECT * FROM accounts")?.query_map([], account_from)?.collect::<rusqlite::Result<_>>()?)
        })
    }
}

impl Reader for SqliteReader {
    fn account(&self, tenant: TenantId, id: AccountId) -> Result<Option<Account>> {
        self.account_with(|conn| {
            conn.prepare_cached("SELECT * FROM accounts WHERE id = ?1 AND tenant = ?2")?
                .query_row(params![id_blob(id.0), id_blob(tenant.0)], account_from)
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
            // Newest first: the unindexed tail (timestamps above the watermark), scanned on the
            // timestamp index, which also holds both accounts ...
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
            let ids = history::indexed(&tx, id.0, before.min(watermark.saturating_add(1)), rest)?;
            let mut stmt = tx.prepare_cached("SELECT * FROM transfers WHERE id = ?1 AND tenant = ?2")?;
            for transfer in ids {
                if let Some(t) =
                    stmt.query_row(params![id_blob(transfer), id_blob(tenant.0)], transfer_from).optional()?
                {
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
                .prepare_cached("SELECT * FROM api_keys WHERE hash = ?1")?
                .query_row([hash], |row| {
                    let scopes: String = row.get("scopes")?;
                    let revoked: i64 = row.get("revoked")?;
                    Ok(ApiKeyRecord {
                        id: row.get("id")?,
                        tenant: TenantId(blob_id(row, "tenant")?),
                        hash: row.get("hash")?,
                        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
                        created_at: uint(row, "created_at")?,
                        revoked: revoked != 0,
                    })
                })
                .optional()?)
        })
    }

    fn api_key_count(&self) -> Result<u64> {
        self.with(|conn| {
            let n: i64 = conn.query_row("SELECT count(*) FROM api_keys WHERE revoked = 0", [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO tenants (id, created_at) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING",
                params![id_blob(key.tenant.0), int(key.created_at)],
            )?;
            conn.execute(
                "INSERT INTO api_keys (id, tenant, hash, scopes, created_at, revoked) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    key.id,
                    id_blob(key.tenant.0),
                    key.hash,
                    key.scopes.join(" "),
                    int(key.created_at),
                    key.revoked
                ],
            )?;
            Ok(())
        })
    }
}
