//! `commit-lab` (not part of `all`): what the SQLite commit of a bulk batch costs, and what
//! would make it cheaper, measured without touching the store. The schema is the store's own
//! (made by `paycore_store::open`), except `transfers`, which each variant lays out itself;
//! each batch writes what `SqliteStore::commit` writes for 8 189 transfers of the bulk workload
//! (time-ordered ids, consecutive timestamps, 10 000 accounts) — the `INSERT` of every
//! transfer in statements of 64 rows with the store's columns (bound through rusqlite, with
//! copies, where the store binds its alike chunks in place), and the `meta` upsert — in one
//! `IMMEDIATE` transaction with `synchronous=FULL`. (Balances are not written per commit: the
//! store checkpoints them once a second.) Variants change one thing each from the one above
//! them, and run alternately, one run of each in turn, so that a noisy machine weighs on all.

use crate::inprocess::{size_name, Ids};
use crate::report::{Case, Outcome, Run};
use crate::stats::{nanos, rate, Percentiles};
use crate::workload::{Rng, ACCOUNTS, BATCH};
use crate::Config;
use rusqlite::{params, Connection, TransactionBehavior};
use std::time::Instant;

const SCENARIO: &str = "lab: SQLite commit";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// Migration 0021's layout: `WITHOUT ROWID`, keyed by the 16-byte id, with the covering
    /// `transfers_timestamp (timestamp, debit_account, credit_account)` index.
    IdKey,
    /// Migration 0022's layout: keyed by the timestamp (`INTEGER PRIMARY KEY`, the rowid),
    /// with a `UNIQUE` index on the id: one index entry of ~26 bytes per row instead of ~57.
    TimestampKey,
    /// + no `meta.last_timestamp` upsert when the batch's last timestamp is a transfer's.
    NoMeta,
    /// + rows 2.. of each statement insert a `NULL` timestamp, which SQLite makes the
    ///   table's last key plus one (the batch's timestamps are consecutive): its append path,
    ///   with no B-tree descent to check each bound key is new.
    Appended,
    /// + `INSERT OR ROLLBACK`: no statement journal of the pages a statement changes.
    OrRollback,
    /// + currency and kind as small integers instead of text (fewer bytes, no text binds).
    IntegerCodes,
    /// + 256 rows per `INSERT` instead of 64.
    Rows256,
    /// + pages of 16 KiB instead of 4 KiB (a quarter of the WAL frames, each two `pwrite`s).
    Page16K,
}

const VARIANTS: [Variant; 8] = [
    Variant::IdKey,
    Variant::TimestampKey,
    Variant::NoMeta,
    Variant::Appended,
    Variant::OrRollback,
    Variant::IntegerCodes,
    Variant::Rows256,
    Variant::Page16K,
];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::IdKey => "id key + timestamp index (0021)",
            Variant::TimestampKey => "timestamp key + unique id index (0022)",
            Variant::NoMeta => "+ no meta upsert",
            Variant::Appended => "+ timestamps 2.. of a statement from SQLite",
            Variant::OrRollback => "+ INSERT OR ROLLBACK",
            Variant::IntegerCodes => "+ currency and kind as integers",
            Variant::Rows256 => "+ 256 rows per INSERT",
            Variant::Page16K => "+ 16 KiB pages",
        }
    }

    fn timestamp_key(self) -> bool {
        self != Variant::IdKey
    }

    fn meta(self) -> bool {
        matches!(self, Variant::IdKey | Variant::TimestampKey)
    }

    fn appended(self) -> bool {
        !matches!(self, Variant::IdKey | Variant::TimestampKey | Variant::NoMeta)
    }

    fn or_rollback(self) -> bool {
        self.appended() && self != Variant::Appended
    }

    fn integer_codes(self) -> bool {
        matches!(self, Variant::IntegerCodes | Variant::Rows256 | Variant::Page16K)
    }

    fn rows_per_insert(self) -> usize {
        if matches!(self, Variant::Rows256 | Variant::Page16K) {
            256
        } else {
            64
        }
    }

    /// The `transfers` table of the variant, replacing the store's.
    fn schema(self) -> String {
        let (currency, kind) = if self.integer_codes() { ("INTEGER", "INTEGER") } else { ("TEXT", "TEXT") };
        let columns = format!(
            "tenant BLOB NOT NULL, debit_account BLOB NOT NULL, credit_account BLOB NOT NULL,
             amount INTEGER NOT NULL, currency {currency} NOT NULL, kind {kind} NOT NULL,
             pending_id BLOB, expires_at INTEGER"
        );
        if self.timestamp_key() {
            format!(
                "DROP TABLE transfers;
                 CREATE TABLE transfers (timestamp INTEGER PRIMARY KEY, id BLOB NOT NULL, {columns});
                 CREATE UNIQUE INDEX transfers_id ON transfers (id);"
            )
        } else {
            format!(
                "DROP TABLE transfers;
                 CREATE TABLE transfers (id BLOB PRIMARY KEY, {columns}, timestamp INTEGER NOT NULL) WITHOUT ROWID;
                 CREATE INDEX transfers_timestamp ON transfers (timestamp, debit_account, credit_account);"
            )
        }
    }
}

