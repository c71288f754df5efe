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
//!
//! The indexed part has two tiers, like a small log-structured merge tree. A pass appends its
//! runs to `recent_runs`, keyed by the pass first, so it writes only new pages at the end of
//! that B-tree; every [`RECENT_PASSES_MAX`] passes (or [`RECENT_ENTRIES_MAX`] entries) one pass
//! also merges them into `account_runs`, keyed by account, an account's rows side by side. Inserting each
//! pass into `account_runs` directly touched a page per account the pass saw (10 000 accounts:
//! 10 000 pages, 40 MB of WAL a pass once the file had grown past that), so the indexer's writes
//! grew with the history until they slowed the engine's fsyncs (crates/bench/NOTES.md, "Payments
//! that hold as the store grows"). For each account, every entry of `recent_runs` is later
//! than every entry of `account_runs`: a merge moves all of an account's recent runs at once.
//!
//! A merge is paced: it moves a few hundred accounts' runs per transaction
//! ([`MERGE_STEP_ACCOUNTS`]), pauses between them, and passes go on in between. In one
//! transaction, a merge over 10 000 accounts wrote 40–130 MB into the WAL and again into the
//! file at its checkpoint, all within ~100 ms; the engine's WAL fsyncs of those moments, on
//! the same disk, took 10–22 ms instead of 0.2 (crates/bench/NOTES.md, "Session 18"), which
//! every request of those moments waited for. History's checkpoints are kept as small
//! ([`WAL_CHECKPOINT_PAGES`]).

use crate::Result;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(super) const HISTORY_FILE: &str = "history.db";

