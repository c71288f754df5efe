//! Scenario 2: many small real-time requests through HTTP. One transfer per request, or one
//! whole payment (create + confirm) per client operation, from 1, 16, 64 and 256 concurrent
//! clients, each on its own keep-alive connection, for a fixed time; and payments with a hot
//! merchant (90% of payments to one account). The transfers also through `wrk` ([`crate::wrk`]),
//! each run of it right after the suite's run of the same case, and for both the server's own
//! latency histogram and CPU ([`crate::probe`]).

use crate::probe::{Load, Probe};
use crate::report::{Case, Outcome, Run, Target};
use crate::server::{self, id_of, Client};
use crate::stats::{nanos, rate, Percentiles};
use crate::workload::{Rng, ACCOUNTS};
use crate::wrk;
use crate::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SCENARIO: &str = "2 real-time, HTTP";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Transfer,
    Payment { hot: bool },
}

#[derive(Default)]
struct Tally {
    latencies: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// One operation; `Ok(Err(_))` is a refusal (counted as an error, the client goes on).
async fn operation(
    client: &mut Client,
    kind: Kind,
    rng: &mut Rng,
    accounts: &[String],
) -> anyhow::Result<Result<(), String>> {
    match kind {
        Kind::Transfer => {
            let (d, c) = rng.pair(accounts.len());
            let body = format!(
                r#"{{"debit_account":"{}","credit_account":"{}","amount":{},"currency":"EUR"}}"#,
                accounts[d],
                accounts[c],
                1 + rng.below(1000)
            );
            let (status, answer) = client.post("/v1/transfers", body).await?;
            if status.is_success() {
                Ok(Ok(()))
            } else {
                Ok(Err(format!("POST /v1/transfers {status}: {}", String::from_utf8_lossy(&answer))))
            }
        }
        Kind::Payment { hot } => {
            let payer = rng.below(accounts.len());
            let payee = rng.payee(accounts.len(), payer, hot);
            let body = format!(
                r#"{{"payer_account":"{}","payee_account":"{}","amount":{},"currency":"EUR"}}"#,
                accounts[payer],
                accounts[payee],
                1 + rng.below(1000)
            );
            let (status, answer) = client.post("/v1/payments", body).await?;
            if !status.is_success() {
                return Ok(Err(format!("POST /v1/payments {status}: {}", String::from_utf8_lossy(&answer))));
            }
            let id = id_of(&answer)?;
            let (status, answer) = client.post(&format!("/v1/payments/{id}/confirm"), "{}").await?;
            let text = String::from_utf8_lossy(&answer);
            if status.is_success() && text.contains("\"succeeded\"") {
                Ok(Ok(()))
            } else {
                Ok(Err(format!("POST /v1/payments/{id}/confirm {status}: {text}")))
            }
        }
    }
}

async fn client_loop(
    addr: SocketAddr,
    kind: Kind,
    seed: u64,
    accounts: Arc<Vec<String>>,
    start: Arc<tokio::sync::Barrier>,
    duration: Duration,
) -> anyhow::Result<Tally> {
    let mut client = Client::connect(addr).await?;
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    start.wait().await;
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        let sent = Instant::now();
        match operation(&mut client, kind, &mut rng, &accounts).await? {
            Ok(()) => tally.latencies.push(nanos(sent.elapsed())),
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(e);
            }
        }
    }
    Ok(tally)
}

