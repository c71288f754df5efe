//! Scenario 3, SQLite: the same hand-rolled ledger on one SQLite file in WAL mode with
//! `synchronous=FULL`. One connection per client (an OS thread each) with `busy_timeout`
//! 10 s; each transfer is `BEGIN IMMEDIATE` (take the write lock up front, so two writers never
//! deadlock upgrading), the conditional debit `UPDATE`, the credit `UPDATE`, the `INSERT`,
//! `COMMIT`. Writers queue on SQLite's single write lock, waiting in its busy handler (which
//! sleeps, so many writers collapse). Also, at 64 clients, the other design a team would pick:
//! one writer connection shared behind a mutex (clients queue on the mutex instead).

use crate::report::{Case, Outcome, Run};
use crate::stats::{nanos, rate, Percentiles};
use crate::workload::{Rng, ACCOUNTS};
use crate::Config;
use anyhow::bail;
use rusqlite::{params, Connection, TransactionBehavior};
use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

const SCENARIO: &str = "3 baseline SQLite";
const OPENING_BALANCE: i64 = 1_000_000_000_000_000;

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

fn setup(path: &Path) -> rusqlite::Result<()> {
    let mut conn = connect(path)?;
    conn.execute_batch(
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
         CREATE TABLE transfers (id INTEGER PRIMARY KEY, debit_account INTEGER NOT NULL,
             credit_account INTEGER NOT NULL, amount INTEGER NOT NULL, created_at INTEGER NOT NULL);",
    )?;
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare("INSERT INTO accounts (id, balance) VALUES (?1, ?2)")?;
        for id in 0..ACCOUNTS {
            stmt.execute(params![i64::try_from(id).unwrap_or(0), OPENING_BALANCE])?;
        }
    }
    tx.commit()
}

#[derive(Default)]
struct Tally {
    latencies: Vec<u64>,
    busy: u64,
}

/// Each client's connection, or one writer shared by all.
enum Conn {
    Own(Connection),
    Shared(Arc<Mutex<Connection>>),
}

fn client_loop(conn: Conn, client_no: i64, seed: u64, start: &Barrier, duration: Duration) -> anyhow::Result<Tally> {
    let mut conn = conn;
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    let mut seq: i64 = 0;
    start.wait();
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        let (d, c) = rng.pair(ACCOUNTS);
        let (d, c) = (i64::try_from(d)?, i64::try_from(c)?);
        let amount = i64::try_from(1 + rng.below(1000))?;
        seq += 1;
        let id = (client_no << 40) | seq;
        let sent = Instant::now();
        let mut guard;
        let conn: &mut Connection = match &mut conn {
            Conn::Own(c) => c,
            Conn::Shared(shared) => {
                guard = shared.lock().map_err(|_| anyhow::anyhow!("a client panicked holding the writer"))?;
                &mut guard
            }
        };
        let attempt = (|| -> rusqlite::Result<bool> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let debited = tx
                .prepare_cached("UPDATE accounts SET balance = balance - ?1 WHERE id = ?2 AND balance >= ?1")?
                .execute(params![amount, d])?;
            if debited != 1 {
                return Ok(false);
            }
            tx.prepare_cached("UPDATE accounts SET balance = balance + ?1 WHERE id = ?2")?
                .execute(params![amount, c])?;
            tx.prepare_cached("INSERT INTO transfers (id, debit_account, credit_account, amount, created_at) VALUES (?1, ?2, ?3, ?4, unixepoch())")?
                .execute(params![id, d, c, amount])?;
            tx.commit()?;
            Ok(true)
        })();
        match attempt {
            Ok(true) => tally.latencies.push(nanos(sent.elapsed())),
            Ok(false) => bail!("a debit was refused (the opening balance is too small)"),
            // Still busy after busy_timeout: counted, the client goes on.
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy => tally.busy += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(tally)
}

fn one_run(clients: usize, shared: bool, duration: Duration, seed: u64) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ledger.db");
    setup(&path)?;
    let writer = if shared { Some(Arc::new(Mutex::new(connect(&path)?))) } else { None };
    let barrier = Arc::new(Barrier::new(clients + 1));
    let mut threads = Vec::new();
    for c in 0..clients {
        let barrier = barrier.clone();
        let conn = match &writer {
            Some(w) => Conn::Shared(w.clone()),
            None => Conn::Own(connect(&path)?),
        };
        threads
            .push(std::thread::spawn(move || client_loop(conn, c as i64, seed * 1000 + c as u64, &barrier, duration)));
    }
    barrier.wait();
    let started = Instant::now();
    let mut all = Tally::default();
    for t in threads {
        let t = t.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        all.latencies.extend(t.latencies);
        all.busy += t.busy;
    }
    let elapsed = started.elapsed();
    let ok = all.latencies.len() as u64;
    drop(writer);
    let conn = connect(&path)?;
    let rows: i64 = conn.query_row("SELECT count(*) FROM transfers", [], |r| r.get(0))?;
    if u64::try_from(rows)? != ok {
        bail!("{rows} transfer rows for {ok} acknowledged transfers");
    }
    Ok(Run {
        value: rate(ok, elapsed),
        latency: Percentiles::of(all.latencies),
        extra: vec![("busy timeouts", all.busy as f64)],
    })
}

pub fn run(cfg: &Config) -> Vec<Outcome> {
    let mut out = Vec::new();
    let plan: Vec<(usize, bool)> = cfg.baseline_clients.iter().map(|&c| (c, false)).chain([(64, true)]).collect();
    for (clients, shared) in plan {
        let name = if shared {
            format!("1 transfer/txn, {clients} clients, one shared writer connection")
        } else {
            format!("1 transfer/txn, {clients} clients (connection each)")
        };
        let mut runs = Vec::new();
        let mut error = None;
        for i in 0..cfg.runs {
            match one_run(clients, shared, cfg.duration, 5000 + i as u64) {
                Ok(r) => {
                    eprintln!(
                        "  sqlite {clients} clients run {}/{}: {} /s",
                        i + 1,
                        cfg.runs,
                        crate::report::number(r.value)
                    );
                    runs.push(r);
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        match error {
            None => out.push(Outcome::Measured(
                Case::new(SCENARIO, name, "transfers/s", &runs)
                    .key(if shared { format!("sqlite/shared/{clients}") } else { format!("sqlite/{clients}") })
                    .note(format!("{} s per run", cfg.duration.as_secs())),
            )),
            Some(e) => out.push(Outcome::Skipped { scenario: SCENARIO.into(), name, reason: format!("FAILED: {e:#}") }),
        }
    }
    out
}
