//! Scenario 3, PostgreSQL: the ledger a team would hand-roll. One SQL transaction per
//! transfer — `UPDATE accounts SET balance = balance - $1 WHERE id = $2 AND balance >= $1`, the
//! credit `UPDATE`, an `INSERT` of the transfer — from 1, 16 and 64 clients (one connection
//! each, prepared statements), for a fixed time, with the server's durable defaults
//! (`synchronous_commit=on`). Also a hot variant: 90% of transfers credit one account.
//!
//! A fresh database per command (`paycore_bench_<pid>_<time>`), dropped at the end. Unreachable
//! PostgreSQL is a loud skip, or an error when `CI=true`.

use crate::report::{Case, Outcome, Run};
use crate::stats::{nanos, rate, Percentiles};
use crate::workload::{Rng, ACCOUNTS};
use crate::Config;
use anyhow::{bail, Context};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

const SCENARIO: &str = "3 baseline PostgreSQL";
const ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5";
/// Every account starts with this much, so the conditional debit is evaluated but never refuses.
const OPENING_BALANCE: i64 = 1_000_000_000_000_000;

async fn connect(params: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(params, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

pub(crate) struct Database {
    name: String,
    admin: Client,
}

impl Database {
    pub(crate) async fn create() -> anyhow::Result<Database> {
        let admin = connect(ADMIN).await.context("connecting to PostgreSQL at 127.0.0.1:5432 as postgres")?;
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let name = format!("paycore_bench_{}_{stamp}", std::process::id());
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await?;
        Ok(Database { name, admin })
    }

    /// The database as a `postgres://` URL (what `paycore serve --store` takes).
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    fn params(&self) -> String {
        format!("host=127.0.0.1 port=5432 user=postgres dbname={}", self.name)
    }

    pub(crate) async fn drop_it(self) -> anyhow::Result<()> {
        self.admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).await?;
        Ok(())
    }
}

async fn reset(client: &Client) -> anyhow::Result<()> {
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS transfers; DROP TABLE IF EXISTS accounts;
             CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint NOT NULL);
             CREATE TABLE transfers (id bigint PRIMARY KEY, debit_account bigint NOT NULL,
                 credit_account bigint NOT NULL, amount bigint NOT NULL,
                 created_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO accounts SELECT g, {OPENING_BALANCE} FROM generate_series(0, {}) g;",
            ACCOUNTS - 1
        ))
        .await?;
    client.batch_execute("VACUUM ANALYZE accounts").await?;
    client.batch_execute("CHECKPOINT").await?;
    Ok(())
}

#[derive(Default)]
struct Tally {
    latencies: Vec<u64>,
    retries: u64,
    refused: u64,
}

