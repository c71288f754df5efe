//! TigerBeetle side by side with scenario 1 (`bulk --tigerbeetle PATH`): runs TigerBeetle's own
//! `benchmark` command with the same workload — 10 000 accounts, uniformly random pairs,
//! [`BATCH`] transfers per request, one client with one request in flight, no delay between
//! requests — on a data file in a fresh temporary folder (the same disk as paycore's SQLite
//! data), and reads the figures it prints.
//!
//! The suite only takes the binary's path: nothing here builds TigerBeetle or ships any of its
//! code. The flags are those of TigerBeetle 0.17.8 (`src/tigerbeetle/cli.zig`); `benchmark`
//! formats the file, starts a single replica on it and drives it from the same process.

use crate::report::Run;
use crate::stats::Percentiles;
use crate::workload::{ACCOUNTS, BATCH};
use anyhow::{bail, Context};
use std::path::Path;
use std::process::Command;

/// What TigerBeetle's `benchmark` printed about its `create_transfers` stage.
#[derive(Clone, Debug, PartialEq)]
pub struct Printed {
    /// `load accepted = N tx/s`: transfers over the time from the first request to the last reply.
    pub transfers_per_s: u64,
    /// `N batches in S s`.
    pub batches: Option<u64>,
    pub seconds: Option<f64>,
    /// `batch latency pN = M ms` (1 ms buckets): p50, p99 and p100.
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    pub max_ms: Option<u64>,
}