/// The history database's schema; `watermark` has exactly one row. An account's entries are
/// stored in runs: each row holds up to [`RUN_MAX`] of its entries in timestamp order, each the
/// transfer's timestamp (8 bytes, big-endian), which is the key of `transfers` (its rowid) and
/// so finds the transfer with one B-tree descent. One B-tree insert per account per pass,
/// instead of one per entry (which cost a core at 250 000 transfers/s). `recent_runs`
/// holds the passes since the last merge (keyed by the pass's last timestamp, so a pass
/// appends), `recent_passes` their bounds (a listing looks an account up in each), and
/// `account_runs` everything older, keyed by account.
///
/// Until layout 3 an entry also held the transfer's 16-byte id: a pass of 262 144 transfers
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
CREATE TABLE IF NOT EXISTS recent_runs (
    pass     INTEGER NOT NULL,
    account  BLOB NOT NULL,
    last_ts  INTEGER NOT NULL,
    entries  BLOB NOT NULL,
    PRIMARY KEY (pass, account, last_ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recent_passes (
    pass     INTEGER PRIMARY KEY,
    first_ts INTEGER NOT NULL,
    entries  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS watermark (
    one       INTEGER PRIMARY KEY CHECK (one = 1),
    timestamp INTEGER NOT NULL
);
INSERT OR IGNORE INTO watermark (one, timestamp) VALUES (1, 0);
";

/// The layout of `history.db`; a file with another one is rebuilt.
const VERSION: i64 = 3;
/// Most entries in one row of `account_runs` or `recent_runs`.
const RUN_MAX: usize = 2048;
const ENTRY_BYTES: usize = 8;
/// The passes `recent_runs` holds before they are merged into `account_runs`: a listing looks
/// an account up once per pass there, and a merge touches a page per account.
const RECENT_PASSES_MAX: usize = 16;
/// The entries `recent_runs` holds before a merge: what one merge reads, orders (SQLite's
/// sorter) and writes, 8 MiB of entries at most.
const RECENT_ENTRIES_MAX: usize = 1 << 20;
/// Most entries in a row a merge writes: 864 bytes, so that the row (about 900 bytes) stays
/// within the ~1 000 bytes a 4 KiB page of a `WITHOUT ROWID` table keeps in place. A longer row
/// spills to an overflow page of its own: rows of 2–3 KB (16 passes of a busy account) wasted
/// half of the file that way.
const MERGED_RUN_MAX: usize = 108;
/// A pass with at least this many entries (a bulk load's) skips `recent_runs`: it would touch
/// most accounts' pages of `account_runs` at its merge anyway.
const PASS_DIRECT_ENTRIES: usize = 1 << 18;

/// Accounts whose recent runs one step of a merge moves (in one transaction): about a page
/// of `account_runs` each, so a step writes ~1 MiB, and its checkpoint as much again.
const MERGE_STEP_ACCOUNTS: usize = 256;
/// The pause after a merge step, which leaves the disk to the engine's commits.
const MERGE_PAUSE: Duration = Duration::from_millis(10);
/// History's WAL is checkpointed past this many pages (SQLite's default is 1 000: 4 MiB
/// written, then fsynced, at once).
const WAL_CHECKPOINT_PAGES: i64 = 256;

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
    conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version != VERSION {
        conn.execute_batch(
            "DROP TABLE IF EXISTS account_transfers; DROP TABLE IF EXISTS account_runs;
             DROP TABLE IF EXISTS recent_runs; DROP TABLE IF EXISTS recent_passes;
             DROP TABLE IF EXISTS watermark;",
        )?;
        conn.pragma_update(None, "user_version", VERSION)?;
    }
    conn.execute_batch(SCHEMA)?;
    let watermark = watermark(&conn)?;
    let last: Option<i64> = main.query_row("SELECT max(timestamp) FROM transfers", [], |r| r.get(0))?;
    if watermark > last.unwrap_or(0) {
        tracing::warn!(watermark, "history.db is ahead of the transfers it indexes; rebuilding it");
        conn.execute_batch(
            "DELETE FROM account_runs; DELETE FROM recent_runs; DELETE FROM recent_passes;
             UPDATE watermark SET timestamp = 0;",
        )?;
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
    // Each account's timestamps, in the order read, which is time order: grouped as they are
    // read rather than sorted after (a pass's 524 288 entries took a sort of (account,
    // timestamp) pairs, the indexer's largest cost; most of a batch's entries are a handful
    // of accounts, its payer's every other one). Then only the accounts are sorted.
    let mut accounts = Accounts::default();
    let (mut first, mut last) = (None, from);
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
            accounts.add(id(row, 1)?, id(row, 2)?, timestamp);
            first.get_or_insert(timestamp);
            last = timestamp;
        }
    }
    let Some(first) = first else { return Ok(0) };
    let transfers = accounts.transfers;
    let entries = accounts.entries;
    let mut by_account = accounts.runs;
    by_account.sort_unstable_by_key(|(account, _)| *account);
    let runs =
        by_account.iter().flat_map(|(account, timestamps)| timestamps.chunks(RUN_MAX).map(move |run| (*account, run)));
    if entries >= PASS_DIRECT_ENTRIES {
        // A pass this large touches most accounts' pages anyway: it goes straight to
        // `account_runs`, after what waits in `recent_runs` (which is older), all of it moved
        // in this transaction (a paced merge in progress finds nothing left).
        merge_accounts(&tx, &[], usize::MAX)?;
        tidy_passes(&tx)?;
        let mut insert = tx
            .prepare_cached("INSERT INTO account_runs (account, last_ts, first_ts, entries) VALUES (?1, ?2, ?3, ?4)")?;
        for (account, run) in runs {
            let (first, last) = (run[0], run[run.len() - 1]);
            insert.execute(params![account.to_be_bytes(), last, first, encode(run)])?;
        }
    } else {
        let mut insert =
            tx.prepare_cached("INSERT INTO recent_runs (pass, account, last_ts, entries) VALUES (?1, ?2, ?3, ?4)")?;
        for (account, run) in runs {
            insert.execute(params![last, account.to_be_bytes(), run[run.len() - 1], encode(run)])?;
        }
        tx.prepare_cached("INSERT INTO recent_passes (pass, first_ts, entries) VALUES (?1, ?2, ?3)")?
            .execute(params![last, first, i64::try_from(entries).unwrap_or(i64::MAX)])?;
    }
    tx.execute("UPDATE watermark SET timestamp = ?1", [last])?;
    tx.commit()?;
    Ok(transfers)
}

/// A run's entries as stored: their timestamps, big-endian, in order.
fn encode(run: &[i64]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(run.len() * ENTRY_BYTES);
    for timestamp in run {
        blob.extend_from_slice(&timestamp.to_be_bytes());
    }
    blob
}

/// A pass's entries by account, each account's timestamps in the order added (time order).
#[derive(Default)]
struct Accounts {
    runs: Vec<(u128, Vec<i64>)>,
    /// Where each account's timestamps are in `runs`.
    slots: std::collections::HashMap<u128, usize>,
    /// The debit and credit accounts of the transfer added last, and their slots: a batch's
    /// payer is the debit of every transfer, looked up once.
    last: [Option<(u128, usize)>; 2],
    entries: usize,
    transfers: u64,
}

impl Accounts {
    /// Adds a transfer's two entries. A transfer whose debit and credit are the same account
    /// (the ledger refuses it) has its entry once.
    fn add(&mut self, debit: u128, credit: u128, timestamp: i64) {
        for (side, account) in [debit, credit].into_iter().enumerate() {
            let slot = match self.last[side] {
                Some((last, slot)) if last == account => slot,
                _ => {
                    let next = self.runs.len();
                    let slot = *self.slots.entry(account).or_insert(next);
                    if slot == next {
                        self.runs.push((account, Vec::new()));
                    }
                    self.last[side] = Some((account, slot));
                    slot
                }
            };
            let timestamps = &mut self.runs[slot].1;
            if timestamps.last() != Some(&timestamp) {
                timestamps.push(timestamp);
                self.entries += 1;
            }
        }
        self.transfers += 1;
    }
}

/// Whether `recent_runs` holds enough for a merge: [`RECENT_PASSES_MAX`] passes or
/// [`RECENT_ENTRIES_MAX`] entries.
pub(super) fn merge_due(history: &Connection) -> Result<bool> {
    let (passes, held): (i64, i64) =
        history.query_row("SELECT count(*), coalesce(sum(entries), 0) FROM recent_passes", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    Ok(usize::try_from(passes).unwrap_or(usize::MAX) >= RECENT_PASSES_MAX
        || usize::try_from(held).unwrap_or(usize::MAX) >= RECENT_ENTRIES_MAX)
}

/// One step of a merge, in its own transaction: the recent runs of the (about) `accounts`
/// accounts after `after` (an account id; empty at a merge's start) move into `account_runs`.
/// Returns the account to continue after, or `None` once no recent run is left past `after`;
/// that last step also forgets the passes it emptied.
pub(super) fn merge_step(history: &mut Connection, after: &[u8], accounts: usize) -> Result<Option<Vec<u8>>> {
    let tx = history.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let next = merge_accounts(&tx, after, accounts)?;
    if next.is_none() {
        tidy_passes(&tx)?;
    }
    tx.commit()?;
    Ok(next)
}

/// Moves the recent runs of the accounts after `after` and up to a bound into `account_runs`:
/// an account's runs of all the passes become rows of [`MERGED_RUN_MAX`] entries, side by
/// side, so a step writes about one page per account. The bound is the lowest of each pass's
/// `accounts`-th account past `after` (every pass's runs up to it are moved, so an account is
/// moved whole); `None` when no pass has that many, and then everything past `after` moved.
fn merge_accounts(tx: &Connection, after: &[u8], accounts: usize) -> Result<Option<Vec<u8>>> {
    let passes = tx
        .prepare_cached("SELECT pass FROM recent_passes ORDER BY pass")?
        .query_map([], |r| r.get::<_, i64>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let offset = i64::try_from(accounts.saturating_sub(1)).unwrap_or(i64::MAX);
    let mut bound: Option<Vec<u8>> = None;
    if accounts != usize::MAX {
        let mut nth = tx.prepare_cached(
            "SELECT DISTINCT account FROM recent_runs WHERE pass = ?1 AND account > ?2
             ORDER BY account LIMIT 1 OFFSET ?3",
        )?;
        for &pass in &passes {
            let found: Option<Vec<u8>> = nth.query_row(params![pass, after, offset], |r| r.get(0)).optional()?;
            if let Some(found) = found {
                if bound.as_ref().is_none_or(|b| found < *b) {
                    bound = Some(found);
                }
            }
        }
    }
    // A blob compares as its bytes, and a longer one after its prefix: 17 bytes of 0xFF come
    // after every 16-byte account id.
    let upper = bound.clone().unwrap_or_else(|| vec![0xFF; 17]);
    let mut runs: Vec<([u8; 16], i64, Vec<u8>)> = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT account, last_ts, entries FROM recent_runs WHERE pass = ?1 AND account > ?2 AND account <= ?3",
        )?;
        for &pass in &passes {
            let mut rows = stmt.query(params![pass, after, upper])?;
            while let Some(row) = rows.next()? {
                runs.push((row.get(0)?, row.get(1)?, row.get(2)?));
            }
        }
        let mut delete =
            tx.prepare_cached("DELETE FROM recent_runs WHERE pass = ?1 AND account > ?2 AND account <= ?3")?;
        for &pass in &passes {
            delete.execute(params![pass, after, upper])?;
        }
    }
    // An account's runs never overlap in time (passes are disjoint and in order), so ordering
    // them by their last timestamp orders their entries.
    runs.sort_unstable_by_key(|run| (run.0, run.1));
    let mut insert =
        tx.prepare_cached("INSERT INTO account_runs (account, last_ts, first_ts, entries) VALUES (?1, ?2, ?3, ?4)")?;
    let mut flush = |account: &[u8; 16], blob: &[u8]| -> Result<()> {
        if let (Some(first), Some(last)) = (blob.first_chunk::<8>(), blob.rchunks_exact(ENTRY_BYTES).next()) {
            let last = last.first_chunk::<8>().copied().unwrap_or_default();
            insert.execute(params![account, i64::from_be_bytes(last), i64::from_be_bytes(*first), blob])?;
        }
        Ok(())
    };
    let mut blob: Vec<u8> = Vec::with_capacity(MERGED_RUN_MAX * ENTRY_BYTES);
    let mut current: Option<[u8; 16]> = None;
    for (account, _, entries) in &runs {
        if current != Some(*account) {
            if let Some(done) = &current {
                flush(done, &blob)?;
            }
            blob.clear();
            current = Some(*account);
        }
        for entry in entries.chunks_exact(ENTRY_BYTES) {
            if blob.len() == MERGED_RUN_MAX * ENTRY_BYTES {
                flush(account, &blob)?;
                blob.clear();
            }
            blob.extend_from_slice(entry);
        }
    }
    if let Some(done) = &current {
        flush(done, &blob)?;
    }
    Ok(bound)
}

/// At a merge's end: forgets the passes it emptied, and counts again the entries left of the
/// passes made while it ran (their runs of the accounts it moved after they were made are
/// gone), so that the next merge comes when it should.
fn tidy_passes(tx: &Connection) -> Result<()> {
    tx.execute_batch(&format!(
        "DELETE FROM recent_passes WHERE NOT EXISTS (SELECT 1 FROM recent_runs r WHERE r.pass = recent_passes.pass);
         UPDATE recent_passes SET entries =
             (SELECT coalesce(sum(length(r.entries)), 0) / {ENTRY_BYTES} FROM recent_runs r WHERE r.pass = recent_passes.pass);"
    ))?;
    Ok(())
}

/// A row's first column, a run's entries, without a copy.
fn blob<'a>(row: &'a rusqlite::Row<'_>) -> rusqlite::Result<&'a [u8]> {
    Ok(row.get_ref(0)?.as_blob()?)
}

/// An entry's timestamp.
fn decode(entry: &[u8]) -> i64 {
    i64::from_be_bytes(entry.try_into().unwrap_or_default())
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
            let timestamp = decode(entry);
            if timestamp < before && found.len() < limit {
                found.push(timestamp);
            }
        }
    };
    // The recent passes that begin before `before`, newest first (they are newer than every
    // merged run) ...
    let passes = conn
        .prepare_cached("SELECT pass FROM history.recent_passes WHERE first_ts < ?1 ORDER BY pass DESC")?
        .query_map([before], |r| r.get::<_, i64>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut in_pass = conn.prepare_cached(
        "SELECT entries FROM history.recent_runs WHERE pass = ?1 AND account = ?2 ORDER BY last_ts DESC",
    )?;
    for pass in passes {
        if found.len() >= limit {
            return Ok(found);
        }
        let mut rows = in_pass.query(params![pass, account])?;
        while let Some(row) = rows.next()? {
            take(blob(row)?, &mut found);
        }
    }
    if found.len() >= limit {
        return Ok(found);
    }
    // ... then the merged run that holds `before`, if one does ...
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
    // ... then the merged runs wholly before it, newest first.
    let mut stmt = conn.prepare_cached(
        "SELECT entries FROM history.account_runs WHERE account = ?1 AND last_ts < ?2 ORDER BY last_ts DESC",
    )?;
    let mut rows = stmt.query(params![account, before])?;
    while found.len() < limit {
        let Some(row) = rows.next()? else { break };
        take(blob(row)?, &mut found);
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
    // Takes a run's entries in `from..to`; false once the listing is complete.
    let take = |entries: &[u8], found: &mut Vec<i64>| {
        for entry in entries.chunks_exact(ENTRY_BYTES) {
            let timestamp = decode(entry);
            if timestamp >= to || found.len() >= limit {
                return false;
            }
            if timestamp >= from {
                found.push(timestamp);
            }
        }
        true
    };
    // The merged runs that end at or after `from`, oldest first: the first may start before it ...
    let mut stmt = conn.prepare_cached(
        "SELECT entries FROM history.account_runs WHERE account = ?1 AND last_ts >= ?2 AND first_ts < ?3
         ORDER BY last_ts",
    )?;
    let mut rows = stmt.query(params![account, from, to])?;
    while let Some(row) = rows.next()? {
        if !take(blob(row)?, &mut found) {
            return Ok(found);
        }
    }
    // ... then the recent passes that end at or after `from` and begin before `to`, oldest first.
    let passes = conn
        .prepare_cached("SELECT pass FROM history.recent_passes WHERE pass >= ?1 AND first_ts < ?2 ORDER BY pass")?
        .query_map([from, to], |r| r.get::<_, i64>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut in_pass = conn
        .prepare_cached("SELECT entries FROM history.recent_runs WHERE pass = ?1 AND account = ?2 ORDER BY last_ts")?;
    for pass in passes {
        let mut rows = in_pass.query(params![pass, account])?;
        while let Some(row) = rows.next()? {
            if !take(blob(row)?, &mut found) {
                return Ok(found);
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
    // Where a merge in progress goes on from (an account id; empty at its start).
    let mut merging: Option<Vec<u8>> = None;
    // Whether the last pass or merge step failed: a failure (a full disk) is logged once, and
    // its end too; the work is retried every second meanwhile (listings stay complete: they
    // scan the tail, and a merge moves an account's runs whole or not at all).
    let mut failing = false;
    let mut report = |outcome: Result<()>| match outcome {
        Ok(()) => {
            if std::mem::take(&mut failing) {
                tracing::info!("history indexer succeeds again");
            }
        }
        Err(error) => {
            if !std::mem::replace(&mut failing, true) {
                tracing::warn!(%error, "history indexer failed; retrying every second");
            }
            committed.fetch_add(1, Ordering::Relaxed);
            std::thread::park_timeout(Duration::from_secs(1));
        }
    };
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
                        report(Ok(()));
                        break;
                    }
                    Err(error) => {
                        report(Err(error));
                        break;
                    }
                }
            }
            last_pass = Instant::now();
            seen = 0;
        } else {
            seen = waiting;
        }
        if merging.is_none() {
            match merge_due(&history) {
                Ok(true) => merging = Some(Vec::new()),
                Ok(false) => {}
                Err(error) => report(Err(error)),
            }
        }
        match merging.take() {
            Some(after) => {
                match merge_step(&mut history, &after, MERGE_STEP_ACCOUNTS) {
                    Ok(next) => {
                        report(Ok(()));
                        merging = next;
                    }
                    // Tried again from the same account.
                    Err(error) => {
                        report(Err(error));
                        merging = Some(after);
                    }
                }
                std::thread::park_timeout(MERGE_PAUSE);
            }
            None => std::thread::park_timeout(POLL),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A main database with the columns the indexer reads, and its history attached to a
    /// reader connection as the store's readers have it.
    struct Fixture {
        _dir: tempfile::TempDir,
        main: Connection,
        history: Connection,
        reader: Connection,
        /// (timestamp, transfer id, debit, credit), as committed.
        transfers: Vec<(i64, u128, u128, u128)>,
        seed: u64,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let main = Connection::open(dir.path().join("main.db")).unwrap();
            main.execute_batch(
                "CREATE TABLE transfers (timestamp INTEGER PRIMARY KEY, id BLOB NOT NULL,
                     debit_account BLOB NOT NULL, credit_account BLOB NOT NULL);",
            )
            .unwrap();
            let history = open_for_writing(&main, &dir.path().join(HISTORY_FILE)).unwrap();
            let reader = Connection::open(dir.path().join("main.db")).unwrap();
            attach(&reader, &dir.path().join(HISTORY_FILE)).unwrap();
            Fixture { _dir: dir, main, history, reader, transfers: Vec::new(), seed: 7 }
        }

        /// Commits `n` transfers and indexes them in one pass, then merges in steps of two
        /// accounts if a merge is due, as the indexer thread does.
        fn pass(&mut self, n: usize) {
            self.pass_only(n);
            if merge_due(&self.history).unwrap() {
                let mut after = Vec::new();
                while let Some(next) = merge_step(&mut self.history, &after, 2).unwrap() {
                    after = next;
                }
            }
        }

        /// Commits `n` transfers between random accounts of 1..=5, then indexes them in one pass.
        fn pass_only(&mut self, n: usize) {
            let tx = self.main.transaction().unwrap();
            {
                let mut insert = tx.prepare("INSERT INTO transfers VALUES (?1, ?2, ?3, ?4)").unwrap();
                for _ in 0..n {
                    self.seed =
                        self.seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                    let debit = 1 + u128::from((self.seed >> 33) % 5);
                    let credit = 1 + (debit + u128::from((self.seed >> 40) % 4)) % 5;
                    let timestamp = 1_000 + 3 * i64::try_from(self.transfers.len()).unwrap();
                    let id = 1 << 100 | u128::try_from(timestamp).unwrap();
                    let blob = |v: u128| v.to_be_bytes();
                    insert.execute(params![timestamp, blob(id), blob(debit), blob(credit)]).unwrap();
                    self.transfers.push((timestamp, id, debit, credit));
                }
            }
            tx.commit().unwrap();
            assert_eq!(index_pass(&self.main, &mut self.history, CHUNK).unwrap(), n as u64);
        }

        fn recent_passes(&self) -> i64 {
            self.history.query_row("SELECT count(*) FROM recent_passes", [], |r| r.get(0)).unwrap()
        }

        /// Each recent pass's entries as recorded, and as its runs hold them.
        fn recent_entries(&self) -> Vec<(i64, i64, i64)> {
            self.history
                .prepare(
                    "SELECT p.pass, p.entries, (SELECT coalesce(sum(length(r.entries)), 0) / 8
                         FROM recent_runs r WHERE r.pass = p.pass) FROM recent_passes p ORDER BY p.pass",
                )
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        }

        /// The accounts with a recent run.
        fn recent_accounts(&self) -> Vec<u128> {
            self.history
                .prepare("SELECT DISTINCT account FROM recent_runs ORDER BY account")
                .unwrap()
                .query_map([], |r| r.get::<_, [u8; 16]>(0).map(u128::from_be_bytes))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        }

        fn merged_rows(&self) -> i64 {
            self.history.query_row("SELECT count(*) FROM account_runs", [], |r| r.get(0)).unwrap()
        }

        /// Every listing of every account against the transfers themselves: all of them, pages
        /// below a timestamp, and ranges oldest first.
        fn check(&self) {
            let last = self.transfers.last().map_or(0, |t| t.0);
            for account in 1..=5u128 {
                let all: Vec<(i64, u128)> =
                    self.transfers.iter().filter(|t| t.2 == account || t.3 == account).map(|t| (t.0, t.1)).collect();
                for before in [0, 1_001, 1_000 + last / 3, last, last + 1, i64::MAX] {
                    for limit in [1, 7, usize::MAX] {
                        let expected: Vec<i64> =
                            all.iter().rev().filter(|t| t.0 < before).take(limit).map(|t| t.0).collect();
                        let got = indexed(&self.reader, account, before, limit).unwrap();
                        assert_eq!(got, expected, "account {account}, before {before}, limit {limit}");
                        for from in [1_000, before / 2 + 1, before.saturating_sub(30)] {
                            let expected: Vec<i64> =
                                all.iter().filter(|t| t.0 >= from && t.0 < before).take(limit).map(|t| t.0).collect();
                            let got = indexed_ascending(&self.reader, account, from, before, limit).unwrap();
                            assert_eq!(got, expected, "account {account}, {from}..{before}, limit {limit}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn listings_are_the_same_from_recent_passes_merged_runs_and_both() {
        let mut f = Fixture::new();
        for pass in 0..RECENT_PASSES_MAX - 1 {
            f.pass(1 + pass % 9);
        }
        // All of it in `recent_runs`, nothing merged yet.
        assert_eq!(f.recent_passes(), i64::try_from(RECENT_PASSES_MAX - 1).unwrap());
        assert_eq!(f.merged_rows(), 0);
        f.check();
        // The next pass merges them all: an account's entries in rows of `MERGED_RUN_MAX`.
        f.pass(3);
        assert_eq!(f.recent_passes(), 0);
        let rows: usize = (1..=5u128)
            .map(|a| f.transfers.iter().filter(|t| t.2 == a || t.3 == a).count().div_ceil(MERGED_RUN_MAX))
            .sum();
        assert_eq!(f.merged_rows(), i64::try_from(rows).unwrap());
        f.check();
        // Both tiers at once.
        for pass in 0..5 {
            f.pass(2 + pass);
        }
        assert_eq!(f.recent_passes(), 5);
        f.check();
    }

    #[test]
    fn a_merge_in_steps_with_passes_between_them_keeps_every_listing() {
        let mut f = Fixture::new();
        for pass in 0..RECENT_PASSES_MAX {
            f.pass_only(5 + pass % 4);
        }
        assert!(merge_due(&f.history).unwrap());
        // Accounts 1 and 2 first: the step's bound is the second account of the passes that
        // have two past the start (all of them here).
        let after = merge_step(&mut f.history, &[], 2).unwrap().unwrap();
        assert_eq!(after, 2u128.to_be_bytes());
        assert_eq!(f.recent_accounts(), [3, 4, 5]);
        f.check();
        // A pass made during the merge, for every account: 1 and 2 were moved before it.
        f.pass_only(40);
        f.check();
        let after = merge_step(&mut f.history, &after, 2).unwrap().unwrap();
        assert_eq!(after, 4u128.to_be_bytes());
        assert_eq!(f.recent_accounts(), [1, 2, 5]);
        f.check();
        f.pass_only(30);
        f.check();
        // The last step moves account 5 and forgets the passes it emptied. The two passes
        // made during the merge stay, their entries counted again from what is left of them.
        assert_eq!(merge_step(&mut f.history, &after, 2).unwrap(), None);
        f.check();
        let recent = f.recent_entries();
        assert_eq!(recent.len(), 2, "{recent:?}");
        let newest = &f.transfers[f.transfers.len() - 70..];
        let entries = |transfers: &[(i64, u128, u128, u128)], accounts: &[u128]| -> i64 {
            let on = |a: u128| transfers.iter().filter(|t| accounts.contains(&a) && (t.2 == a || t.3 == a)).count();
            (1..=5u128).map(on).sum::<usize>() as i64
        };
        // The first (40 transfers) keeps the entries of accounts 1 and 2, the second (30)
        // those of 1 to 4: the last step moved account 5's runs of every pass.
        assert_eq!(recent[0].1, entries(&newest[..40], &[1, 2]));
        assert_eq!(recent[1].1, entries(&newest[40..], &[1, 2, 3, 4]));
        for (pass, recorded, held) in recent {
            assert_eq!(recorded, held, "pass {pass}");
        }
        assert!(!merge_due(&f.history).unwrap());
        // A merge of everything (as a large pass does) leaves no recent run.
        assert_eq!(merge_step(&mut f.history, &[], usize::MAX).unwrap(), None);
        assert_eq!(f.recent_passes(), 0);
        f.check();
    }

    #[test]
    fn a_large_pass_goes_straight_to_the_merged_runs_after_the_recent_ones() {
        let mut f = Fixture::new();
        f.pass(4);
        f.pass(5);
        assert_eq!(f.recent_passes(), 2);
        // Past `PASS_DIRECT_ENTRIES` entries: the two recent passes are merged first (a row per
        // account), then the pass's own runs of at most `RUN_MAX` entries follow them.
        f.pass(PASS_DIRECT_ENTRIES / 2 + 10);
        assert_eq!(f.recent_passes(), 0);
        let runs: usize = (1..=5u128)
            .map(|a| f.transfers[9..].iter().filter(|t| t.2 == a || t.3 == a).count().div_ceil(RUN_MAX))
            .sum();
        assert_eq!(f.merged_rows(), i64::try_from(5 + runs).unwrap());
        f.pass(6);
        f.check();
    }

    #[test]
    fn entries_past_the_recent_limit_merge_before_the_pass_count_does() {
        let mut f = Fixture::new();
        // Each pass just under the direct size: the entries, not the passes, call the merge.
        let per_pass = PASS_DIRECT_ENTRIES / 2 - 1;
        let mut passes = 0;
        while f.merged_rows() == 0 {
            f.pass(per_pass);
            passes += 1;
        }
        assert!(passes < RECENT_PASSES_MAX, "merged after {passes} passes");
        assert_eq!(passes * per_pass * 2 / RECENT_ENTRIES_MAX, 1);
        f.pass(1);
        let newest: Vec<i64> = f.transfers.iter().rev().filter(|t| t.2 == 1 || t.3 == 1).take(3).map(|t| t.0).collect();
        assert_eq!(indexed(&f.reader, 1, i64::MAX, 3).unwrap(), newest);
    }
}
