//! Scenario 2 through an outside load generator: `wrk` (the Debian package), one thread,
//! `crates/bench/wrk/transfers.lua` building each `POST /v1/transfers` (a random account pair
//! and a unique, time-ordered id). The suite's own client and wrk run against the same server
//! in alternating runs; for both, the server's own histogram and the CPU of the server and of
//! the load generator over the run are read too ([`crate::probe`]).

use crate::probe::{self, Load, Probe};
use crate::report::Run;
use crate::stats::Percentiles;
use anyhow::{bail, Context};
use paycore_ledger::{time_ordered, TransferId};
use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The Lua script, as committed (written next to the accounts file for each command).
pub const SCRIPT: &str = include_str!("../wrk/transfers.lua");

/// `$PAYCORE_WRK`, else `wrk` on the `PATH`; or why the wrk cases are skipped.
pub fn binary() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("PAYCORE_WRK") {
        return Ok(PathBuf::from(bin));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("wrk"))
        .find(|bin| bin.is_file())
        .ok_or_else(|| "wrk is not installed (apt-get install wrk), or set PAYCORE_WRK".to_owned())
}

/// The program and the files a wrk run reads: the script and the accounts, one id a line.
pub struct Files {
    pub bin: PathBuf,
    pub script: PathBuf,
    pub accounts: PathBuf,
}

pub fn prepare(bin: PathBuf, dir: &Path, accounts: &[String]) -> anyhow::Result<Files> {
    let script = dir.join("transfers.lua");
    std::fs::write(&script, SCRIPT)?;
    let list = dir.join("accounts.txt");
    std::fs::write(&list, accounts.join("\n") + "\n")?;
    Ok(Files { bin, script, accounts: list })
}

/// `tr_` and the 10 base32 digits of now (Unix ms, one ahead so that the first id is above
/// every id the server made before): the script appends a 16-digit counter.
fn id_prefix() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let ms = u64::try_from(now.as_millis()).unwrap_or(0) + 1;
    let mut text = TransferId(time_ordered(ms, 0)).to_string();
    text.truncate("tr_".len() + 10);
    text
}

/// What the script's `done` prints: `paycore-wrk requests=N duration_us=N …`.
fn summary(stdout: &str) -> anyhow::Result<HashMap<String, u64>> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("paycore-wrk "))
        .with_context(|| format!("no paycore-wrk line in wrk's output: {stdout}"))?;
    let mut out = HashMap::new();
    for pair in line.split_whitespace() {
        let (key, value) = pair.split_once('=').with_context(|| format!("{pair:?} in {line:?}"))?;
        out.insert(key.to_owned(), value.parse().with_context(|| format!("{pair:?} in {line:?}"))?);
    }
    Ok(out)
}

/// One run: `wrk -t1 -c{clients} -d{secs}s --latency` against `addr`, with the server's view.
pub fn one_run(
    rt: &tokio::runtime::Runtime,
    files: &Files,
    addr: SocketAddr,
    server_pid: u32,
    clients: usize,
    duration: Duration,
    seed: u64,
) -> anyhow::Result<Run> {
    let probe = rt.block_on(Probe::start(addr, server_pid))?;
    let mut child = Command::new(&files.bin)
        .args(["-t1", &format!("-c{clients}"), &format!("-d{}s", duration.as_secs().max(1)), "--latency", "-s"])
        .arg(&files.script)
        .arg(format!("http://{addr}"))
        .arg("--")
        .arg(&files.accounts)
        .args([id_prefix(), crate::server::API_KEY.to_owned(), seed.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", files.bin.display()))?;
    let pid = child.id();
    let mut stdout = String::new();
    child.stdout.take().context("no stdout")?.read_to_string(&mut stdout)?;
    // The CPU time of the whole process is final once it has exited: read it before reaping.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while probe::state(pid).is_some_and(|s| s != 'Z') && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let ticks = probe::cpu_ticks(pid).unwrap_or(0);
    let mut stderr = String::new();
    child.stderr.take().context("no stderr")?.read_to_string(&mut stderr)?;
    let status = child.wait()?;
    if !status.success() {
        bail!("wrk failed ({status}): {}", stderr.trim());
    }
    let server = rt.block_on(probe.finish(Load::Other(ticks)))?;
    let got = summary(&stdout)?;
    let field = |key: &str| got.get(key).copied().unwrap_or(0);
    if field("status_errors") > 0 {
        bail!(
            "wrk saw {} answers that were not 2xx (the server counted {} on POST /v1/transfers); wrk's output: {}",
            field("status_errors"),
            server.iter().find(|(l, _)| *l == "server non-2xx").map_or(0.0, |(_, n)| *n),
            stdout.trim()
        );
    }
    let requests = field("requests");
    let micros = |key: &str| field(key) * 1000;
    let socket_errors = field("connect_errors") + field("read_errors") + field("write_errors") + field("timeouts");
    let mut extra = vec![("errors", 0.0), ("socket errors", socket_errors as f64)];
    extra.extend(server);
    Ok(Run {
        value: requests as f64 / (field("duration_us").max(1) as f64 / 1e6),
        latency: Some(Percentiles {
            count: usize::try_from(requests).unwrap_or(usize::MAX),
            p50: micros("p50_us"),
            p99: micros("p99_us"),
            p999: micros("p999_us"),
            max: micros("max_us"),
        }),
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_done_line() {
        let out = "Running 1s test @ http://127.0.0.1:1\n  Latency Distribution\n\
                   paycore-wrk requests=12 duration_us=1000000 p50_us=100 p99_us=900 status_errors=0\n";
        let got = summary(out).unwrap_or_default();
        assert_eq!(got.get("requests"), Some(&12));
        assert_eq!(got.get("p99_us"), Some(&900));
        assert!(summary("Running 1s test\n").is_err());
    }

    #[test]
    fn id_prefix_is_a_time_ordered_transfer_id_head() {
        let prefix = id_prefix();
        assert_eq!(prefix.len(), 13);
        assert!(prefix.starts_with("tr_0"), "{prefix}");
        // With the script's 16 digits it parses as a transfer id.
        let id: TransferId = format!("{prefix}000000000000001z").parse().unwrap_or(TransferId(0));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let ms = u64::try_from(id.0 >> 80).unwrap_or(0);
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(0);
        assert!(ms > now_ms.saturating_sub(60_000) && ms <= now_ms + 1, "{ms} against {now_ms}");
        assert_eq!(id.0 & ((1 << 80) - 1), 63, "the counter is the low bits");
    }
}