fn id(v: u128) -> [u8; 16] {
    v.to_be_bytes()
}

/// One transfer of the lab: (id, debit index, credit index, amount, timestamp).
type Row = (u128, usize, usize, i64, i64);

/// Inserts `rows` as the store's `insert_rows` does: full statements of `per` rows, then one
/// statement per row for the rest.
fn insert(conn: &Connection, variant: Variant, rows: &[Row]) -> rusqlite::Result<()> {
    const COLUMNS: usize = 10;
    let head = if variant.or_rollback() { "INSERT OR ROLLBACK" } else { "INSERT" };
    let head = format!(
        "{head} INTO transfers (id, tenant, debit_account, credit_account, amount, currency, kind,
                pending_id, expires_at, timestamp) VALUES "
    );
    let row = format!("({})", ["?"; COLUMNS].join(", "));
    let per = variant.rows_per_insert();
    // `ts` is `None` where SQLite is to make the key (the table's last + 1).
    let bind = |stmt: &mut rusqlite::Statement<'_>, offset: usize, &(tid, d, c, amount, _): &Row, ts: Option<i64>| {
        stmt.raw_bind_parameter(offset + 1, id(tid))?;
        stmt.raw_bind_parameter(offset + 2, id(1))?;
        stmt.raw_bind_parameter(offset + 3, id(1 + d as u128))?;
        stmt.raw_bind_parameter(offset + 4, id(1 + c as u128))?;
        stmt.raw_bind_parameter(offset + 5, amount)?;
        if variant.integer_codes() {
            stmt.raw_bind_parameter(offset + 6, 978)?;
            stmt.raw_bind_parameter(offset + 7, 0)?;
        } else {
            stmt.raw_bind_parameter(offset + 6, "EUR")?;
            stmt.raw_bind_parameter(offset + 7, "single")?;
        }
        stmt.raw_bind_parameter(offset + 8, None::<[u8; 16]>)?;
        stmt.raw_bind_parameter(offset + 9, None::<i64>)?;
        stmt.raw_bind_parameter(offset + 10, ts)
    };
    let mut chunks = rows.chunks_exact(per);
    let mut stmt = conn.prepare_cached(&format!("{head}{}", vec![row.as_str(); per].join(", ")))?;
    for chunk in &mut chunks {
        for (i, r) in chunk.iter().enumerate() {
            bind(&mut stmt, i * COLUMNS, r, (i == 0 || !variant.appended()).then_some(r.4))?;
        }
        stmt.raw_execute()?;
        if variant.appended() && chunk.last().map(|r| r.4) != Some(conn.last_insert_rowid()) {
            return Err(rusqlite::Error::InvalidQuery);
        }
    }
    let mut stmt = conn.prepare_cached(&format!("{head}{row}"))?;
    for r in chunks.remainder() {
        bind(&mut stmt, 0, r, Some(r.4))?;
        stmt.raw_execute()?;
    }
    Ok(())
}

