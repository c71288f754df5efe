//! Scenario 4: batch files. A 100 000 and a 1 000 000-line CSV payment file from upload
//! (`POST /v1/batches?format=csv&payer=…`) to report ready (`GET /v1/batches/{id}` polled with
//! backoff until `completed`, then `GET /v1/batches/{id}/report?format=csv`): total time,
//! lines/s, and the server's peak RSS (VmHWM). A fresh server per run, so the peak is the
//! run's. Skips cleanly while `POST /v1/batches` answers 404.

use crate::inprocess::size_name;
use crate::report::{Case, Outcome, Run, Target};
use crate::server::{self, id_of, Client};
use crate::stats::rate;
use crate::workload::Rng;
use crate::Config;
use anyhow::bail;
use bytes::Bytes;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

const SCENARIO: &str = "4 batch file, CSV";
const PAYEES: usize = 1000;

fn csv(lines: u64, payees: &[String], seed: u64) -> Bytes {
    let mut rng = Rng::new(seed);
    let mut s = String::with_capacity(usize::try_from(lines).unwrap_or(0) * 64);
    s.push_str("payee,amount,currency,reference\n");
    for line in 0..lines {
        let payee = &payees[rng.below(payees.len())];
        let cents = 1 + rng.below(100_000);
        let _ = writeln!(s, "{payee},{}.{:02},EUR,inv-{line}", cents / 100, cents % 100);
    }
    Bytes::from(s)
}

enum Ended {
    Done(Run),
    /// The endpoint does not exist (yet).
    NotFound(String),
}

async fn upload_to_report(client: &mut Client, payer: &str, file: Bytes, lines: u64) -> anyhow::Result<Ended> {
    // An empty upload first: a missing endpoint answers 404 (and a server may close the
    // connection before reading a large body it will not take).
    let (status, body) =
        client.post_as(&format!("/v1/batches?format=csv&payer={payer}"), Bytes::new(), "text/csv").await?;
    if status.as_u16() == 404 {
        return Ok(Ended::NotFound(format!(
            "POST /v1/batches answers 404 ({})",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )));
    }
    let started = Instant::now();
    let (status, body) = client.post_as(&format!("/v1/batches?format=csv&payer={payer}"), file, "text/csv").await?;
    if !status.is_success() {
        bail!("POST /v1/batches: {status} {}", String::from_utf8_lossy(&body[..body.len().min(300)]));
    }
    let uploaded = started.elapsed();
    let id = id_of(&body)?;
    let mut wait = Duration::from_millis(2);
    // When the batch was first seen past validation, and completed (to within a poll).
    let mut validated = None;
    let processed;
    loop {
        let (status, body) = client.get(&format!("/v1/batches/{id}")).await?;
        if !status.is_success() {
            bail!("GET /v1/batches/{id}: {status} {}", String::from_utf8_lossy(&body));
        }
        let value: serde_json::Value = serde_json::from_slice(&body)?;
        let state = value.get("status").and_then(|s| s.as_str());
        if validated.is_none() && state != Some("validating") {
            validated = Some(started.elapsed());
        }
        match state {
            Some("completed") => {
                processed = started.elapsed();
                break;
            }
            Some("failed" | "rejected" | "cancelled") => bail!("the batch ended {}", String::from_utf8_lossy(&body)),
            _ => {}
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the batch did not complete within 10 minutes");
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 3 / 2).min(Duration::from_millis(100));
    }
    let (status, report) = client.get(&format!("/v1/batches/{id}/report?format=csv")).await?;
    if !status.is_success() {
        bail!("GET /v1/batches/{id}/report: {status} {}", String::from_utf8_lossy(&report[..report.len().min(300)]));
    }
    let total = started.elapsed();
    let validated = validated.unwrap_or(processed);
    let rows = report.iter().filter(|b| **b == b'\n').count() as u64;
    if rows < lines {
        bail!("the report has {rows} lines for {lines} items");
    }
    Ok(Ended::Done(Run {
        value: rate(lines, total),
        latency: None,
        extra: vec![
            ("total s", total.as_secs_f64()),
            ("upload s", uploaded.as_secs_f64()),
            ("validate s", (validated - uploaded).as_secs_f64()),
            ("process s", (processed - validated).as_secs_f64()),
            ("report s", (total - processed).as_secs_f64()),
            ("report MB", report.len() as f64 / 1e6),
        ],
    }))
}

/// One run on a fresh server: its lines/s, total time and peak RSS.
fn one_run(cfg: &Config, lines: u64, seed: u64) -> anyhow::Result<Result<Run, String>> {
    let dir = tempfile::tempdir()?;
    let server = match server::available(&cfg.root, &dir.path().join("data")) {
        Ok(s) => s,
        Err(reason) => return Ok(Err(reason)),
    };
    let rt = server::client_runtime()?;
    let addr = server.addr;
    let ended = rt.block_on(async {
        let accounts = server::open_accounts(addr, PAYEES + 1).await?;
        let file = csv(lines, &accounts[1..], seed);
        let mut client = Client::connect(addr).await?;
        upload_to_report(&mut client, &accounts[0], file, lines).await
    })?;
    let peak_mb = server.peak_rss_kb().unwrap_or(0) as f64 / 1024.0;
    server.stop();
    Ok(match ended {
        Ended::Done(mut run) => {
            run.extra.push(("peak RSS MB", peak_mb));
            Ok(run)
        }
        Ended::NotFound(reason) => Err(reason),
    })
}

pub fn run(cfg: &Config) -> Vec<Outcome> {
    let mut out = Vec::new();
    let mut totals: Vec<(u64, f64)> = Vec::new();
    for &lines in &cfg.batch_sizes {
        let name = format!("{} lines, upload to report", size_name(lines));
        let mut runs = Vec::new();
        let mut skipped = None;
        for i in 0..cfg.runs {
            match one_run(cfg, lines, 6000 + i as u64) {
                Ok(Ok(r)) => {
                    eprintln!(
                        "  batch {} run {}/{}: {} lines/s",
                        size_name(lines),
                        i + 1,
                        cfg.runs,
                        crate::report::number(r.value)
                    );
                    runs.push(r);
                }
                Ok(Err(reason)) => {
                    skipped = Some(reason);
                    break;
                }
                Err(e) => {
                    skipped = Some(format!("FAILED: {e:#}"));
                    break;
                }
            }
        }
        if let Some(reason) = skipped {
            eprintln!("  skipped: {reason}");
            out.push(Outcome::Skipped { scenario: SCENARIO.into(), name, reason });
            continue;
        }
        let mut case = Case::new(SCENARIO, name, "lines/s", &runs);
        let total = case.extra.iter().find(|(l, _)| *l == "total s").map_or(f64::NAN, |(_, s)| s.median);
        totals.push((lines, total));
        if lines == 1_000_000 {
            case = case.target(Target::AtLeast(200_000.0)).note("target: ≤ 5 s total, peak RSS ≤ 300 MB");
        }
        out.push(Outcome::Measured(case));
    }
    if let [(small, t_small), .., (large, t_large)] = totals[..] {
        if large > small {
            eprintln!(
                "  time ratio {}→{}: {:.2}× for {}× the lines",
                size_name(small),
                size_name(large),
                t_large / t_small,
                large / small
            );
            if let Some(Outcome::Measured(last)) = out.last_mut() {
                last.notes.push(format!(
                    "time {}× that of {} for {}× the lines (target ≤ 10.5×)",
                    crate::report::number(t_large / t_small),
                    size_name(small),
                    large / small
                ));
            }
        }
    }
    out
}
