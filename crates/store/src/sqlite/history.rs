//! Account history, kept out of the engine's commit.
//!
//! Listing an account's transfers needs them by account and time. Indexing `transfers` by
//! debit and by credit account inside the engine's commit put every transfer at a random place
//! in two B-trees: a batch of 8 189 transfers dirtied most of their pages, and that upkeep was
//! three quarters of the engine's CPU (crates/bench/NOTES.md). So the commit only appends:
//! `transfers` is keyed by timestamp and indexed by id (both grow at the end), and an indexer
//! thread copies `(account, timestamp)` entries into `history.db`, a separate SQLite file,
//! in large sorted chunks, so that each of its pages is written once per chunk rather than once
//! per batch. It has its own file so that its long write transactions never take the main
//! database's single write lock from the engine.
//!
//! `history.db` is derived data: its watermark (the timestamp of the last transfer indexed)
//! commits with its entries, so a crash leaves it consistent, and it can be deleted at any time
//! (it is rebuilt from `transfers`). A listing reads the indexed part below the watermark and
//! scans the short unindexed tail above it, so every committed transfer is listed at once.

use crate::Result;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(super) const HISTORY_FILE: &str = "history.db";

/// The history database's schema; `watermark` has exactly one row. An account's entries are
/// stored in runs (`account_runs`): each row holds up to [`RUN_MAX`] of its entries from one
/// pass, in timestamp order, each the transfer's timestamp (8 bytes, big-endian), which is
/// the key of `transfers` (its rowid) and so finds the transfer with one B-tree descent. One
/// B-tree insert per account per pass, instead of one per entry (which cost a core at 250 000
/// transfers/s).
///
/// Until version 3 an entry also held the transfer's 16-byte id: a pass of 262 144 transfers
/// over 10 000 accounts wrote rows of ~1 250 bytes, past the 1 002 bytes a row of a 4 KiB page
/// keeps in place, so each row also took an overflow page of its own (crates/bench/NOTES.md).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS account_runs (
    account  BLOB NOT NULL,
    last_ts  INTEGER NOT NULL,
    first_ts INTEGER NOT NULL,
    entries  BLOB NOT NULL,
    PRIMARY KEY (account, last_ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS watermark (
    one       INTEGER PRIMARY KEY CHECK (one = 1),
    timestamp INTEGER NOT NULL
);
INSERT OR IGNORE INTO watermark (one, timestamp) VALUES (1, 0);
";

/// The layout of `history.db`; a file with another one is rebuilt.
const VERSION: i64 = 3;
/// Most entries in one row of `account_runs`.
const RUN_MAX: usize = 2048;
const ENTRY_BYTES: usize = 8;

/// Most transfers indexed in one pass (two entries each, sorted, one transaction).
const CHUNK: u64 = 262_144;
/// How often the indexer looks for new transfers.
const POLL: Duration = Duration::from_millis(50);
/// The longest the unindexed tail waits while transfers keep coming in smaller numbers than a
/// chunk; a listing scans the tail, so it must stay short.
const LAG_MAX: Duration = Duration::from_secs(2);

/// Opens (creating if needed) `history.db` for writing. If its watermark is past the main
/// database's last transfer (the main database was replaced by an older copy), it starts over.
pub(super) fn open_for_writing(main: &Connection, path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // Derived data: a power loss may lose its last passes, never its consistency (WAL), and
    // the indexer redoes them from `transfers`.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "cache_size", -16_384)?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version != VERSION {
        conn.execute_batch(
            "DROP TABLE IF EXISTS account_transfers; DROP TABLE IF EXISTS account_runs;
             DROP TABLE IF EXISTS watermark;",
        )?;
        conn.pragma_update(None, "user_version", VERSION)?;
    }
    conn.execute_batch(SCHEMA)?;
    let watermark = watermark(&conn)?;
    let last: Option<i64> = main.query_row("SELECT max(timestamp) FROM transfers", [], |r| r.get(0))?;
    if watermark > last.unwrap_or(0) {
        tracing::warn!(watermark, "history.db is ahead of the transfers it indexes; rebuilding it");
        conn.execute_batch("DELETE FROM account_runs; UPDATE watermark SET timestamp = 0;")?;
    }
    Ok(conn)
}

