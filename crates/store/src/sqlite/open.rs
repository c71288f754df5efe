//! Opening the data folder: its single-writer lock, connections with the store's settings, and
//! the schema migrations.

use crate::{Result, StoreError};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::fs::File;
use std::path::Path;
use std::time::Duration;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_batches.sql"),
    include_str!("migrations/0003_tenants_webhooks.sql"),
    include_str!("migrations/0004_history_out_of_commit.sql"),
    include_str!("migrations/0005_balances_checkpoint.sql"),
    include_str!("migrations/0006_batch_results.sql"),
    include_str!("migrations/0007_leases.sql"),
    include_str!("migrations/0008_fx.sql"),
    include_str!("migrations/0009_limits.sql"),
    include_str!("migrations/0010_clearing.sql"),
    include_str!("migrations/0011_statements.sql"),
    include_str!("migrations/0012_fx_batches.sql"),
    include_str!("migrations/0013_interest.sql"),
    include_str!("migrations/0014_qr.sql"),
    include_str!("migrations/0015_returns.sql"),
    include_str!("migrations/0016_refunds.sql"),
    include_str!("migrations/0017_console.sql"),
    include_str!("migrations/0018_retention.sql"),
    include_str!("migrations/0019_keys.sql"),
    include_str!("migrations/0020_console2.sql"),
    include_str!("migrations/0021_console_sessions.sql"),
    include_str!("migrations/0022_transfers_by_timestamp.sql"),
    include_str!("migrations/0023_batch_item_blocks.sql"),
    include_str!("migrations/0024_balances_in_shards.sql"),
    include_str!("migrations/0025_accounts_by_shard.sql"),
];

/// What a migration does after its SQL, in its transaction, when SQL alone cannot: 0023 moves
/// the item rows into blocks, whose encoding is Rust's.
fn after_migration(number: usize, tx: &Connection) -> Result<()> {
    match number {
        23 => super::blocks::convert(tx),
        _ => Ok(()),
    }
}

pub(super) const DATABASE_FILE: &str = "paycore.db";
const LOCK_FILE: &str = "LOCK";

/// WAL frames after which a commit checkpoints (SQLite's `wal_autocheckpoint`; its default;
/// see [`super::checkpoint::Checkpointer`]).
const WAL_CHECKPOINT_PAGES: i64 = 1000;

/// The engine connection's page cache, in KiB.
const WRITER_CACHE_KIB: i64 = 64 * 1024;

/// Creates the data folder if needed and takes its exclusive lock, held for as long as the
/// returned file lives.
pub(super) fn lock(data_dir: &Path) -> Result<File> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", data_dir.display())))?;
    let lock = File::create(data_dir.join(LOCK_FILE))
        .map_err(|e| StoreError::Unavailable(format!("cannot create the lock file: {e}")))?;
    lock.try_lock().map_err(|_| StoreError::InUse(format!("{} (its LOCK file is held)", data_dir.display())))?;
    Ok(lock)
}

/// Frees every batch lease and delivery claim in the database. Called by the process that just
/// took the folder's lock: the leases it finds were its predecessor's, which no longer runs, so
/// a restart resumes interrupted batches and deliveries at once instead of waiting for them to
/// lapse.
pub(super) fn free_leases(conn: &Connection) -> Result<()> {
    conn.execute("UPDATE batches SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL", [])?;
    conn.execute("UPDATE webhook_deliveries SET claimed_until = NULL WHERE claimed_until IS NOT NULL", [])?;
    Ok(())
}

/// The engine's connection: the schema migrated, tuned for a single writer.
pub(super) fn writer(path: &Path) -> Result<Connection> {
    let mut writer = connect(path)?;
    migrate(&mut writer)?;
    // The engine's connection is used by the engine thread only: no SQLite mutex around each
    // call. A larger page cache keeps the accounts and the B-trees' right edges in memory.
    writer.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    // When another connection holds the write lock (an API key, a batch's items, the webhook
    // fan-out), SQLite's default busy handler sleeps 1, 2, 5, 10 … ms between tries; the engine
    // retries every 50 µs instead, so that it never waits much longer than the lock is held.
    writer.busy_handler(Some(engine_busy))?;
    // WAL checkpoints: see [`super::checkpoint::Checkpointer`].
    writer.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
    Ok(writer)
}

/// The engine connection's busy handler: retry every 50 µs, for up to 5 s in all.
fn engine_busy(attempt: i32) -> bool {
    std::thread::sleep(Duration::from_micros(50));
    attempt < 100_000
}

/// A connection with the settings every connection of the store has: WAL, `synchronous=FULL`.
pub(super) fn connect(path: &Path) -> Result<Connection> {
    // Each connection is used by one thread at a time (the engine's, or a reader borrowed from
    // the pool): SQLite's own mutexes would only add cost.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
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
        after_migration(index + 1, &tx)?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
    }
    Ok(())
}
