//! `commit-lab` (not part of `all`): what the SQLite commit of a bulk batch costs, and what
//! would make it cheaper, measured without touching the store. The schema is the store's own
//! (made by `paycore_store::open`); each batch writes what `SqliteStore::commit` writes
//! for 8 189 transfers — the balance `UPDATE` of every touched account, the `INSERT` of every
//! transfer with the same columns, the `meta` upsert — in one `IMMEDIATE` transaction with
//! `synchronous=FULL`. Variants change one thing each.

use crate::inprocess::size_name;
use crate::report::{Case, Outcome, Run};
use crate::stats::{nanos, rate, Percentiles};
use crate::workload::{Rng, ACCOUNTS, BATCH};
use crate::Config;
use rusqlite::{params, Connection, TransactionBehavior};
use std::collections::HashMap;
use std::time::Instant;

const SCENARIO: &str = "lab: SQLite commit";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// As the store does it today.
    AsToday,
    /// `PRAGMA cache_size` of 256 MiB instead of SQLite's default 2 MiB.
    BigCache,
    /// Without the two per-account history indexes (`transfers_debit`, `transfers_credit`).
    NoHistoryIndexes,
    /// Big cache, and the rows of a batch inserted in index order (sorted by debit account).
    BigCacheSorted,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::AsToday => "as the store commits today",
            Variant::BigCache => "+ PRAGMA cache_size = 256 MiB",
            Variant::NoHistoryIndexes => "without the 2 per-account history indexes",
            Variant::BigCacheSorted => "+ 256 MiB cache, rows sorted by debit account",
        }
    }
}

fn id(v: u128) -> [u8; 16] {
    v.to_be_bytes()
}

// Long on purpose: one timed run is one straight script (set up, commit every batch, measure), kept whole so the timed part is plain to see.
fn one_run(variant: Variant, total: u64, seed: u64) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    drop(paycore_store::open(dir.path())?); // the store's schema, then its lock is released
    let mut conn = Connection::open(dir.path().join("paycore.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    if matches!(variant, Variant::BigCache | Variant::BigCacheSorted) {
        conn.pragma_update(None, "cache_size", -262_144)?;
    }
    if variant == Variant::NoHistoryIndexes {
        conn.execute_batch("DROP INDEX transfers_debit; DROP INDEX transfers_credit;")?;
    }
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
    let mut balances: Vec<(i64, i64)> = vec![(0, 0); ACCOUNTS];
    let mut left = total;
    let mut next_id: u128 = 1 << 80;
    let mut timestamp: i64 = 1;
    let mut busy = std::time::Duration::ZERO;
    let mut latencies = Vec::new();
    while left > 0 {
        let count = BATCH.min(usize::try_from(left)?);
        left -= count as u64;
        let mut rows: Vec<(u128, usize, usize, i64, i64)> = (0..count)
            .map(|_| {
                let (d, c) = rng.pair(ACCOUNTS);
                next_id += 1;
                timestamp += 1;
                (next_id, d, c, i64::try_from(1 + rng.below(1000)).unwrap_or(1), timestamp)
            })
            .collect();
        let mut touched: HashMap<usize, ()> = HashMap::new();
        for &(_, d, c, amount, _) in &rows {
            balances[d].0 += amount;
            balances[c].1 += amount;
            touched.insert(d, ());
            touched.insert(c, ());
        }
        if variant == Variant::BigCacheSorted {
            rows.sort_by_key(|r| r.1);
        }
        let started = Instant::now();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut update = tx.prepare_cached(
                "UPDATE accounts SET debits_posted = ?2, credits_posted = ?3, debits_pending = ?4,
                     credits_pending = ?5 WHERE id = ?1",
            )?;
            let mut accounts: Vec<usize> = touched.into_keys().collect();
            if variant == Variant::BigCacheSorted {
                accounts.sort_unstable();
            }
            for a in accounts {
                update.execute(params![id(1 + a as u128), balances[a].0, balances[a].1, 0, 0])?;
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO transfers (id, tenant, debit_account, credit_account, amount, currency,
                     kind, pending_id, expires_at, timestamp)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for &(tid, d, c, amount, ts) in &rows {
                insert.execute(params![
                    id(tid),
                    id(1),
                    id(1 + d as u128),
                    id(1 + c as u128),
                    amount,
                    "EUR",
                    "single",
                    None::<[u8; 16]>,
                    None::<i64>,
                    ts
                ])?;
            }
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('last_timestamp', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [timestamp],
            )?;
        }
        tx.commit()?;
        let took = started.elapsed();
        busy += took;
        latencies.push(nanos(took));
    }
    Ok(Run { value: rate(total, busy), latency: Percentiles::of(latencies), extra: Vec::new() })
}

pub fn run(cfg: &Config) -> Vec<Outcome> {
    let mut out = Vec::new();
    for &n in &cfg.bulk_sizes {
        for variant in [Variant::AsToday, Variant::BigCache, Variant::NoHistoryIndexes, Variant::BigCacheSorted] {
            let mut runs = Vec::new();
            for i in 0..cfg.runs {
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
                        runs.push(r);
                    }
                    Err(e) => {
                        out.push(Outcome::Skipped {
                            scenario: SCENARIO.into(),
                            name: variant.name().into(),
                            reason: format!("FAILED: {e:#}"),
                        });
                        break;
                    }
                }
            }
            if runs.len() == cfg.runs {
                out.push(Outcome::Measured(
                    Case::new(
                        SCENARIO,
                        format!("{}, {} transfers", variant.name(), size_name(n)),
                        "transfers/s",
                        &runs,
                    )
                    .note("latency = one commit of 8 189"),
                ));
            }
        }
    }
    out
}