async fn client_loop(
    params: String,
    client_no: u64,
    seed: u64,
    hot: bool,
    start: Arc<tokio::sync::Barrier>,
    duration: Duration,
) -> anyhow::Result<Tally> {
    let mut client = connect(&params).await?;
    let debit = client.prepare("UPDATE accounts SET balance = balance - $1 WHERE id = $2 AND balance >= $1").await?;
    let credit = client.prepare("UPDATE accounts SET balance = balance + $1 WHERE id = $2").await?;
    let insert = client
        .prepare("INSERT INTO transfers (id, debit_account, credit_account, amount) VALUES ($1, $2, $3, $4)")
        .await?;
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    let mut seq: i64 = 0;
    start.wait().await;
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        let (d, c) = if hot {
            let d = rng.below(ACCOUNTS);
            (d, rng.payee(ACCOUNTS, d, true))
        } else {
            rng.pair(ACCOUNTS)
        };
        let (d, c) = (i64::try_from(d)?, i64::try_from(c)?);
        let amount = i64::try_from(1 + rng.below(1000))?;
        seq += 1;
        let id = (i64::try_from(client_no)? << 40) | seq;
        let sent = Instant::now();
        loop {
            let attempt: Result<bool, tokio_postgres::Error> = async {
                let tx = client.transaction().await?;
                if tx.execute(&debit, &[&amount, &d]).await? != 1 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                tx.execute(&credit, &[&amount, &c]).await?;
                tx.execute(&insert, &[&id, &d, &c, &amount]).await?;
                tx.commit().await?;
                Ok(true)
            }
            .await;
            match attempt {
                Ok(true) => {
                    tally.latencies.push(nanos(sent.elapsed()));
                    break;
                }
                Ok(false) => {
                    tally.refused += 1;
                    break;
                }
                // Deadlock (two transfers locking the same two rows in opposite order) or a
                // serialization failure: what a real client would do, retry.
                Err(e) if e.code().is_some_and(|c| c.code() == "40P01" || c.code() == "40001") => tally.retries += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(tally)
}

async fn one_run(db: &Database, clients: usize, hot: bool, duration: Duration, seed: u64) -> anyhow::Result<Run> {
    let setup = connect(&db.params()).await?;
    reset(&setup).await?;
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = Vec::new();
    for c in 0..clients {
        tasks.push(tokio::spawn(client_loop(
            db.params(),
            c as u64,
            seed * 1000 + c as u64,
            hot,
            barrier.clone(),
            duration,
        )));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await??;
        all.latencies.extend(t.latencies);
        all.retries += t.retries;
        all.refused += t.refused;
    }
    let elapsed = started.elapsed();
    let ok = all.latencies.len() as u64;
    let rows: i64 = setup.query_one("SELECT count(*) FROM transfers", &[]).await?.get(0);
    if u64::try_from(rows)? != ok {
        bail!("{rows} transfer rows for {ok} acknowledged transfers");
    }
    let sum: i64 = setup
        .query_one("SELECT coalesce(sum(balance - $1::bigint), 0)::bigint FROM accounts", &[&OPENING_BALANCE])
        .await?
        .get(0);
    if sum != 0 {
        bail!("balances do not sum to the opening total: off by {sum}");
    }
    Ok(Run {
        value: rate(ok, elapsed),
        latency: Percentiles::of(all.latencies),
        extra: vec![("deadlock retries", all.retries as f64)],
    })
}

async fn settings(admin: &Client) -> anyhow::Result<String> {
    let version: String = admin.query_one("SHOW server_version", &[]).await?.get(0);
    let sync: String = admin.query_one("SHOW synchronous_commit", &[]).await?.get(0);
    let fsync: String = admin.query_one("SHOW fsync", &[]).await?.get(0);
    let max: String = admin.query_one("SHOW max_connections", &[]).await?.get(0);
    Ok(format!("{version} at 127.0.0.1:5432, synchronous_commit={sync}, fsync={fsync}, max_connections={max}"))
}

/// The cases, and a line describing the server (version and durability settings).
pub fn run(cfg: &Config) -> anyhow::Result<(Vec<Outcome>, String)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let plan: Vec<(usize, bool)> = cfg.baseline_clients.iter().map(|&c| (c, false)).chain([(64, true)]).collect();
    let name = |clients: usize, hot: bool| {
        if hot {
            format!("1 transfer/txn, hot account 90%, {clients} clients")
        } else {
            format!("1 transfer/txn, {clients} clients")
        }
    };
    let db = match rt.block_on(Database::create()) {
        Ok(db) => db,
        Err(e) => {
            let reason = format!("PostgreSQL not reachable: {e:#}");
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                bail!("{reason} (CI=true: the baseline is required)");
            }
            eprintln!("\n!!!!!!!! SKIPPED the PostgreSQL baseline: {reason} !!!!!!!!\n");
            let out = plan
                .iter()
                .map(|&(c, hot)| Outcome::Skipped {
                    scenario: SCENARIO.into(),
                    name: name(c, hot),
                    reason: reason.clone(),
                })
                .collect();
            return Ok((out, format!("not reachable ({e})")));
        }
    };
    let version = rt.block_on(settings(&db.admin)).unwrap_or_else(|e| format!("unknown ({e})"));
    eprintln!("  {version}; database {}", db.name);
    let mut out = Vec::new();
    for (clients, hot) in plan {
        let mut runs = Vec::new();
        let mut error = None;
        for i in 0..cfg.runs {
            match rt.block_on(one_run(&db, clients, hot, cfg.duration, 4000 + i as u64)) {
                Ok(r) => {
                    eprintln!(
                        "  postgres {} run {}/{}: {} /s",
                        name(clients, hot),
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
            None => {
                let key = if hot { format!("postgres/hot/{clients}") } else { format!("postgres/{clients}") };
                out.push(Outcome::Measured(
                    Case::new(SCENARIO, name(clients, hot), "transfers/s", &runs)
                        .key(key)
                        .note(format!("{} s per run", cfg.duration.as_secs())),
                ));
            }
            Some(e) => {
                eprintln!("!!! postgres {} failed: {e:#}", name(clients, hot));
                out.push(Outcome::Skipped {
                    scenario: SCENARIO.into(),
                    name: name(clients, hot),
                    reason: format!("FAILED: {e:#}"),
                });
            }
        }
    }
    if let Err(e) = rt.block_on(db.drop_it()) {
        eprintln!("  could not drop the benchmark database: {e:#}");
    }
    Ok((out, version))
}