/// Attaches the history to a reader connection as `history`: the file if there is one, else
/// an empty in-memory one (every transfer is then in the tail).
pub(super) fn attach(conn: &Connection, path: &Path) -> Result<()> {
    if path.exists() {
        conn.execute("ATTACH DATABASE ?1 AS history", [path.to_string_lossy()])?;
    } else {
        conn.execute("ATTACH DATABASE ':memory:' AS history", [])?;
        conn.execute_batch(&SCHEMA.replace("EXISTS ", "EXISTS history."))?;
    }
    Ok(())
}

fn watermark(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT timestamp FROM watermark", [], |r| r.get(0))?)
}

/// Indexes up to `limit` transfers past the watermark in one transaction; returns how many.
pub(super) fn index_pass(main: &Connection, history: &mut Connection, limit: u64) -> Result<u64> {
    // The watermark is read inside the pass's write transaction: a second writer of
    // history.db (a test's `index_history` beside the indexer thread) then waits for this
    // pass and starts from where it ended, instead of indexing the same transfers again.
    let tx = history.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let from = watermark(&tx)?;
    // (account, timestamp), as integers: sorting them is several times cheaper than sorting
    // byte arrays.
    let mut entries: Vec<(u128, i64)> = Vec::new();
    let mut last = from;
    {
        // A range of the table's key (`timestamp` is its rowid).
        let mut stmt = main.prepare_cached(
            "SELECT timestamp, debit_account, credit_account FROM transfers
             WHERE timestamp > ?1 ORDER BY timestamp LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![from, i64::try_from(limit).unwrap_or(i64::MAX)])?;
        let id = |row: &rusqlite::Row, i| row.get::<_, [u8; 16]>(i).map(u128::from_be_bytes);
        while let Some(row) = rows.next()? {
            let timestamp: i64 = row.get(0)?;
            entries.push((id(row, 1)?, timestamp));
            entries.push((id(row, 2)?, timestamp));
            last = timestamp;
        }
    }
    if entries.is_empty() {
        return Ok(0);
    }
    let transfers = (entries.len() / 2) as u64;
    // By account, then time: each account's new entries become one or a few rows. A transfer
    // whose debit and credit account were the same (the ledger refuses it) would appear once.
    entries.sort_unstable();
    entries.dedup();
    {
        let mut insert = tx
            .prepare_cached("INSERT INTO account_runs (account, last_ts, first_ts, entries) VALUES (?1, ?2, ?3, ?4)")?;
        let mut blob = Vec::with_capacity(RUN_MAX * ENTRY_BYTES);
        for account in entries.chunk_by(|a, b| a.0 == b.0) {
            for run in account.chunks(RUN_MAX) {
                blob.clear();
                for &(_, timestamp) in run {
                    blob.extend_from_slice(&timestamp.to_be_bytes());
                }
                let (first, last) = (run[0].1, run[run.len() - 1].1);
                insert.execute(params![run[0].0.to_be_bytes(), last, first, blob])?;
            }
        }
        tx.execute("UPDATE watermark SET timestamp = ?1", [last])?;
    }
    tx.commit()?;
    Ok(transfers)
}

/// The timestamps (the keys in `transfers`) of up to `limit` of the account's indexed transfers
/// with a timestamp below `before`, newest first, from the history attached to a reader as
/// `history`.
pub(super) fn indexed(conn: &Connection, account: u128, before: i64, limit: usize) -> Result<Vec<i64>> {
    let mut found = Vec::new();
    if limit == 0 {
        return Ok(found);
    }
    let account = account.to_be_bytes();
    let take = |entries: &[u8], found: &mut Vec<i64>| {
        for entry in entries.rchunks_exact(ENTRY_BYTES) {
            let timestamp = i64::from_be_bytes(entry.try_into().unwrap_or_default());
            if timestamp < before && found.len() < limit {
                found.push(timestamp);
            }
        }
    };
    // The run that holds `before`, if one does ...
    let straddling: Option<Vec<u8>> = conn
        .prepare_cached(
            "SELECT entries FROM history.account_runs WHERE account = ?1 AND last_ts >= ?2 AND first_ts < ?2
             ORDER BY last_ts LIMIT 1",
        )?
        .query_row(params![account, before], |r| r.get(0))
        .optional()?;
    if let Some(entries) = straddling {
        take(&entries, &mut found);
    }
    // ... then the runs wholly before it, newest first.
    let mut stmt = conn.prepare_cached(
        "SELECT entries FROM history.account_runs WHERE account = ?1 AND last_ts < ?2 ORDER BY last_ts DESC",
    )?;
    let mut rows = stmt.query(params![account, before])?;
    while found.len() < limit {
        let Some(row) = rows.next()? else { break };
        let entries: Vec<u8> = row.get(0)?;
        take(&entries, &mut found);
    }
    Ok(found)
}