/// One fixed-time run: `clients` connections, each one operation in flight, spread over
/// `addrs` (several API nodes of a cluster) in turn.
pub async fn one_run(
    addrs: &[SocketAddr],
    kind: Kind,
    clients: usize,
    accounts: Arc<Vec<String>>,
    duration: Duration,
    seed: u64,
) -> anyhow::Result<Run> {
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = Vec::new();
    for c in 0..clients {
        tasks.push(tokio::spawn(client_loop(
            addrs[c % addrs.len()],
            kind,
            seed * 1000 + c as u64,
            accounts.clone(),
            barrier.clone(),
            duration,
        )));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await??;
        all.latencies.extend(t.latencies);
        all.errors += t.errors;
        if all.first_error.is_none() {
            all.first_error = t.first_error;
        }
    }
    let elapsed = started.elapsed();
    if let Some(e) = &all.first_error {
        eprintln!("  {} errors; first: {}", all.errors, &e[..e.len().min(300)]);
    }
    let ok = all.latencies.len() as u64;
    Ok(Run {
        value: rate(ok, elapsed),
        latency: Percentiles::of(all.latencies),
        extra: vec![("errors", all.errors as f64)],
    })
}

fn name(kind: Kind, clients: usize) -> String {
    match kind {
        Kind::Transfer => format!("1 transfer/request, {clients} clients"),
        Kind::Payment { hot: false } => format!("1 payment (create+confirm), {clients} clients"),
        Kind::Payment { hot: true } => format!("1 payment, hot merchant 90%, {clients} clients"),
    }
}

fn wrk_name(clients: usize) -> String {
    format!("1 transfer/request, {clients} connections, wrk -t1 + Lua")
}

