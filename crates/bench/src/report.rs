//! The results: one [`Case`] per measured configuration, the table printed at the end, and
//! `BENCHMARKS.md` with the machine, the date and the commit.

use crate::stats::{ms, Percentiles, Summary};
use std::fmt::Write as _;
use std::path::Path;

/// One run of a case.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// Items per second (transfers, payments, lines), or for time cases the time in ms.
    pub value: f64,
    pub latency: Option<Percentiles>,
    /// Further figures of the run, by label (each becomes a median/min/max).
    pub extra: Vec<(&'static str, f64)>,
}

/// How a case is compared with the issue's target.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The value must be at least this.
    AtLeast(f64),
    /// The value must be at most this.
    AtMost(f64),
}

/// A measured configuration: its runs summed up.
#[derive(Clone, Debug)]
pub struct Case {
    /// Scenario number and name, e.g. "1 bulk, in-process".
    pub scenario: String,
    pub name: String,
    /// "transfers/s", "payments/s", "lines/s", "ms".
    pub unit: &'static str,
    pub runs: usize,
    pub value: Summary,
    pub p50_ms: Option<Summary>,
    pub p99_ms: Option<Summary>,
    pub p999_ms: Option<Summary>,
    pub extra: Vec<(&'static str, Summary)>,
    pub notes: Vec<String>,
    pub target: Option<Target>,
    /// A baseline's name for ratios ("postgres/1", "sqlite/64"), if this is a baseline.
    pub key: Option<String>,
    /// Baselines to report paycore's ratio against, with the issue's target ratio if any.
    pub versus: Vec<(String, Option<f64>)>,
}

impl Case {
    pub fn new(scenario: &str, name: impl Into<String>, unit: &'static str, runs: &[Run]) -> Case {
        let values: Vec<f64> = runs.iter().map(|r| r.value).collect();
        let lat = |f: fn(&Percentiles) -> u64| -> Option<Summary> {
            let v: Vec<f64> = runs.iter().filter_map(|r| r.latency.as_ref()).map(|p| ms(f(p))).collect();
            (!v.is_empty()).then(|| Summary::of(&v))
        };
        let mut extra: Vec<(&'static str, Summary)> = Vec::new();
        if let Some(first) = runs.first() {
            for (label, _) in &first.extra {
                let v: Vec<f64> =
                    runs.iter().filter_map(|r| r.extra.iter().find(|(l, _)| l == label)).map(|(_, x)| *x).collect();
                extra.push((label, Summary::of(&v)));
            }
        }
        Case {
            scenario: scenario.to_owned(),
            name: name.into(),
            unit,
            runs: runs.len(),
            value: Summary::of(&values),
            p50_ms: lat(|p| p.p50),
            p99_ms: lat(|p| p.p99),
            p999_ms: lat(|p| p.p999),
            extra,
            notes: Vec::new(),
            target: None,
            key: None,
            versus: Vec::new(),
        }
    }

    pub fn target(mut self, target: Target) -> Case {
        self.target = Some(target);
        self
    }

    pub fn key(mut self, key: impl Into<String>) -> Case {
        self.key = Some(key.into());
        self
    }

    pub fn versus(mut self, key: impl Into<String>, target_ratio: Option<f64>) -> Case {
        self.versus.push((key.into(), target_ratio));
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Case {
        self.notes.push(note.into());
        self
    }

    fn target_text(&self) -> String {
        match self.target {
            None => String::new(),
            Some(Target::AtLeast(t)) => {
                format!("≥ {} {}", number(t), if self.value.median >= t { "✅" } else { "❌" })
            }
            Some(Target::AtMost(t)) => {
                format!("≤ {} {}", number(t), if self.value.median <= t { "✅" } else { "❌" })
            }
        }
    }
}

/// What a scenario gave: a case, or the reason it was not run.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // a few dozen per command
pub enum Outcome {
    Measured(Case),
    Skipped { scenario: String, name: String, reason: String },
}

/// A number for people: thousands grouped, few decimals.
pub fn number(x: f64) -> String {
    if !x.is_finite() {
        return "–".to_owned();
    }
    if x.abs() >= 1000.0 {
        #[allow(clippy::cast_possible_truncation)]
        let whole = x.round() as i64;
        let digits = whole.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if whole < 0 {
            out.insert(0, '-');
        }
        out
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn summary(s: &Summary, runs: usize) -> String {
    if runs <= 1 {
        number(s.median)
    } else {
        format!("{} ({}–{})", number(s.median), number(s.min), number(s.max))
    }
}

fn latency(case: &Case) -> String {
    let parts: Vec<String> = [case.p50_ms, case.p99_ms, case.p999_ms]
        .iter()
        .map(|s| s.map_or_else(|| "–".to_owned(), |s| number(s.median)))
        .collect();
    if case.p50_ms.is_none() {
        String::new()
    } else {
        parts.join(" / ")
    }
}

/// The results table, in Markdown (also printed to the terminal).
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    out.push_str("| scenario | case | result: median (min–max) | latency p50 / p99 / p99.9 ms | target | notes |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for outcome in outcomes {
        match outcome {
            Outcome::Measured(case) => {
                let mut notes: Vec<String> =
                    case.extra.iter().map(|(label, s)| format!("{label}: {}", summary(s, case.runs))).collect();
                notes.extend(case.notes.iter().cloned());
                let _ = writeln!(
                    out,
                    "| {} | {} | {} {} | {} | {} | {} |",
                    case.scenario,
                    case.name,
                    summary(&case.value, case.runs),
                    case.unit,
                    latency(case),
                    case.target_text(),
                    notes.join("; ")
                );
            }
            Outcome::Skipped { scenario, name, reason } => {
                let _ = writeln!(out, "| {scenario} | {name} | skipped | | | {reason} |");
            }
        }
    }
    out
}

/// paycore's throughput as a ratio to each baseline measured in the same command.
pub fn ratios(outcomes: &[Outcome]) -> String {
    let cases: Vec<&Case> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Measured(c) => Some(c),
            Outcome::Skipped { .. } => None,
        })
        .collect();
    let mut out = String::new();
    for case in &cases {
        for (key, target) in &case.versus {
            let Some(baseline) = cases.iter().find(|c| c.key.as_deref() == Some(key.as_str())) else { continue };
            let ratio = case.value.median / baseline.value.median;
            let verdict = match target {
                Some(t) if ratio >= *t => format!(" (target ≥ {t}× ✅)"),
                Some(t) => format!(" (target ≥ {t}× ❌)"),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "| {} — {} | {} — {} | {}× | {} |",
                case.scenario,
                case.name,
                baseline.scenario,
                baseline.name,
                number(ratio),
                verdict.trim()
            );
        }
    }
    if out.is_empty() {
        return "No paycore case and baseline were both measured in this command.\n".to_owned();
    }
    format!("| paycore | baseline | ratio of throughputs (medians) | verdict |\n|---|---|---|---|\n{out}")
}

/// The machine and the build the figures come from.
pub struct Machine {
    pub cores: usize,
    pub memory: String,
    pub cpu: String,
    pub date: String,
    pub commit: String,
    pub fsync: String,
    pub postgres: String,
}

impl Machine {
    pub fn describe(root: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(|| "unknown".to_owned(), |s| s.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or_else(|| "unknown".to_owned(), |kb| format!("{:.1} GiB", kib_to_gib(kb)));
        let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
        let date = command("date", &["-u", "+%Y-%m-%d %H:%M UTC"], root).unwrap_or_default();
        let mut commit = command("git", &["rev-parse", "--short", "HEAD"], root).unwrap_or_else(|| "unknown".into());
        if command("git", &["status", "--porcelain", "--untracked-files=no"], root).is_some_and(|s| !s.is_empty()) {
            commit.push_str(" (with uncommitted changes)");
        }
        Machine { cores, memory, cpu, date, commit, fsync: fsync_cost(), postgres: String::new() }
    }

    pub fn markdown(&self) -> String {
        format!(
            "- machine: {} cores (`nproc`), {} memory, CPU: {}\n- fsync (4 KiB write + fdatasync, median of 200, in a temp dir): {}\n- PostgreSQL: {}\n- date: {}\n- commit: `{}`\n",
            self.cores,
            self.memory,
            self.cpu,
            self.fsync,
            if self.postgres.is_empty() { "not used in this command" } else { &self.postgres },
            self.date,
            self.commit
        )
    }
}

#[allow(clippy::cast_precision_loss)]
fn kib_to_gib(kb: u64) -> f64 {
    kb as f64 / 1024.0 / 1024.0
}

fn command(program: &str, args: &[&str], dir: &Path) -> Option<String> {
    let out = std::process::Command::new(program).args(args).current_dir(dir).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The cost of one durable write on this disk: what caps any design that syncs per request.
fn fsync_cost() -> String {
    use std::io::Write;
    let Ok(dir) = tempfile::tempdir() else { return "unknown".into() };
    let Ok(mut file) = std::fs::File::create(dir.path().join("f")) else { return "unknown".into() };
    let block = [7u8; 4096];
    let mut times = Vec::with_capacity(200);
    for _ in 0..200 {
        let started = std::time::Instant::now();
        if file.write_all(&block).and_then(|()| file.sync_data()).is_err() {
            return "unknown".into();
        }
        times.push(crate::stats::nanos(started.elapsed()));
    }
    match Percentiles::of(times) {
        Some(p) => format!("{:.0} µs (p99 {:.0} µs)", ms(p.p50) * 1000.0, ms(p.p99) * 1000.0),
        None => "unknown".into(),
    }
}

/// Writes `BENCHMARKS.md`.
pub fn write(
    path: &Path,
    machine: &Machine,
    command_line: &str,
    outcomes: &[Outcome],
    shared_note: Option<&str>,
    appendix: &str,
) -> std::io::Result<()> {
    let mut md = String::new();
    md.push_str("# paycore benchmarks\n\n");
    md.push_str("Written by the benchmark suite (`crates/bench`); do not edit the tables by hand, run it again:\n\n");
    md.push_str("```\ncargo run --release -p paycore-bench -- all        # every scenario, 3 runs each\ncargo run --release -p paycore-bench -- SCENARIO   # one of: bulk, http-bulk, realtime, postgres, sqlite, batch, startup\ncargo run --release -p paycore-bench -- all --quick  # smoke run, < 60 s\n```\n\n");
    let _ = writeln!(md, "This file came from `{command_line}`.\n");
    md.push_str("## Machine\n\n");
    md.push_str(&machine.markdown());
    if let Some(note) = shared_note {
        let _ = writeln!(md, "\n> {note}");
    }
    md.push_str("\n## Results\n\nEach figure is the median over the runs of the case, with the minimum and maximum in brackets; latencies are the medians of each run's percentile. Durable settings everywhere: a request is answered only after its commit is on disk (paycore and the SQLite baseline: WAL with `synchronous=FULL`; PostgreSQL: `synchronous_commit=on`).\n\n");
    md.push_str(&table(outcomes));
    md.push_str("\n## paycore against the baselines, same command\n\n");
    md.push_str(&ratios(outcomes));
    let tigerbeetle_measured = outcomes
        .iter()
        .any(|o| matches!(o, Outcome::Measured(c) if c.key.as_deref().is_some_and(|k| k.starts_with("tigerbeetle-"))));
    if tigerbeetle_measured {
        md.push_str("\nTigerBeetle was measured in this command (`--tigerbeetle`): its own `benchmark`, the same workload, run between paycore's runs; its rows and ratios are above.\n");
    } else {
        md.push_str("\nTigerBeetle 0.17.8 on this machine kind (from the issue, not run here; `--tigerbeetle PATH` measures it beside scenario 1): about 380 000 transfers/s on scenario 1 at 1M (p99 41 ms), 247 000/s at 10M, about 2 100 transfers/s with one transfer per request.\n");
    }
    if !appendix.is_empty() {
        md.push('\n');
        md.push_str(appendix);
    }
    std::fs::write(path, md)
}
