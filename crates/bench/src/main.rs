//! # paycore-bench: the benchmark suite
//!
//! ```text
//! cargo run --release -p paycore-bench -- all           # every scenario, 3 runs each (~15-20 min)
//! cargo run --release -p paycore-bench -- bulk          # one scenario (see below)
//! cargo run --release -p paycore-bench -- all --quick   # smoke run: small sizes, 1 run, < 60 s
//! cargo run --release -p paycore-bench -- realtime --case transfers --clients 64 --no-write
//! ```
//!
//! Prints a table and writes `BENCHMARKS.md` at the repository root (machine: cores, memory,
//! CPU model, fsync cost; date; commit). Each figure is the median over `--runs` runs
//! (default 3) with min and max; paycore's throughput is given as a ratio to each baseline
//! measured in the same command. Durable settings only: every answer waits for its fsync.
//!
//! Scenarios (issue 4):
//!
//! - `bulk` (1): TigerBeetle's workload in-process — 10 000 accounts without limits, random
//!   debit/credit pairs, 8 189 transfers per request, one request in flight, 1M and 10M
//!   transfers — on the engine with its SQLite store, on the pure state machine, and the
//!   engine's phases by hand (load / execute / commit). With `--tigerbeetle PATH`, TigerBeetle's
//!   own `PATH benchmark` runs the same workload between paycore's runs (a data file in a temp
//!   folder, on the same disk as paycore's), and the tables give both medians and their ratio.
//!   The suite never builds TigerBeetle: build it from its source and pass the binary.
//! - `http-bulk` (1): the same workload through `POST /v1/transfers` of the real binary.
//! - `realtime` (2): one transfer, or one payment (create + confirm), per HTTP request from
//!   1, 16, 64, 256 clients on keep-alive connections; and with a hot merchant (90%). The
//!   transfers also through `wrk` (one thread, `crates/bench/wrk/transfers.lua`), in runs
//!   alternating with the suite's client, each with the server's own latency histogram and
//!   both processes' CPU (`--client suite|wrk` for one of them).
//! - `postgres`, `sqlite` (3): the hand-rolled ledgers — one SQL transaction per transfer
//!   (conditional debit `UPDATE`, credit `UPDATE`, `INSERT`) from 1, 16, 64 clients, for a fixed
//!   time. PostgreSQL at 127.0.0.1:5432, user postgres, a fresh database per command (dropped
//!   after); unreachable → a loud skip, or a failure when `CI=true`.
//! - `batch` (4): 100 000 and 1 000 000-item CSV and pain.001 files, upload to report ready
//!   (CSV report, pain.002), server peak RSS.
//! - `startup` (5): process start to the listening line and to `GET /healthz` with 1M and 10M
//!   transfers stored.
//! - `cluster` (issue 13): cluster mode on this machine — PostgreSQL, a NATS JetStream server
//!   of its own (`nats-server` must be installed), two engines and two API nodes of the real
//!   binary: 1 transfer/request and payments from 64 clients over both API nodes, bulk 8 189 per
//!   request, and failover (SIGKILL of the leader to the next answered transfer), compared with
//!   the hand-rolled PostgreSQL baseline of the same command. Missing services: a loud skip.
//! - `commit-lab` (not in `all`): the SQLite commit of a bulk batch alone, as the store does it
//!   and with one change each (bigger page cache, no per-account history indexes, sorted rows):
//!   the measurements behind the optimisation proposals in `BENCHMARKS.md`.
//!
//! The HTTP scenarios run `target/release/paycore serve` (or `$PAYCORE_BIN`), building it with
//! `cargo build --release -p paycore` if it is missing; if it cannot serve they report
//! "skipped: server not available".

#![allow(clippy::float_arithmetic)] // throughput and time figures, never money
#![allow(clippy::cast_precision_loss)]

mod baseline_pg;
mod baseline_sqlite;
mod batch;
mod cluster;
mod commit_lab;
mod http_bulk;
mod inprocess;
mod probe;
mod realtime;
mod report;
mod server;
mod startup;
mod stats;
mod tigerbeetle;
mod workload;
mod wrk;

