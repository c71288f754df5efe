//! Scenario 7: cluster mode on this one machine. PostgreSQL (a fresh database, dropped after),
//! a NATS JetStream server of the scenario's own (`nats-server -js` on a free port, its store
//! in a temporary folder), two engine processes (one leads, one stands by) and two API nodes,
//! all the real binary (`paycore serve --role engine|api --store … --queue …`). Measured:
//! one transfer per request and one payment (create + confirm) per client operation from 64
//! clients spread over both API nodes; bulk requests of 8 189 transfers through one API node;
//! and failover: SIGKILL of the leader engine to the reply of a transfer sent at that moment
//! (the standby takes the partition, recovers it, and answers from the stream). Throughputs are
//! compared with the hand-rolled PostgreSQL baseline (scenario 3) of the same command.

use crate::baseline_pg::Database;
use crate::realtime::{self, Kind};
use crate::report::{Case, Outcome, Run, Target};
use crate::server::{self, Client, Server};
use crate::stats::nanos;
use crate::workload::ACCOUNTS;
use crate::Config;
use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SCENARIO: &str = "7 cluster (PostgreSQL + NATS)";

/// A NATS server with JetStream, on a free port.
struct Nats {
    child: Child,
    url: String,
}

impl Nats {
    fn start(dir: &Path) -> anyhow::Result<Nats> {
        let binary = ["nats-server", "/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
            .context("no nats-server binary (Debian's nats-server package)")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("nats-server did not listen within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Nats { child, url: format!("nats://127.0.0.1:{port}") })
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The processes of the cluster.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    store: String,
    nats: Nats,
    engines: Vec<Server>,
    apis: Vec<Server>,
    started: usize,
}

impl Cluster {
    fn args(&self, role: &str) -> Vec<String> {
        [
            "--role",
            role,
            "--store",
            &self.store,
            "--queue",
            &self.nats.url,
            "--queue-name",
            "bench",
            "--partitions",
            "1",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    fn spawn(&mut self, role: &str) -> anyhow::Result<Server> {
        self.started += 1;
        let data = self.dir.join(format!("{role}-{}", self.started));
        Server::start_with(&self.bin, &data, &self.args(role))
    }

    fn api_addrs(&self) -> Vec<SocketAddr> {
        self.apis.iter().map(|s| s.addr).collect()
    }
}

/// The engine that leads the partition, by its `/healthz`.
async fn leader(engines: &[Server]) -> Option<usize> {
    for (i, engine) in engines.iter().enumerate() {
        let Ok(mut client) = Client::connect(engine.addr).await else { continue };
        if let Ok((_, body)) = client.get("/healthz").await {
            if String::from_utf8_lossy(&body).contains(r#""leader":true"#) {
                return Some(i);
            }
        }
    }
    None
}

async fn wait_for_leader(engines: &[Server]) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(i) = leader(engines).await {
            return Ok(i);
        }
        if Instant::now() > deadline {
            bail!("no engine leads the partition after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills the leader and times a transfer sent at that moment, until it is answered 2xx (a
/// late answer, 503 `ledger_timeout`, is retried: it counts as an error); then starts a new
/// standby in its place.
fn failover(cluster: &mut Cluster, rt: &tokio::runtime::Runtime, accounts: &[String]) -> anyhow::Result<Run> {
    let leader = rt.block_on(wait_for_leader(&cluster.engines))?;
    let api = cluster.apis[0].addr;
    let body = format!(
        r#"{{"debit_account":"{}","credit_account":"{}","amount":1,"currency":"EUR"}}"#,
        accounts[0], accounts[1]
    );
    let killed = cluster.engines.remove(leader);
    let at = Instant::now();
    killed.kill9();
    let mut errors = 0u64;
    let took = rt.block_on(async {
        let mut client = Client::connect(api).await?;
        loop {
            let (status, answer) = client.post("/v1/transfers", body.clone()).await?;
            if status.is_success() {
                return anyhow::Ok(at.elapsed());
            }
            errors += 1;
            if at.elapsed() > Duration::from_secs(60) {
                bail!("no transfer answered within 60 s of the kill: {status} {}", String::from_utf8_lossy(&answer));
            }
        }
    })?;
    let standby = cluster.spawn("engine")?;
    cluster.engines.push(standby);
    Ok(Run { value: nanos(took) as f64 / 1e6, latency: None, extra: vec![("errors", errors as f64)] })
}

fn cases(cfg: &Config) -> Vec<String> {
    vec![
        "1 transfer/request, 64 clients over 2 API nodes".to_owned(),
        "1 payment (create+confirm), 64 clients over 2 API nodes".to_owned(),
        format!("bulk {} transfers, 8 189/request, 1 API node", bulk_total(cfg)),
        "failover: SIGKILL of the leader to a transfer answered".to_owned(),
    ]
}

fn bulk_total(cfg: &Config) -> u64 {
    cfg.bulk_sizes.first().copied().unwrap_or(1_000_000).min(1_000_000)
}

fn start(cfg: &Config, dir: &Path, rt: &tokio::runtime::Runtime) -> anyhow::Result<(Cluster, Database)> {
    let bin = server::binary(&cfg.root)?;
    let database = rt.block_on(Database::create())?;
    let nats = Nats::start(&dir.join("nats"))?;
    let mut cluster = Cluster {
        bin,
        dir: dir.to_owned(),
        store: database.url(),
        nats,
        engines: Vec::new(),
        apis: Vec::new(),
        started: 0,
    };
    for _ in 0..2 {
        let engine = cluster.spawn("engine")?;
        cluster.engines.push(engine);
    }
    for _ in 0..2 {
        let api = cluster.spawn("api")?;
        cluster.apis.push(api);
    }
    rt.block_on(wait_for_leader(&cluster.engines))?;
    Ok((cluster, database))
}

// Long on purpose: set-up, then the four cases in report order, each a few lines.
pub fn run(cfg: &Config) -> Vec<Outcome> {
    let skip_all = |reason: String| -> Vec<Outcome> {
        eprintln!("  skipped: {reason}");
        cases(cfg)
            .into_iter()
            .map(|name| Outcome::Skipped { scenario: SCENARIO.into(), name, reason: reason.clone() })
            .collect()
    };
    let rt = match server::client_runtime() {
        Ok(rt) => rt,
        Err(e) => return skip_all(e.to_string()),
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return skip_all(e.to_string()),
    };
    let (mut cluster, database) = match start(cfg, dir.path(), &rt) {
        Ok(started) => started,
        Err(e) => return skip_all(format!("cluster not available: {e:#}")),
    };
    let names = cases(cfg);
    let mut out = Vec::new();
    let accounts = match rt.block_on(server::open_accounts(cluster.apis[0].addr, ACCOUNTS)) {
        Ok(a) => Arc::new(a),
        Err(e) => return skip_all(format!("FAILED opening accounts: {e:#}")),
    };
    let addrs = cluster.api_addrs();
    for (kind, name) in [(Kind::Transfer, &names[0]), (Kind::Payment { hot: false }, &names[1])] {
        let mut runs = Vec::new();
        for i in 0..cfg.runs {
            match rt.block_on(realtime::one_run(&addrs, kind, 64, accounts.clone(), cfg.duration, 8000 + i as u64)) {
                Ok(r) => {
                    eprintln!("  {name} run {}/{}: {} /s", i + 1, cfg.runs, crate::report::number(r.value));
                    runs.push(r);
                }
                Err(e) => eprintln!("  {name}: FAILED {e:#}"),
            }
        }
        if runs.is_empty() {
            out.push(Outcome::Skipped { scenario: SCENARIO.into(), name: name.clone(), reason: "FAILED".into() });
            continue;
        }
        let unit = if kind == Kind::Transfer { "transfers/s" } else { "payments/s" };
        let mut case =
            Case::new(SCENARIO, name.clone(), unit, &runs).note(format!("{} s per run", cfg.duration.as_secs()));
        if kind == Kind::Transfer {
            case = case.versus("postgres/64", Some(2.0));
        }
        out.push(Outcome::Measured(case));
    }
    let mut runs = Vec::new();
    for i in 0..cfg.runs {
        match rt.block_on(crate::http_bulk::one_run(
            cluster.apis[0].addr,
            accounts.clone(),
            bulk_total(cfg),
            9000 + i as u64,
        )) {
            Ok(r) => {
                eprintln!("  {} run {}/{}: {} /s", names[2], i + 1, cfg.runs, crate::report::number(r.value));
                runs.push(r);
            }
            Err(e) => eprintln!("  {}: FAILED {e:#}", names[2]),
        }
    }
    if !runs.is_empty() {
        out.push(Outcome::Measured(
            Case::new(SCENARIO, names[2].clone(), "transfers/s", &runs).versus("postgres/64", Some(30.0)),
        ));
    }
    let mut runs = Vec::new();
    for i in 0..cfg.runs {
        match failover(&mut cluster, &rt, &accounts) {
            Ok(r) => {
                eprintln!("  {} run {}/{}: {:.0} ms", names[3], i + 1, cfg.runs, r.value);
                runs.push(r);
            }
            Err(e) => eprintln!("  {}: FAILED {e:#}", names[3]),
        }
    }
    if !runs.is_empty() {
        out.push(Outcome::Measured(
            Case::new(SCENARIO, names[3].clone(), "ms", &runs)
                .target(Target::AtMost(5000.0))
                .note("a standby polls every 250 ms; errors: late answers (503 ledger_timeout) retried"),
        ));
    }
    for server in cluster.apis.drain(..).chain(cluster.engines.drain(..)) {
        server.stop();
    }
    drop(cluster);
    if let Err(e) = rt.block_on(database.drop_it()) {
        eprintln!("  cannot drop the benchmark database: {e:#}");
    }
    out
}
