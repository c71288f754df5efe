//! Scenario 1 in-process: TigerBeetle's bulk workload on the engine alone (SQLite store, real
//! fsyncs), then on the pure state machine alone, then the engine's phases driven by hand
//! (load, execute, commit) so the table shows where the time goes.

use crate::report::{Case, Outcome, Run, Target};
use crate::stats::{nanos, rate, Percentiles};
use crate::tigerbeetle;
use crate::workload::{Rng, ACCOUNTS, BATCH};
use crate::Config;
use anyhow::{anyhow, bail, Context};
use paycore_engine::{channel, start, EngineConfig, EngineHandle, EngineMetrics, Reply, Submission, SystemClock};
use paycore_ledger::{
    time_ordered, AccountId, Command, Currency, NewAccount, NewTransfer, Outcome as LedgerOutcome, Overdraft, Request,
    ResultCode, State, TenantId, TransferId, TransferOp,
};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SCENARIO: &str = "1 bulk, in-process";
pub const TENANT: TenantId = TenantId(1);

fn eur() -> Currency {
    Currency::from_code("EUR").unwrap_or_else(|| unreachable!("EUR is in the ISO 4217 table"))
}

pub fn account_id(index: usize) -> AccountId {
    AccountId(1 + index as u128)
}

/// Transfer ids: time-ordered (like the server's), so the store appends to its B-tree.
pub struct Ids {
    base_ms: u64,
    next: u128,
}

impl Ids {
    pub fn new() -> Ids {
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Ids { base_ms: u64::try_from(ms).unwrap_or(0), next: 0 }
    }

    pub fn next(&mut self) -> TransferId {
        self.next += 1;
        TransferId(time_ordered(self.base_ms, self.next))
    }
}

/// One request of `count` random transfers between `accounts` accounts.
pub fn transfers(rng: &mut Rng, ids: &mut Ids, accounts: usize, count: usize) -> Vec<NewTransfer> {
    let currency = eur();
    (0..count)
        .map(|_| {
            let (debit, credit) = rng.pair(accounts);
            NewTransfer {
                id: ids.next(),
                linked: false,
                op: TransferOp::Move {
                    debit_account: account_id(debit),
                    credit_account: account_id(credit),
                    amount: 1 + rng.below(1000) as u64,
                    currency,
                    hold: None,
                },
            }
        })
        .collect()
}

fn open_account(index: usize) -> Command {
    Command::CreateAccount(NewAccount {
        id: account_id(index),
        currency: eur(),
        overdraft: Overdraft::Unlimited,
        reference: None,
        metadata: None,
    })
}

/// The engine on a SQLite data folder, as the server runs it.
pub struct Engine {
    pub handle: EngineHandle,
    thread: std::thread::JoinHandle<paycore_engine::Stopped>,
}

impl Engine {
    pub fn boot(dir: &Path) -> anyhow::Result<Engine> {
        let store = paycore_store::open(dir)?.store;
        let (submitter, queue) = channel(16 * 1024);
        let thread = start(
            store,
            Box::new(queue),
            Arc::new(SystemClock),
            Arc::new(|_: &LedgerOutcome| (200, Vec::new())),
            EngineMetrics::default(),
            EngineConfig::default(),
        )?;
        Ok(Engine { handle: EngineHandle::new(Arc::new(submitter)), thread })
    }

    /// Stops the engine once it has answered everything, and releases the data folder.
    pub fn stop(self) -> anyhow::Result<()> {
        drop(self.handle);
        self.thread.join().map(|_stopped| ()).map_err(|_| anyhow!("the engine thread panicked"))
    }

    /// Opens `n` accounts with no balance limit, all submitted at once (the engine batches them).
    pub async fn open_accounts(&self, n: usize) -> anyhow::Result<()> {
        let mut tasks = Vec::with_capacity(n);
        for index in 0..n {
            let handle = self.handle.clone();
            tasks.push(tokio::spawn(async move {
                handle
                    .submit(Submission {
                        request: Request { tenant: TENANT, command: open_account(index) },
                        idempotency: None,
                    })
                    .await
            }));
        }
        for task in tasks {
            match task.await?? {
                Reply::Done(LedgerOutcome::Account(Ok(_))) => {}
                other => bail!("opening an account: {other:?}"),
            }
        }
        Ok(())
    }