use clap::Parser;
use report::Outcome;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The same allocator as the `paycore` binary (crates/cli/src/main.rs): the in-process
/// scenarios run the engine in this process, so this is the allocator they measure.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const SCENARIOS: [&str; 8] = ["bulk", "http-bulk", "realtime", "postgres", "sqlite", "batch", "startup", "cluster"];

#[derive(Parser, Debug)]
#[command(name = "paycore-bench", about = "paycore's benchmark suite (see crates/bench/src/main.rs)")]
struct Args {
    /// `all`, or one or more of: bulk, http-bulk, realtime, postgres, sqlite, batch, startup, cluster.
    #[arg(required = true)]
    scenarios: Vec<String>,
    /// Small sizes, one run, 1 s per concurrent case: a smoke run in under a minute.
    #[arg(long)]
    quick: bool,
    /// Runs per case (the figure is their median). Default 3, or 1 with --quick.
    #[arg(long)]
    runs: Option<usize>,
    /// Seconds per run of the fixed-time cases (real-time and baselines). Default 10, 1 with --quick.
    #[arg(long)]
    seconds: Option<u64>,
    /// Concurrent clients of the real-time cases (repeatable). Default 1, 16, 64 and 256.
    #[arg(long = "clients")]
    clients: Vec<usize>,
    /// Real-time cases to run (repeatable): `transfers`, `payments`, `hot`. Default all three.
    #[arg(long = "case", value_parser = ["transfers", "payments", "hot"])]
    cases: Vec<String>,
    /// Load generators of the real-time `transfers` case (repeatable): `suite` (its own Rust
    /// client), `wrk` (the `wrk` program with `crates/bench/wrk/transfers.lua`; skipped when
    /// not installed). Default both, in alternating runs.
    #[arg(long = "client", value_parser = ["suite", "wrk"])]
    load_clients: Vec<String>,
    /// Transfers of the bulk workload and of the start-up data (repeatable). Default 1M and 10M,
    /// 200k with --quick.
    #[arg(long = "transfers")]
    transfers: Vec<u64>,
    /// Lines of the batch files (repeatable). Default 100k and 1M, 100k with --quick.
    #[arg(long = "lines")]
    lines: Vec<u64>,
    /// Where to write the report. Default: BENCHMARKS.md at the repository root.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the table only; do not write BENCHMARKS.md.
    #[arg(long)]
    no_write: bool,
    /// A line for BENCHMARKS.md about the conditions (e.g. "taken while other builds ran").
    #[arg(long)]
    note: Option<String>,
    /// A TigerBeetle binary: scenario `bulk` then runs its own `benchmark` with the same workload
    /// between paycore's runs and reports both medians and their ratio.
    #[arg(long, value_name = "PATH")]
    tigerbeetle: Option<PathBuf>,
}

/// What every scenario is given.
pub struct Config {
    pub quick: bool,
    pub runs: usize,
    pub duration: Duration,
    pub bulk_sizes: Vec<u64>,
    pub clients: Vec<usize>,
    /// The real-time cases to run: `transfers`, `payments`, `hot`.
    pub realtime_cases: Vec<String>,
    /// The load generators of the real-time `transfers` case: `suite`, `wrk`.
    pub load_clients: Vec<String>,
    pub baseline_clients: Vec<usize>,
    pub batch_sizes: Vec<u64>,
    pub startup_sizes: Vec<u64>,
    /// The workspace root.
    pub root: PathBuf,
    /// `--tigerbeetle`: the binary to run beside scenario 1, and its version line.
    pub tigerbeetle: Option<PathBuf>,
    pub tigerbeetle_version: String,
}