// Long on purpose: one timed run is one straight script (set up, commit every batch, measure), kept whole so the timed part is plain to see.
fn one_run(variant: Variant, total: u64, seed: u64) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    if variant == Variant::Page16K {
        // The page size is fixed when the first table is made.
        Connection::open(dir.path().join("paycore.db"))?.execute_batch(
            "PRAGMA page_size = 16384; PRAGMA journal_mode = WAL; CREATE TABLE lab (x); DROP TABLE lab;",
        )?;
    }
    drop(paycore_store::open(dir.path())?); // the store's schema, then its lock is released
    let mut conn = Connection::open(dir.path().join("paycore.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // The engine connection's page cache (`open::WRITER_CACHE_KIB`).
    conn.pragma_update(None, "cache_size", -65_536)?;
    conn.execute_batch(&variant.schema())?;
    {
        let tx = conn.transaction()?;
        let mut stmt = tx.prepare(
            "INSERT INTO accounts (id, tenant, currency, overdraft_limit, reference, metadata,
                 debits_posted, credits_posted, debits_pending, credits_pending, created_at)
             VALUES (?1, ?2, 'EUR', NULL, NULL, NULL, 0, 0, 0, 0, 1)",
        )?;
        for a in 0..ACCOUNTS {
            stmt.execute(params![id(1 + a as u128), id(1)])?;
        }
        drop(stmt);
        tx.commit()?;
    }
    let mut rng = Rng::new(seed);
    let mut ids = Ids::new();
    let mut left = total;
    let mut timestamp =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()))?;
    let mut busy = std::time::Duration::ZERO;
    let mut latencies = Vec::new();
    while left > 0 {
        let count = BATCH.min(usize::try_from(left)?);
        left -= count as u64;
        let rows: Vec<Row> = (0..count)
            .map(|_| {
                let (d, c) = rng.pair(ACCOUNTS);
                timestamp += 1;
                (ids.next().0, d, c, i64::try_from(1 + rng.below(1000)).unwrap_or(1), timestamp)
            })
            .collect();
        let started = Instant::now();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        insert(&tx, variant, &rows)?;
        if variant.meta() {
            tx.prepare_cached(
                "INSERT INTO meta (key, value) VALUES ('last_timestamp', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute([timestamp])?;
        }
        tx.commit()?;
        let took = started.elapsed();
        busy += took;
        latencies.push(nanos(took));
        // A batch's timestamps are consecutive; the next batch's clock has moved on.
        timestamp += 1_000_000;
    }
    Ok(Run { value: rate(total, busy), latency: Percentiles::of(latencies), extra: Vec::new() })
}

pub fn run(cfg: &Config) -> Vec<Outcome> {
    let mut out = Vec::new();
    for &n in &cfg.bulk_sizes {
        let mut runs: Vec<Vec<Run>> = VARIANTS.iter().map(|_| Vec::new()).collect();
        let mut failed: Vec<Option<String>> = VARIANTS.iter().map(|_| None).collect();
        for i in 0..cfg.runs {
            for (v, &variant) in VARIANTS.iter().enumerate() {
                if failed[v].is_some() {
                    continue;
                }
                match one_run(variant, n, 7000 + i as u64) {
                    Ok(r) => {
                        eprintln!(
                            "  commit {} {} run {}/{}: {} /s",
                            size_name(n),
                            variant.name(),
                            i + 1,
                            cfg.runs,
                            crate::report::number(r.value)
                        );
                        runs[v].push(r);
                    }
                    Err(e) => failed[v] = Some(format!("FAILED: {e:#}")),
                }
            }
        }
        for ((variant, runs), failed) in VARIANTS.iter().zip(runs).zip(failed) {
            match failed {
                Some(reason) => {
                    out.push(Outcome::Skipped { scenario: SCENARIO.into(), name: variant.name().into(), reason })
                }
                None => out.push(Outcome::Measured(
                    Case::new(
                        SCENARIO,
                        format!("{}, {} transfers", variant.name(), size_name(n)),
                        "transfers/s",
                        &runs,
                    )
                    .note("latency = one commit of 8 189"),
                )),
            }
        }
    }
    out
}