// Long on purpose: the cases of scenario 2 in report order, each a few lines of set-up and one measured run.
pub fn run(cfg: &Config) -> Vec<Outcome> {
    let wanted = |case: &str| cfg.realtime_cases.iter().any(|c| c == case);
    let mut plan: Vec<(Kind, usize)> = Vec::new();
    if wanted("transfers") {
        plan.extend(cfg.clients.iter().map(|&c| (Kind::Transfer, c)));
    }
    if wanted("payments") {
        plan.extend(cfg.clients.iter().map(|&c| (Kind::Payment { hot: false }, c)));
    }
    if wanted("hot") {
        plan.push((Kind::Payment { hot: true }, 64));
    }
    let skip_all = |reason: String| -> Vec<Outcome> {
        eprintln!("  skipped: {reason}");
        let wrk_too = cfg.load_clients.iter().any(|c| c == "wrk");
        plan.iter()
            .flat_map(|&(k, c)| {
                let wrk = (k == Kind::Transfer && wrk_too).then(|| wrk_name(c));
                std::iter::once(name(k, c)).chain(wrk)
            })
            .map(|name| Outcome::Skipped { scenario: SCENARIO.into(), name, reason: reason.clone() })
            .collect()
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return skip_all(e.to_string()),
    };
    let server = match server::available(&cfg.root, &dir.path().join("data")) {
        Ok(s) => s,
        Err(reason) => return skip_all(reason),
    };
    let rt = match server::client_runtime() {
        Ok(rt) => rt,
        Err(e) => return skip_all(e.to_string()),
    };
    let accounts = match rt.block_on(server::open_accounts(server.addr, ACCOUNTS)) {
        Ok(a) => Arc::new(a),
        Err(e) => return skip_all(format!("FAILED opening accounts: {e:#}")),
    };
    let suite_client = cfg.load_clients.iter().any(|c| c == "suite");
    // wrk drives the transfers only; its files are written once, next to the data folder.
    let wrk_setup = if wanted("transfers") && cfg.load_clients.iter().any(|c| c == "wrk") {
        Some(
            wrk::binary()
                .and_then(|bin| wrk::prepare(bin, dir.path(), &accounts).map_err(|e| format!("FAILED: {e:#}"))),
        )
    } else {
        None
    };
    let mut out = Vec::new();
    for (kind, clients) in plan.iter().copied() {
        let transfers = kind == Kind::Transfer;
        let mut runs = Vec::new();
        let mut wrk_runs = Vec::new();
        let mut error = None;
        let mut wrk_error = None;
        for i in 0..cfg.runs {
            let seed = 3000 + i as u64;
            if suite_client || !transfers {
                let got = rt.block_on(async {
                    // The transfers are also seen from the server: its histogram and CPU.
                    let probe = if transfers { Some(Probe::start(server.addr, server.pid()).await?) } else { None };
                    let mut run = one_run(&[server.addr], kind, clients, accounts.clone(), cfg.duration, seed).await?;
                    if let Some(probe) = probe {
                        run.extra.extend(probe.finish(Load::Suite).await?);
                    }
                    anyhow::Ok(run)
                });
                match got {
                    Ok(r) => {
                        eprintln!(
                            "  {} run {}/{}: {} /s",
                            name(kind, clients),
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
            if let (true, Some(Ok(files)), None) = (transfers, &wrk_setup, &wrk_error) {
                match wrk::one_run(&rt, files, server.addr, server.pid(), clients, cfg.duration, seed) {
                    Ok(r) => {
                        eprintln!(
                            "  {} run {}/{}: {} /s",
                            wrk_name(clients),
                            i + 1,
                            cfg.runs,
                            crate::report::number(r.value)
                        );
                        wrk_runs.push(r);
                    }
                    Err(e) => wrk_error = Some(format!("FAILED: {e:#}")),
                }
            }
        }
        let wrk_outcome = if transfers {
            let wrk_skipped = match (&wrk_setup, wrk_error) {
                (None, _) | (Some(Ok(_)), None) => None,
                (Some(Err(reason)), _) => Some(reason.clone()),
                (Some(Ok(_)), Some(reason)) => Some(reason),
            };
            // After the suite's own row of the case, so that the two read side by side.
            let wrk_outcome = match (&wrk_setup, wrk_skipped) {
                (None, _) => None,
                (Some(_), Some(reason)) => {
                    eprintln!("  {}: skipped: {reason}", wrk_name(clients));
                    Some(Outcome::Skipped { scenario: SCENARIO.into(), name: wrk_name(clients), reason })
                }
                (Some(_), None) => {
                    let mut case = Case::new(SCENARIO, wrk_name(clients), "transfers/s", &wrk_runs)
                        .note(format!("{} s per run, alternating with the suite's client", cfg.duration.as_secs()));
                    if clients == 64 {
                        case = case.target(Target::AtLeast(40_000.0)).note("issue 18: also p99 ≤ 5 ms under wrk");
                    }
                    Some(Outcome::Measured(case))
                }
            };
            if !suite_client {
                out.extend(wrk_outcome);
                continue;
            }
            wrk_outcome
        } else {
            None
        };
        if let Some(e) = error {
            out.push(Outcome::Skipped {
                scenario: SCENARIO.into(),
                name: name(kind, clients),
                reason: format!("FAILED: {e:#}"),
            });
            out.extend(wrk_outcome);
            continue;
        }
        let unit = if kind == Kind::Transfer { "transfers/s" } else { "payments/s" };
        let mut case =
            Case::new(SCENARIO, name(kind, clients), unit, &runs).note(format!("{} s per run", cfg.duration.as_secs()));
        match kind {
            Kind::Transfer => {
                if clients == 64 {
                    case = case.target(Target::AtLeast(25_000.0)).note("target also p99 ≤ 10 ms; TigerBeetle ~2 100/s");
                }
                if cfg.baseline_clients.contains(&clients) {
                    let want = (clients == 64).then_some(4.0);
                    case = case.versus(format!("postgres/{clients}"), want).versus(format!("sqlite/{clients}"), None);
                    if clients == 64 {
                        case = case.versus("sqlite/shared/64", None);
                    }
                }
            }
            Kind::Payment { hot: false } => {
                if clients == 64 {
                    case = case.target(Target::AtLeast(10_000.0));
                }
            }
            Kind::Payment { hot: true } => {
                case = case.versus("postgres/hot/64", None);
            }
        }
        out.push(Outcome::Measured(case));
        out.extend(wrk_outcome);
    }
    let peak = server.peak_rss_kb().unwrap_or(0) as f64 / 1024.0;
    eprintln!("  server peak RSS {peak:.0} MB");
    server.stop();
    out
}