// Long on purpose: flag defaults, then each scenario in the order of the report, read top to bottom.
fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut wanted: Vec<&str> = Vec::new();
    for s in &args.scenarios {
        if s == "all" {
            wanted.extend(SCENARIOS);
        } else if s == "commit-lab" {
            wanted.push("commit-lab");
        } else if let Some(known) = SCENARIOS.iter().find(|k| *k == s) {
            wanted.push(known);
        } else {
            anyhow::bail!("unknown scenario {s:?}; expected all or one of {}", SCENARIOS.join(", "));
        }
    }
    wanted.dedup();
    // Checked before anything runs: a wrong path should not cost a 20-minute suite.
    let tigerbeetle_version = match &args.tigerbeetle {
        Some(binary) => {
            if !wanted.contains(&"bulk") {
                eprintln!("note: --tigerbeetle only runs beside scenario bulk, which is not in this command");
            }
            tigerbeetle::version(binary)?
        }
        None => String::new(),
    };
    let quick = args.quick;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize()?;
    let cfg = Config {
        quick,
        runs: args.runs.unwrap_or(if quick { 1 } else { 3 }).max(1),
        duration: Duration::from_secs(args.seconds.unwrap_or(if quick { 1 } else { 10 })),
        bulk_sizes: if !args.transfers.is_empty() {
            args.transfers.clone()
        } else if quick {
            vec![200_000]
        } else {
            vec![1_000_000, 10_000_000]
        },
        clients: if args.clients.is_empty() { vec![1, 16, 64, 256] } else { args.clients.clone() },
        realtime_cases: if args.cases.is_empty() {
            ["transfers", "payments", "hot"].map(str::to_owned).to_vec()
        } else {
            args.cases.clone()
        },
        load_clients: if args.load_clients.is_empty() {
            ["suite", "wrk"].map(str::to_owned).to_vec()
        } else {
            args.load_clients.clone()
        },
        baseline_clients: vec![1, 16, 64],
        batch_sizes: if !args.lines.is_empty() {
            args.lines.clone()
        } else if quick {
            vec![100_000]
        } else {
            vec![100_000, 1_000_000]
        },
        startup_sizes: if !args.transfers.is_empty() {
            args.transfers.clone()
        } else if quick {
            vec![200_000]
        } else {
            vec![1_000_000, 10_000_000]
        },
        root: root.clone(),
        tigerbeetle: args.tigerbeetle.clone(),
        tigerbeetle_version,
    };

    let mut machine = report::Machine::describe(&root);
    let started = Instant::now();
    let mut outcomes: Vec<Outcome> = Vec::new();
    for scenario in &wanted {
        eprintln!("== {scenario}");
        let t = Instant::now();
        let got = match *scenario {
            "bulk" => inprocess::run(&cfg),
            "http-bulk" => http_bulk::run(&cfg),
            "realtime" => realtime::run(&cfg),
            "postgres" => match baseline_pg::run(&cfg) {
                Ok((got, version)) => {
                    machine.postgres = version;
                    got
                }
                Err(e) => return Err(e),
            },
            "sqlite" => baseline_sqlite::run(&cfg),
            "batch" => batch::run(&cfg),
            "startup" => startup::run(&cfg),
            "cluster" => cluster::run(&cfg),
            "commit-lab" => commit_lab::run(&cfg),
            _ => unreachable!("checked above"),
        };
        eprintln!("== {scenario}: {:.1} s", t.elapsed().as_secs_f64());
        outcomes.extend(got);
    }

    let table = report::table(&outcomes);
    println!("\n{}", machine.markdown());
    println!("{table}");
    println!("{}", report::ratios(&outcomes));
    println!("total time: {:.1} s", started.elapsed().as_secs_f64());

    if !args.no_write {
        let path = args.out.clone().unwrap_or_else(|| root.join("BENCHMARKS.md"));
        // The command as run, without the --note text (shown apart).
        let mut shown: Vec<String> = Vec::new();
        let mut argv = std::env::args().skip(1);
        while let Some(arg) = argv.next() {
            if arg == "--note" {
                argv.next();
            } else if !arg.starts_with("--note=") {
                shown.push(arg);
            }
        }
        let command_line = format!("cargo run --release -p paycore-bench -- {}", shown.join(" "));
        report::write(&path, &machine, &command_line, &outcomes, args.note.as_deref(), include_str!("../NOTES.md"))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
