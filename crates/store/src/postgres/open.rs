//! Connecting: the engine's single-writer lock, the schema migrations, and the check that a
//! database holds a paycore store at all.

use crate::{Result, StoreError};
use postgres::{Client, NoTls};

/// Schema migrations, applied in order; `schema_version` records how many ran.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_batch_files.sql"),
    include_str!("migrations/0003_leases.sql"),
    include_str!("migrations/0004_partitions.sql"),
    include_str!("migrations/0005_fx.sql"),
    include_str!("migrations/0006_limits.sql"),
    include_str!("migrations/0007_clearing.sql"),
    include_str!("migrations/0008_statements.sql"),
    include_str!("migrations/0009_fx_batches.sql"),
    include_str!("migrations/0010_interest.sql"),
    include_str!("migrations/0011_qr.sql"),
    include_str!("migrations/0012_returns.sql"),
    include_str!("migrations/0013_refunds.sql"),
    include_str!("migrations/0014_console.sql"),
    include_str!("migrations/0015_retention.sql"),
    include_str!("migrations/0016_keys.sql"),
    include_str!("migrations/0017_console2.sql"),
    include_str!("migrations/0018_console_sessions.sql"),
    include_str!("migrations/0019_transfers_timestamp_brin.sql"),
    include_str!("migrations/0020_accounts_fillfactor.sql"),
    include_str!("migrations/0021_require.sql"),
    include_str!("migrations/0022_account_runs.sql"),
    include_str!("migrations/0023_balance_checkpoints.sql"),
];

/// The advisory lock the engine's connection holds for as long as the whole store is open
/// (`paycore_store::open`): one such writer per database (two engines could spend the same
/// money twice). It also leads every partition (`partitions`), so it never runs beside a
/// partition's leader. Advisory locks are per database, so two databases on one server each
/// have their own writer.
const WRITER_LOCK: i64 = 0x7061_7963_6f72_6501; // "paycore" 1
/// The advisory lock that serializes migrations between processes opening one database.
const MIGRATION_LOCK: i64 = 0x7061_7963_6f72_6502;
/// The advisory lock every writer of the outbox takes inside its transaction (see the
/// `outbox` table in the migrations).
pub(super) const OUTBOX_LOCK: i64 = 0x7061_7963_6f72_6503;

/// How long a statement waits for a row or table lock another connection holds before it
/// fails with `Busy`: the SQLite store's busy timeout.
const LOCK_TIMEOUT: &str = "5s";

/// A new connection to `url`, with the store's settings.
pub(super) fn connect(url: &str) -> Result<Client> {
    let mut client = Client::connect(url, NoTls)?;
    // Notices ("relation already exists, skipping" from every migration check) are not news.
    client.batch_execute(&format!("SET lock_timeout = '{LOCK_TIMEOUT}'; SET client_min_messages = warning"))?;
    Ok(client)
}

/// Takes the database's single-writer lock on `client`, held until it disconnects.
pub(super) fn lock(client: &mut Client, url: &str) -> Result<()> {
    let locked: bool = client.query_one("SELECT pg_try_advisory_lock($1)", &[&WRITER_LOCK])?.try_get(0)?;
    if locked {
        Ok(())
    } else {
        Err(StoreError::InUse(format!("{} (its writer lock is held)", without_password(url))))
    }
}

/// The URL as it may be printed: without a password.
pub(super) fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            let user = user.split(':').next().unwrap_or_default();
            format!("{}{user}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The schema version stored, or `None` when the database has no paycore schema.
fn stored_version(client: &mut Client) -> Result<Option<i64>> {
    let exists: bool = client.query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])?.try_get(0)?;
    if !exists {
        return Ok(None);
    }
    Ok(Some(client.query_one("SELECT version FROM schema_version", &[])?.try_get(0)?))
}

fn known_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// Applies the migrations the database has not run yet, in one transaction.
pub(super) fn migrate(client: &mut Client) -> Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
    let version: Option<i64> =
        tx.query_opt("SELECT version FROM schema_version", &[])?.map(|row| row.try_get(0)).transpose()?;
    let version = match version {
        Some(version) => version,
        None => {
            tx.execute("INSERT INTO schema_version (version) VALUES (0)", &[])?;
            0
        }
    };
    if version > known_version() {
        return Err(StoreError::SchemaTooNew { found: version, known: known_version() });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        tx.batch_execute(sql)?;
        let done = i64::try_from(index + 1).unwrap_or(i64::MAX);
        tx.execute("UPDATE schema_version SET version = $1", &[&done])?;
    }
    tx.commit()?;
    Ok(())
}

/// Checks that the database holds a paycore store this build can read, without changing it.
pub(super) fn check_existing(client: &mut Client, url: &str) -> Result<()> {
    match stored_version(client)? {
        None | Some(0) => Err(StoreError::Unavailable(format!("{} has no paycore database", without_password(url)))),
        Some(found) if found > known_version() => Err(StoreError::SchemaTooNew { found, known: known_version() }),
        Some(_) => Ok(()),
    }
}