    /// `total` transfers in requests of `BATCH`, one request in flight; the next request is
    /// generated while the current one is in the engine. Returns the elapsed time and each
    /// request's latency.
    pub async fn bulk(&self, total: u64, seed: u64) -> anyhow::Result<(Duration, Vec<u64>)> {
        let mut rng = Rng::new(seed);
        let mut ids = Ids::new();
        let mut left = total;
        let mut latencies = Vec::new();
        let mut next = transfers(&mut rng, &mut ids, ACCOUNTS, BATCH.min(usize::try_from(left)?));
        let started = Instant::now();
        while left > 0 {
            let batch = std::mem::take(&mut next);
            left -= batch.len() as u64;
            let handle = self.handle.clone();
            let count = batch.len();
            let inflight = tokio::spawn(async move {
                let sent = Instant::now();
                let reply = handle
                    .submit(Submission {
                        request: Request { tenant: TENANT, command: Command::Transfers(batch) },
                        idempotency: None,
                    })
                    .await;
                (reply, nanos(sent.elapsed()))
            });
            if left > 0 {
                next = transfers(&mut rng, &mut ids, ACCOUNTS, BATCH.min(usize::try_from(left)?));
            }
            let (reply, latency) = inflight.await?;
            match reply? {
                Reply::Done(LedgerOutcome::Transfers(codes))
                    if codes.len() == count && codes.iter().all(|c| *c == ResultCode::Ok) => {}
                Reply::Done(LedgerOutcome::Transfers(codes)) => {
                    let bad = codes.iter().find(|c| **c != ResultCode::Ok);
                    bail!("a bulk request was not fully applied: {} results, first failure {bad:?}", codes.len());
                }
                other => bail!("unexpected reply {other:?}"),
            }
            latencies.push(latency);
        }
        Ok((started.elapsed(), latencies))
    }
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?)
}

/// Fills a data folder with 10 000 accounts and `total` transfers through the engine. With
/// `crash_image`, also copies the store there after the last commit but before the engine
/// stops: the folder a `kill -9` would leave (the last second's balances only in the
/// transfers, the WAL not checkpointed). `history.db` is left out: derived, rebuilt when
/// missing, and being written by its indexer at that moment.
pub fn fill(dir: &Path, total: u64, crash_image: Option<&Path>) -> anyhow::Result<Duration> {
    let rt = runtime()?;
    let engine = Engine::boot(dir)?;
    let elapsed = rt.block_on(async {
        engine.open_accounts(ACCOUNTS).await?;
        anyhow::Ok(engine.bulk(total, 99).await?.0)
    })?;
    if let Some(image) = crash_image {
        // Every request was answered, so the engine is between commits: the copy is what a
        // crash at this instant would leave on disk.
        copy_store(dir, image)?;
    }
    engine.stop()?;
    Ok(elapsed)
}

/// Copies the files of a data folder but `history.db*` (and SQLite's shared-memory index,
/// which is rebuilt on open).
pub fn copy_store(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let text = name.to_string_lossy();
        if entry.file_type()?.is_file() && !text.starts_with("history.db") && !text.ends_with("-shm") {
            std::fs::copy(entry.path(), to.join(&name))?;
        }
    }
    Ok(())
}

fn engine_run(total: u64, seed: u64) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let rt = runtime()?;
    let engine = Engine::boot(dir.path())?;
    let (elapsed, latencies) = rt.block_on(async {
        engine.open_accounts(ACCOUNTS).await?;
        engine.bulk(total, seed).await
    })?;
    engine.stop()?;
    let db = std::fs::metadata(dir.path().join("paycore.db")).map_or(0, |m| m.len())
        + std::fs::metadata(dir.path().join("paycore.db-wal")).map_or(0, |m| m.len());
    Ok(Run { value: rate(total, elapsed), latency: Percentiles::of(latencies), extra: vec![("database MB", mb(db))] })
}

#[allow(clippy::cast_precision_loss)]
fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn accounts_state() -> State {
    let mut state = State::default();
    let opens: Vec<Request> = (0..ACCOUNTS).map(|i| Request { tenant: TENANT, command: open_account(i) }).collect();
    state.execute(&opens, 1);
    let _ = state.take_changes();
    state
}

fn clock() -> u64 {
    paycore_engine::Clock::now_ns(&SystemClock)
}

/// The pure state machine: `execute` + `take_changes`, no store, requests generated outside
/// the timed region.
fn state_machine_run(total: u64, seed: u64) -> anyhow::Result<Run> {
    let mut state = accounts_state();
    let mut rng = Rng::new(seed);
    let mut ids = Ids::new();
    let mut left = total;
    let mut busy = Duration::ZERO;
    let mut latencies = Vec::new();
    while left > 0 {
        let count = BATCH.min(usize::try_from(left)?);
        left -= count as u64;
        let requests =
            [Request { tenant: TENANT, command: Command::Transfers(transfers(&mut rng, &mut ids, ACCOUNTS, count)) }];
        let started = Instant::now();
        let outcomes = state.execute(&requests, clock());
        let changes = state.take_changes();
        let took = started.elapsed();
        busy += took;
        latencies.push(nanos(took));
        if changes.transfers.len() != count {
            bail!("the state machine applied {} of {count} transfers ({outcomes:?})", changes.transfers.len());
        }
    }
    Ok(Run { value: rate(total, busy), latency: Percentiles::of(latencies), extra: Vec::new() })
}

