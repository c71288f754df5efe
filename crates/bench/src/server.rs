//! The real `paycore` binary as a child process, and a small keep-alive HTTP/1.1 client (hyper,
//! one connection per client task, loopback only).

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

macro_rules! api_key {
    () => {
        "sk_paycore_bench_0000000000000000000000000000"
    };
}

/// The first API key of every data folder the suite makes.
pub const API_KEY: &str = api_key!();
/// The `Authorization` header with [`API_KEY`].
const AUTHORIZATION: &str = concat!("Bearer ", api_key!());
const JSON: &str = "application/json";

/// Where the binary is: `$PAYCORE_BIN`, else `release/paycore` in `$CARGO_TARGET_DIR` or the
/// workspace's `target/`; built with `cargo build --release -p paycore` when missing.
pub fn binary(root: &Path) -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("PAYCORE_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bin = target.join("release").join("paycore");
    if !bin.exists() {
        eprintln!("  {} is missing: cargo build --release -p paycore", bin.display());
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "-p", "paycore"])
            .current_dir(root)
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build --release -p paycore failed");
        }
    }
    Ok(bin)
}

/// A running `paycore serve`.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// From spawning the process to its listening line.
    pub listening_after: Duration,
    pub spawned: Instant,
    log: PathBuf,
}

impl Server {
    /// Starts `paycore serve --data DIR --listen 127.0.0.1:0` and waits (up to 60 s) for
    /// `paycore listening on http://ADDR` on its stdout. Its stderr goes to `DIR.log`.
    pub fn start(bin: &Path, data: &Path) -> anyhow::Result<Server> {
        Server::start_with(bin, data, &[])
    }

    /// [`Server::start`] with more arguments after `--listen` (cluster mode's roles).
    pub fn start_with(bin: &Path, data: &Path, extra: &[String]) -> anyhow::Result<Server> {
        let log = data.with_extension("log");
        // With PAYCORE_BENCH_LOG set (e.g. `paycore_engine=debug`), the server logs to the
        // bench's stderr at that level, to see its own timings.
        let level = std::env::var("PAYCORE_BENCH_LOG").ok();
        let stderr = match level {
            Some(_) => Stdio::inherit(),
            None => Stdio::from(std::fs::File::create(&log)?),
        };
        let spawned = Instant::now();
        let mut child = Command::new(bin)
            .args(["serve", "--data"])
            .arg(data)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("PAYCORE_API_KEY", API_KEY)
            // Throughput is measured without the per-key rate limit.
            .env("PAYCORE_RATE_LIMIT_PER_SECOND", "0")
            .env("RUST_LOG", level.as_deref().unwrap_or("warn"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keeps reading to the end so the child never blocks on a full pipe.
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("paycore listening on http://") {
                    let _ = tx.send((Instant::now(), addr.trim().to_owned()));
                }
            }
        });
        let (at, addr) = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(got) => got,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log_text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: String = log_text.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                bail!("the server printed no listening line (stderr: {tail})");
            }
        };
        Ok(Server { child, addr: addr.parse()?, listening_after: at - spawned, spawned, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory so far (VmHWM), in kB.
    pub fn peak_rss_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
    }

    /// SIGKILL, at once (a crash).
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("  the server did not stop within 10 s of SIGTERM; killing it (log: {})", self.log.display());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The binary, started on a fresh data folder; or why the HTTP scenarios are skipped.
pub fn available(root: &Path, data: &Path) -> Result<Server, String> {
    let bin = binary(root).map_err(|e| format!("server not available: {e:#}"))?;
    Server::start(&bin, data).map_err(|e| format!("server not available: {e:#}"))
}

/// One keep-alive HTTP/1.1 connection.
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Client> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Client { sender })
    }

    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &str)>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.sender.ready().await?;
        // Header values from static strings: one made from a `&str` is checked and copied on
        // every request, and the load generator shares the server's cores.
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, HeaderValue::from_static("127.0.0.1"))
            .header(header::AUTHORIZATION, HeaderValue::from_static(AUTHORIZATION));
        let body = match body {
            Some((body, content_type)) => {
                let content_type = if content_type == JSON {
                    HeaderValue::from_static(JSON)
                } else {
                    HeaderValue::from_str(content_type)?
                };
                builder = builder.header(header::CONTENT_TYPE, content_type);
                body
            }
            None => Bytes::new(),
        };
        let request = builder.body(Full::new(body))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// `GET path`, the body handed to `each` a frame at a time as it arrives, as a client
    /// saving or parsing a large download would: a report of hundreds of MB is never held
    /// whole. Collecting the 279 MB pain.002 report of a 1M-item batch into one buffer took
    /// the bench 1.0–1.3 s, while `curl -o /dev/null` read it from the same server in 0.11 s
    /// (crates/bench/NOTES.md, "Session 16"): the report phase measured the bench's copying.
    /// Returns the status and, when it is not a success, the body.
    pub async fn get_streamed(
        &mut self,
        path: &str,
        mut each: impl FnMut(&[u8]),
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.sender.ready().await?;
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(header::HOST, HeaderValue::from_static("127.0.0.1"))
            .header(header::AUTHORIZATION, HeaderValue::from_static(AUTHORIZATION))
            .body(Full::new(Bytes::new()))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            return Ok((status, body.collect().await?.to_bytes()));
        }
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame?.data_ref() {
                each(data);
            }
        }
        Ok((status, Bytes::new()))
    }

    pub async fn post(&mut self, path: &str, body: impl Into<Bytes>) -> anyhow::Result<(StatusCode, Bytes)> {
        self.request(Method::POST, path, Some((body.into(), JSON))).await
    }

    pub async fn post_as(
        &mut self,
        path: &str,
        body: impl Into<Bytes>,
        content_type: &str,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.request(Method::POST, path, Some((body.into(), content_type))).await
    }

    pub async fn get(&mut self, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
        self.request(Method::GET, path, None).await
    }
}

/// The `id` of a JSON object answer.
pub fn id_of(body: &[u8]) -> anyhow::Result<String> {
    let value: serde_json::Value = serde_json::from_slice(body)?;
    value
        .get("id")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no id in {}", String::from_utf8_lossy(body)))
}

/// Opens `n` EUR accounts without limits through `POST /v1/accounts`, 32 at a time; their ids
/// in order.
pub async fn open_accounts(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<String>> {
    const PARALLEL: usize = 32;
    let mut tasks = Vec::new();
    for worker in 0..PARALLEL {
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await?;
            let mut ids = Vec::new();
            for index in (worker..n).step_by(PARALLEL) {
                let (status, body) =
                    client.post("/v1/accounts", r#"{"currency":"EUR","overdraft_limit":"unlimited"}"#).await?;
                if !status.is_success() {
                    bail!("POST /v1/accounts: {status} {}", String::from_utf8_lossy(&body));
                }
                ids.push((index, id_of(&body)?));
            }
            anyhow::Ok(ids)
        }));
    }
    let mut all = vec![String::new(); n];
    for task in tasks {
        for (index, id) in task.await?? {
            all[index] = id;
        }
    }
    Ok(all)
}

/// A runtime for the load generator: one thread, so the 2 cores are left to the server as
/// much as can be.
pub fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}
