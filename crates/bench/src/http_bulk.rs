//! Scenario 1 through HTTP: the bulk workload as `POST /v1/transfers {"transfers":[…8 189…]}`,
//! one connection, one request in flight. Request bodies are made on another thread ahead of
//! time, so the client's JSON writing is not on the clock.

use crate::inprocess::size_name;
use crate::report::{Case, Outcome, Run, Target};
use crate::server::{self, Client};
use crate::stats::{nanos, rate, Percentiles};
use crate::workload::{Rng, ACCOUNTS, BATCH};
use crate::Config;
use anyhow::bail;
use bytes::Bytes;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

const SCENARIO: &str = "1 bulk, HTTP JSON";

fn body(rng: &mut Rng, accounts: &[String], count: usize) -> Bytes {
    let mut s = String::with_capacity(count * 120 + 16);
    s.push_str(r#"{"transfers":["#);
    for i in 0..count {
        let (debit, credit) = rng.pair(accounts.len());
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            r#"{{"debit_account":"{}","credit_account":"{}","amount":{},"currency":"EUR"}}"#,
            accounts[debit],
            accounts[credit],
            1 + rng.below(1000)
        );
    }
    s.push_str("]}");
    Bytes::from(s)
}

fn count_ok(body: &[u8]) -> usize {
    let needle = br#""result":"ok""#;
    body.windows(needle.len()).filter(|w| *w == needle).count()
}

pub(crate) async fn one_run(
    addr: std::net::SocketAddr,
    accounts: Arc<Vec<String>>,
    total: u64,
    seed: u64,
) -> anyhow::Result<Run> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let maker = std::thread::spawn(move || {
        let mut rng = Rng::new(seed);
        let mut left = total;
        while left > 0 {
            let count = BATCH.min(usize::try_from(left).unwrap_or(BATCH));
            left -= count as u64;
            if tx.blocking_send(body(&mut rng, &accounts, count)).is_err() {
                break;
            }
        }
    });
    let mut client = Client::connect(addr).await?;
    let mut latencies = Vec::new();
    let mut done = 0u64;
    let mut wall = std::time::Duration::ZERO;
    while let Some(body) = rx.recv().await {
        let expected = BATCH.min(usize::try_from(total - done)?);
        let sent = Instant::now();
        let (status, answer) = client.post("/v1/transfers", body).await?;
        let took = sent.elapsed();
        if !status.is_success() {
            bail!("POST /v1/transfers: {status} {}", String::from_utf8_lossy(&answer[..answer.len().min(300)]));
        }
        let ok = count_ok(&answer);
        if ok != expected {
            bail!("{ok} of {expected} transfers ok: {}", String::from_utf8_lossy(&answer[..answer.len().min(300)]));
        }
        wall += took;
        latencies.push(nanos(took));
        done += expected as u64;
    }
    let _ = maker.join();
    // Throughput over the time requests were in flight (one at a time, back to back).
    Ok(Run { value: rate(done, wall), latency: Percentiles::of(latencies), extra: Vec::new() })
}

pub fn run(cfg: &Config) -> Vec<Outcome> {
    let skip = |name: String, reason: String| {
        eprintln!("  skipped: {reason}");
        Outcome::Skipped { scenario: SCENARIO.into(), name, reason }
    };
    let name = |n: u64| format!("{} transfers, {BATCH}/request", size_name(n));
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return vec![skip("all".into(), e.to_string())],
    };
    let data = dir.path().join("data");
    let server = match server::available(&cfg.root, &data) {
        Ok(s) => s,
        Err(reason) => return cfg.bulk_sizes.iter().map(|&n| skip(name(n), reason.clone())).collect(),
    };
    let rt = match server::client_runtime() {
        Ok(rt) => rt,
        Err(e) => return vec![skip("all".into(), e.to_string())],
    };
    let addr = server.addr;
    let accounts = match rt.block_on(server::open_accounts(addr, ACCOUNTS)) {
        Ok(a) => Arc::new(a),
        Err(e) => return vec![skip("all".into(), format!("FAILED opening accounts: {e:#}"))],
    };
    let mut out = Vec::new();
    for &n in &cfg.bulk_sizes {
        let mut runs = Vec::new();
        let mut error = None;
        for i in 0..cfg.runs {
            match rt.block_on(one_run(addr, accounts.clone(), n, 2000 + i as u64)) {
                Ok(r) => {
                    eprintln!(
                        "  http bulk {} run {}/{}: {} /s",
                        size_name(n),
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
        let peak = server.peak_rss_kb().unwrap_or(0) as f64 / 1024.0;
        match error {
            None => out.push(Outcome::Measured(
                Case::new(SCENARIO, name(n), "transfers/s", &runs)
                    .target(Target::AtLeast(if n >= 10_000_000 { 250_000.0 } else { 400_000.0 }))
                    .key(format!("paycore-http-bulk-{}", size_name(n)))
                    .versus("postgres/1", Some(50.0))
                    .note(format!("server peak RSS {peak:.0} MB")),
            )),
            Some(e) => out.push(skip(name(n), format!("FAILED: {e:#}"))),
        }
    }
    server.stop();
    out
}