/// The engine's phases by hand on a real store: prefetch+load (the `exists` check against
/// stored transfers), execute+take_changes, commit (one transaction, one fsync).
fn phases_run(total: u64, seed: u64) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let mut store = paycore_store::open(dir.path())?.store;
    let mut state = State::default();
    let opens: Vec<Request> = (0..ACCOUNTS).map(|i| Request { tenant: TENANT, command: open_account(i) }).collect();
    state.execute(&opens, clock());
    store.commit(&state.take_changes(), &[]).context("committing the accounts")?;

    let mut rng = Rng::new(seed);
    let mut ids = Ids::new();
    let mut left = total;
    let (mut load, mut execute, mut commit) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut batches = 0u64;
    while left > 0 {
        let count = BATCH.min(usize::try_from(left)?);
        left -= count as u64;
        let requests =
            [Request { tenant: TENANT, command: Command::Transfers(transfers(&mut rng, &mut ids, ACCOUNTS, count)) }];
        let t0 = Instant::now();
        let wanted = state.prefetch(&requests);
        if !wanted.is_empty() {
            let loaded = store.load(&wanted)?;
            state.insert_prefetched(loaded.transfers, loaded.holds, loaded.payments);
        }
        let t1 = Instant::now();
        let _ = state.execute(&requests, clock());
        let changes = state.take_changes();
        let t2 = Instant::now();
        store.commit(&changes, &[])?;
        let t3 = Instant::now();
        load += t1 - t0;
        execute += t2 - t1;
        commit += t3 - t2;
        batches += 1;
    }
    let all = load + execute + commit;
    let per_batch_ms = |d: Duration| d.as_secs_f64() * 1e3 / batches.max(1) as f64;
    Ok(Run {
        value: rate(total, all),
        latency: None,
        extra: vec![
            ("load ms/batch", per_batch_ms(load)),
            ("execute ms/batch", per_batch_ms(execute)),
            ("commit ms/batch", per_batch_ms(commit)),
            ("load %", 100.0 * load.as_secs_f64() / all.as_secs_f64()),
            ("execute %", 100.0 * execute.as_secs_f64() / all.as_secs_f64()),
            ("commit %", 100.0 * commit.as_secs_f64() / all.as_secs_f64()),
        ],
    })
}

