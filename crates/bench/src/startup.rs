//! Scenario 5: start-up and recovery. A data folder is filled through the engine in-process
//! (10 000 accounts, N transfers), then the real binary is started on it, `runs` times: the time
//! from spawning the process to its listening line, and to the first `200` of `GET /healthz`.
//! Recovery: the same, each run on a fresh copy of the folder as a `kill -9` right after the
//! last commit leaves it (see [`fill`]): SQLite recovers its WAL and paycore replays the
//! balances of the transfers after the last checkpoint before it serves.

use crate::inprocess::{copy_store, fill, size_name};
use crate::report::{Case, Outcome, Run, Target};
use crate::server::{self, Client, Server};
use crate::stats::ms;
use crate::stats::nanos;
use crate::Config;
use std::time::{Duration, Instant};

const SCENARIO: &str = "5 start-up";

fn one_start(bin: &std::path::Path, data: &std::path::Path) -> anyhow::Result<Run> {
    let server = Server::start(bin, data)?;
    let rt = server::client_runtime()?;
    let healthy = rt.block_on(async {
        loop {
            if let Ok(mut client) = Client::connect(server.addr).await {
                if let Ok((status, _)) = client.get("/healthz").await {
                    if status.is_success() {
                        return Ok(Instant::now());
                    }
                }
            }
            if server.spawned.elapsed() > Duration::from_secs(120) {
                anyhow::bail!("no 200 from /healthz within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })?;
    let listening = server.listening_after;
    let serving = healthy - server.spawned;
    server.stop();
    Ok(Run { value: ms(nanos(serving)), latency: None, extra: vec![("to listening line ms", ms(nanos(listening)))] })
}

// Long on purpose: fill, clean start, crash image, start after kill -9 — one sequence, in order.
pub fn run(cfg: &Config) -> Vec<Outcome> {
    let mut out = Vec::new();
    let bin = match server::binary(&cfg.root) {
        Ok(b) => b,
        Err(e) => {
            return cfg
                .startup_sizes
                .iter()
                .map(|&n| Outcome::Skipped {
                    scenario: SCENARIO.into(),
                    name: format!("{} transfers stored", size_name(n)),
                    reason: format!("server not available: {e:#}"),
                })
                .collect()
        }
    };
    // Is the binary serving at all? (Before spending a minute filling a data folder.)
    let probe = tempfile::tempdir().map_err(|e| e.to_string()).and_then(|dir| {
        let server = server::available(&cfg.root, &dir.path().join("data"))?;
        server.stop();
        Ok(())
    });
    if let Err(reason) = probe {
        eprintln!("  skipped: {reason}");
        return cfg
            .startup_sizes
            .iter()
            .map(|&n| Outcome::Skipped {
                scenario: SCENARIO.into(),
                name: format!("{} transfers stored", size_name(n)),
                reason: reason.clone(),
            })
            .collect();
    }
    for &n in &cfg.startup_sizes {
        let names = [
            format!("{} transfers stored, start to first 200 of /healthz", size_name(n)),
            format!("{} transfers stored, after kill -9: start to first 200 of /healthz", size_name(n)),
        ];
        let result = (|| -> anyhow::Result<Result<[Vec<Run>; 2], String>> {
            let dir = tempfile::tempdir()?;
            let (data, image) = (dir.path().join("data"), dir.path().join("crash-image"));
            let filled = fill(&data, n, Some(&image))?;
            eprintln!("  filled {} transfers in {:.1} s", size_name(n), filled.as_secs_f64());
            let size = |name: &str| std::fs::metadata(image.join(name)).map_or(0, |m| m.len()) / 1_000_000;
            eprintln!("  crash image: paycore.db {} MB, WAL {} MB", size("paycore.db"), size("paycore.db-wal"));
            let mut clean = Vec::new();
            let mut recovered = Vec::new();
            for i in 0..cfg.runs {
                // Each recovery starts from the crash image: the first start checkpoints.
                let crashed = dir.path().join(format!("crashed-{i}"));
                copy_store(&image, &crashed)?;
                for (kind, folder, runs) in [("start", &data, &mut clean), ("recovery", &crashed, &mut recovered)] {
                    match one_start(&bin, folder) {
                        Ok(r) => {
                            eprintln!("  {kind} {} run {}/{}: {:.0} ms", size_name(n), i + 1, cfg.runs, r.value);
                            runs.push(r);
                        }
                        Err(e) => return Ok(Err(format!("server not available: {e:#}"))),
                    }
                }
                std::fs::remove_dir_all(&crashed)?;
            }
            Ok(Ok([clean, recovered]))
        })();
        match result {
            Ok(Ok(cases)) => {
                for (name, runs) in names.into_iter().zip(cases) {
                    let mut case = Case::new(SCENARIO, name, "ms", &runs);
                    if n >= 10_000_000 {
                        case = case.target(Target::AtMost(1000.0));
                    }
                    out.push(Outcome::Measured(case));
                }
            }
            Ok(Err(reason)) => {
                eprintln!("  skipped: {reason}");
                for name in names {
                    out.push(Outcome::Skipped { scenario: SCENARIO.into(), name, reason: reason.clone() });
                }
            }
            Err(e) => {
                for name in names {
                    out.push(Outcome::Skipped { scenario: SCENARIO.into(), name, reason: format!("FAILED: {e:#}") });
                }
            }
        }
    }
    out
}