/// The timestamps (the keys in `transfers`) of up to `limit` of the account's indexed transfers
/// with a timestamp in `from..to`, oldest first, from the history attached to a reader as
/// `history`.
pub(super) fn indexed_ascending(
    conn: &Connection,
    account: u128,
    from: i64,
    to: i64,
    limit: usize,
) -> Result<Vec<i64>> {
    let mut found = Vec::new();
    if limit == 0 || from >= to {
        return Ok(found);
    }
    let account = account.to_be_bytes();
    // The runs that end at or after `from`, oldest first: the first may start before it.
    let mut stmt = conn.prepare_cached(
        "SELECT entries FROM history.account_runs WHERE account = ?1 AND last_ts >= ?2 AND first_ts < ?3
         ORDER BY last_ts",
    )?;
    let mut rows = stmt.query(params![account, from, to])?;
    while found.len() < limit {
        let Some(row) = rows.next()? else { break };
        let entries: Vec<u8> = row.get(0)?;
        for entry in entries.chunks_exact(ENTRY_BYTES) {
            let timestamp = i64::from_be_bytes(entry.try_into().unwrap_or_default());
            if timestamp >= to || found.len() >= limit {
                return Ok(found);
            }
            if timestamp >= from {
                found.push(timestamp);
            }
        }
    }
    Ok(found)
}

/// The indexer thread; stops (after its current pass) when dropped.
pub(super) struct Indexer {
    stop: Arc<AtomicBool>,
    /// Transfers committed since the indexer last caught up (a hint: when it passes a chunk,
    /// a pass starts at once).
    committed: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Indexer {
    pub(super) fn start(main_path: PathBuf, history: Connection) -> Result<Indexer> {
        let main = Connection::open_with_flags(
            &main_path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        main.busy_timeout(Duration::from_secs(5))?;
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(CHUNK)); // a first pass at once, for what a restart left
        let thread = {
            let (stop, committed) = (stop.clone(), committed.clone());
            std::thread::Builder::new()
                .name("paycore-history".into())
                .spawn(move || run(&main, history, &stop, &committed))
                .map_err(|e| crate::StoreError::Internal(format!("cannot start the history indexer: {e}")))?
        };
        Ok(Indexer { stop, committed, thread: Some(thread) })
    }

    /// Called by the engine's commit: `n` more transfers are waiting to be indexed.
    pub(super) fn committed(&self, n: usize) {
        if n > 0 && self.committed.fetch_add(n as u64, Ordering::Relaxed) + n as u64 >= CHUNK {
            if let Some(thread) = &self.thread {
                thread.thread().unpark();
            }
        }
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

fn run(main: &Connection, mut history: Connection, stop: &AtomicBool, committed: &AtomicU64) {
    let mut last_pass = Instant::now();
    let mut seen = 0;
    // Whether the last pass failed: a failure (a full disk) is logged once, and its end too;
    // the pass is retried every second meanwhile (listings stay complete: they scan the tail).
    let mut failing = false;
    while !stop.load(Ordering::Relaxed) {
        let waiting = committed.load(Ordering::Relaxed);
        // A pass when a chunk is waiting, when the engine has gone quiet, or when the tail has
        // waited long enough; never for a trickle while transfers keep coming.
        let due = waiting >= CHUNK || (waiting > 0 && (waiting == seen || last_pass.elapsed() >= LAG_MAX));
        if due {
            committed.store(0, Ordering::Relaxed);
            loop {
                match index_pass(main, &mut history, CHUNK) {
                    Ok(n) if n == CHUNK && !stop.load(Ordering::Relaxed) => continue,
                    Ok(_) => {
                        if std::mem::take(&mut failing) {
                            tracing::info!("history indexer passes succeed again");
                        }
                        break;
                    }
                    Err(error) => {
                        if !std::mem::replace(&mut failing, true) {
                            tracing::warn!(%error, "history indexer pass failed; retrying every second");
                        }
                        committed.fetch_add(1, Ordering::Relaxed);
                        std::thread::park_timeout(Duration::from_secs(1));
                        break;
                    }
                }
            }
            last_pass = Instant::now();
            seen = 0;
        } else {
            seen = waiting;
            std::thread::park_timeout(POLL);
        }
    }
}