pub fn size_name(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

fn repeat(cfg: &Config, label: &str, mut run: impl FnMut(u64) -> anyhow::Result<Run>) -> anyhow::Result<Vec<Run>> {
    let mut runs = Vec::new();
    for i in 0..cfg.runs {
        let r = run(1000 + i as u64)?;
        eprintln!("  {label} run {}/{}: {} /s", i + 1, cfg.runs, crate::report::number(r.value));
        runs.push(r);
    }
    Ok(runs)
}

/// `runs` runs of paycore's engine and of TigerBeetle's benchmark, one after the other. A
/// failed TigerBeetle run ends its series (its error is reported) but not paycore's.
fn alternate(
    runs: usize,
    size: &str,
    mut ours: impl FnMut(u64) -> anyhow::Result<Run>,
    mut theirs: impl FnMut() -> anyhow::Result<Run>,
) -> (anyhow::Result<Vec<Run>>, anyhow::Result<Vec<Run>>) {
    let (mut our_runs, mut their_runs) = (Vec::new(), Ok(Vec::new()));
    for i in 0..runs {
        match ours(1000 + i as u64) {
            Ok(r) => {
                eprintln!("  engine {size} run {}/{runs}: {} /s", i + 1, crate::report::number(r.value));
                our_runs.push(r);
            }
            Err(e) => return (Err(e), their_runs),
        }
        if let Ok(done) = &mut their_runs {
            match theirs() {
                Ok(r) => {
                    eprintln!("  TigerBeetle {size} run {}/{runs}: {} /s", i + 1, crate::report::number(r.value));
                    done.push(r);
                }
                Err(e) => their_runs = Err(e),
            }
        }
    }
    (Ok(our_runs), their_runs)
}

pub fn run(cfg: &Config) -> Vec<Outcome> {
    let mut out = Vec::new();
    for (i, &n) in cfg.bulk_sizes.iter().enumerate() {
        let size = size_name(n);
        let target = if n >= 10_000_000 { 250_000.0 } else { 400_000.0 };
        // With --tigerbeetle, TigerBeetle's own benchmark runs between paycore's runs, so that
        // both see the same machine weather.
        let (engine_runs, tigerbeetle_runs) = match &cfg.tigerbeetle {
            None => (repeat(cfg, &format!("engine {size}"), |seed| engine_run(n, seed)), None),
            Some(binary) => {
                let (engine, theirs) =
                    alternate(cfg.runs, &size, |seed| engine_run(n, seed), || tigerbeetle::run_once(binary, n));
                (engine, Some(theirs))
            }
        };
        let tigerbeetle_key = format!("tigerbeetle-bulk-{size}");
        let mut our_median = None;
        match engine_runs {
            Ok(runs) => {
                let case = Case::new(
                    SCENARIO,
                    format!("engine + SQLite store, {size} transfers, {BATCH}/request"),
                    "transfers/s",
                    &runs,
                )
                .target(Target::AtLeast(target))
                .key(format!("paycore-bulk-{size}"))
                .versus(tigerbeetle_key.clone(), None)
                .versus("postgres/1", Some(50.0))
                .versus("postgres/64", None)
                .versus("sqlite/1", None);
                our_median = Some(case.value.median);
                out.push(Outcome::Measured(case));
            }
            Err(e) => out.push(failed(format!("engine, {size}"), &e)),
        }
        if let Some(theirs) = tigerbeetle_runs {
            let name = format!("TigerBeetle's own `benchmark`, {size} transfers, {BATCH}/request");
            match theirs {
                Ok(runs) => {
                    let mut case = Case::new(SCENARIO, name, "transfers/s", &runs)
                        .key(tigerbeetle_key)
                        .note(cfg.tigerbeetle_version.clone())
                        .note("latency = its batch p50 / p99 (1 ms buckets; it prints no p99.9)");
                    case.p999_ms = None;
                    if let Some(ours) = our_median {
                        let ratio = crate::report::number(ours / case.value.median);
                        case = case.note(format!("paycore ÷ TigerBeetle (medians): {ratio}×"));
                    }
                    out.push(Outcome::Measured(case));
                }
                Err(e) => out.push(failed(name, &e)),
            }
        }
        match repeat(cfg, &format!("state machine {size}"), |seed| state_machine_run(n, seed)) {
            Ok(runs) => out.push(Outcome::Measured(
                Case::new(
                    SCENARIO,
                    format!("state machine only (execute + take_changes), {size}"),
                    "transfers/s",
                    &runs,
                )
                .note("latency = one execute of 8 189"),
            )),
            Err(e) => out.push(failed(format!("state machine, {size}"), &e)),
        }
        // The phases at the first size only: the split barely moves with size.
        if i == 0 {
            match repeat(cfg, &format!("phases {size}"), |seed| phases_run(n, seed)) {
                Ok(runs) => out.push(Outcome::Measured(Case::new(
                    SCENARIO,
                    format!("engine phases by hand (prefetch+load / execute / commit), {size}"),
                    "transfers/s",
                    &runs,
                ))),
                Err(e) => out.push(failed(format!("phases, {size}"), &e)),
            }
        }
    }
    out
}

fn failed(name: String, e: &anyhow::Error) -> Outcome {
    eprintln!("!!! {SCENARIO} / {name} failed: {e:#}");
    Outcome::Skipped { scenario: SCENARIO.into(), name, reason: format!("FAILED: {e:#}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn run_of(value: f64) -> Run {
        Run { value, latency: None, extra: Vec::new() }
    }

    #[test]
    fn paycore_and_tigerbeetle_take_turns() {
        let calls = RefCell::new(Vec::new());
        let (ours, theirs) = alternate(
            3,
            "1M",
            |seed| {
                calls.borrow_mut().push(format!("paycore {seed}"));
                Ok(run_of(seed as f64))
            },
            || {
                calls.borrow_mut().push("tigerbeetle".to_owned());
                Ok(run_of(7.0))
            },
        );
        assert_eq!(
            calls.into_inner(),
            ["paycore 1000", "tigerbeetle", "paycore 1001", "tigerbeetle", "paycore 1002", "tigerbeetle"]
        );
        let values = |r: anyhow::Result<Vec<Run>>| r.map(|runs| runs.iter().map(|r| r.value).collect::<Vec<_>>());
        assert_eq!(values(ours).ok(), Some(vec![1000.0, 1001.0, 1002.0]));
        assert_eq!(values(theirs).ok(), Some(vec![7.0, 7.0, 7.0]));
    }

    #[test]
    fn a_failed_tigerbeetle_run_stops_its_series_not_paycores() {
        let mut their_calls = 0;
        let (ours, theirs) = alternate(
            3,
            "1M",
            |seed| Ok(run_of(seed as f64)),
            || {
                their_calls += 1;
                if their_calls == 2 {
                    bail!("data file full")
                }
                Ok(run_of(7.0))
            },
        );
        assert_eq!(ours.map(|r| r.len()).ok(), Some(3));
        assert_eq!(theirs.err().map(|e| e.to_string()), Some("data file full".to_owned()));
        assert_eq!(their_calls, 2);
    }
}