/// Reads the figures of the `create_transfers` stage out of the benchmark's output. The query
/// stage that follows prints `query latency …` lines, which are not taken.
pub fn parse(output: &str) -> anyhow::Result<Printed> {
    let mut printed =
        Printed { transfers_per_s: 0, batches: None, seconds: None, p50_ms: None, p99_ms: None, max_ms: None };
    let mut rate = None;
    for line in output.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("load accepted =") {
            let number = rest.trim().strip_suffix("tx/s").map(str::trim);
            rate = Some(
                number
                    .and_then(|n| n.parse::<u64>().ok())
                    .with_context(|| format!("unreadable throughput line {line:?}"))?,
            );
        } else if let Some(rest) = line.strip_prefix("batch latency p") {
            // "batch latency p50  = 27 ms", "batch latency p100 = 60 ms"
            let Some((percentile, value)) = rest.split_once('=') else { continue };
            let ms = value.split_whitespace().next().and_then(|v| v.parse::<u64>().ok());
            match percentile.trim() {
                "50" => printed.p50_ms = ms,
                "99" => printed.p99_ms = ms,
                "100" => printed.max_ms = ms,
                _ => {}
            }
        } else if let Some((count, rest)) = line.split_once(" batches in ") {
            printed.batches = count.trim().parse().ok();
            printed.seconds = rest.trim().strip_suffix('s').and_then(|s| s.trim().parse().ok());
        }
    }
    let Some(rate) = rate else {
        let tail: Vec<&str> = output.lines().rev().take(8).collect();
        bail!(
            "no \"load accepted = N tx/s\" line in TigerBeetle's output; its last lines: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    };
    printed.transfers_per_s = rate;
    Ok(printed)
}

impl Printed {
    /// As a run of the suite. TigerBeetle prints no p99.9; the caller blanks that column.
    pub fn run(&self) -> Run {
        let ns = |ms: u64| ms.saturating_mul(1_000_000);
        let latency = match (self.p50_ms, self.p99_ms) {
            (Some(p50), Some(p99)) => Some(Percentiles {
                count: usize::try_from(self.batches.unwrap_or(0)).unwrap_or(usize::MAX),
                p50: ns(p50),
                p99: ns(p99),
                p999: ns(self.max_ms.unwrap_or(p99)),
                max: ns(self.max_ms.unwrap_or(p99)),
            }),
            _ => None,
        };
        let mut extra = Vec::new();
        if let Some(max) = self.max_ms {
            extra.push(("batch max ms", max as f64));
        }
        Run { value: self.transfers_per_s as f64, latency, extra }
    }
}

/// The version line of the binary (`tigerbeetle version`), e.g. "TigerBeetle version 0.17.8".
pub fn version(binary: &Path) -> anyhow::Result<String> {
    let out = Command::new(binary)
        .arg("version")
        .output()
        .with_context(|| format!("--tigerbeetle {}: cannot run it", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(line) if out.status.success() => Ok(line.to_owned()),
        _ => bail!(
            "--tigerbeetle {}: `version` failed ({}): {}",
            binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// The arguments of one benchmark run of `transfers` transfers on `file`.
pub fn arguments(transfers: u64, file: &Path) -> Vec<String> {
    vec![
        "benchmark".to_owned(),
        format!("--account-count={ACCOUNTS}"),
        format!("--transfer-count={transfers}"),
        format!("--transfer-batch-count={BATCH}"),
        "--clients=1".to_owned(),
        format!("--file={}", file.display()),
    ]
}

/// One run of TigerBeetle's benchmark on a fresh data file in a temporary folder (removed after).
pub fn run_once(binary: &Path, transfers: u64) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("0_0.tigerbeetle.benchmark");
    let out = Command::new(binary)
        .args(arguments(transfers, &file))
        .current_dir(dir.path())
        .output()
        .with_context(|| format!("running {} benchmark", binary.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        bail!(
            "{} benchmark failed ({}): {}",
            binary.display(),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(parse(&format!("{stdout}\n{stderr}"))?.run())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured: `tigerbeetle benchmark --account-count=10000 --transfer-count=200000
    /// --transfer-batch-count=8189 --clients=1 --file=…` (TigerBeetle at its 0.17.8 tag, built
    /// with `zig build -Drelease`, on the 2-core bench machine while other builds ran): its
    /// standard output, then the first and last lines of its log on standard error, as
    /// [`run_once`] joins them.
    const SAMPLE: &str = "\
25 batches in 1.33 s
transfer batch size = 8189 txs
transfer batch delay = 0ns
load accepted = 149840 tx/s
batch latency p1   = 0 ms
batch latency p50  = 50 ms
batch latency p99  = 68 ms
batch latency p100 = 76 ms

100 queries in 0.9 s
query latency p1   = 0 ms
query latency p50  = 4 ms
query latency p99  = 55 ms
query latency p100 = 73 ms

rss = 3180072960 bytes

datafile empty = 1141374976 bytes
datafile = 1284509696 bytes

2026-12-05 10:26:35.664Z info(io): opening \"0_0.tigerbeetle.benchmark\"...
2026-12-05 10:26:43.737Z info(main): multiversioning: upgrades disabled due to --addresses=0
2026-12-05 10:26:49.016Z info: Benchmark running against { 127.0.0.1:40885 }
2026-12-05 10:26:49.019Z info(benchmark): Benchmark seed = 42
2026-12-05 10:26:51.911Z info(main): stdin closed, exiting
";

    #[test]
    fn reads_the_transfer_stage() -> anyhow::Result<()> {
        let printed = parse(SAMPLE)?;
        assert_eq!(
            printed,
            Printed {
                transfers_per_s: 149_840,
                batches: Some(25),
                seconds: Some(1.33),
                p50_ms: Some(50),
                p99_ms: Some(68),
                max_ms: Some(76),
            }
        );
        let run = printed.run();
        assert_eq!(run.value, 149_840.0);
        let latency = run.latency.context("latencies were printed")?;
        assert_eq!((latency.p50, latency.p99, latency.max), (50_000_000, 68_000_000, 76_000_000));
        assert_eq!(run.extra, vec![("batch max ms", 76.0)]);
        Ok(())
    }

    #[test]
    fn query_latencies_are_not_taken_for_transfers() -> anyhow::Result<()> {
        let only_queries = "load accepted = 5 tx/s\nquery latency p50  = 9 ms\n";
        let printed = parse(only_queries)?;
        assert_eq!((printed.transfers_per_s, printed.p50_ms), (5, None));
        assert!(printed.run().latency.is_none());
        Ok(())
    }

    #[test]
    fn no_throughput_line_is_an_error_that_shows_the_output() {
        let e = parse("error: --transfer-batch-count: expected a number\n").err();
        let text = e.map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(text.contains("load accepted"), "{text}");
        assert!(text.contains("expected a number"), "{text}");
        let e = parse("load accepted = lots tx/s\n").err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(e.contains("unreadable throughput line"), "{e}");
    }

    #[test]
    fn the_workload_flags() {
        let args = arguments(1_000_000, Path::new("/tmp/x/0_0.tigerbeetle.benchmark"));
        assert_eq!(
            args,
            [
                "benchmark",
                "--account-count=10000",
                "--transfer-count=1000000",
                "--transfer-batch-count=8189",
                "--clients=1",
                "--file=/tmp/x/0_0.tigerbeetle.benchmark",
            ]
        );
    }
}
