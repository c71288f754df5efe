//! The end-to-end harness: a real `paycore serve` process on a fresh data folder, and a client.
//!
//! Every test starts its own [`Server`] (own temporary folder, own port, own API key), so tests
//! are independent and can run in parallel. The child's stdout and stderr are kept in files in
//! the temporary folder and printed when a test fails, so a failure shows what the server said.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// How long the server may take to print its listening line (a loaded 2-core machine, a
/// recovery after a crash).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one request may take before the client gives up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`Api::wait_for_batch`] waits for a batch to finish.
pub const BATCH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long helpers keep retrying a request answered 503 (queue full).
const OVERLOAD_RETRY_FOR: Duration = Duration::from_secs(60);

const LISTENING: &str = "paycore listening on http://";
const LISTENING_TLS: &str = "paycore listening on https://";

/// 64 random bits without a dependency: std's hasher keys are random per process, and the
/// counter and clock make every call differ.
pub fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.write_u32(std::process::id());
    h.finish()
}

pub fn random_hex(bytes: usize) -> String {
    let mut out = String::new();
    while out.len() < bytes * 2 {
        out.push_str(&format!("{:016x}", random_u64()));
    }
    out.truncate(bytes * 2);
    out
}

/// A response: status, parsed JSON body (Null if the body is not JSON), headers and raw bytes.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: StatusCode,
    pub body: Value,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    pub fn is_replay(&self) -> bool {
        self.header("idempotent-replayed").is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text());
        &self.body
    }

    /// Asserts an error response: the status, the one error shape, the code and the param.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str, param: Option<&str>) {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text());
        let error = assert_error_shape(self);
        assert_eq!(error["code"], json!(code), "unexpected error code; body: {}", self.text());
        assert_eq!(error["param"], json!(param), "unexpected error param; body: {}", self.text());
    }
}

/// Asserts the body is `{"error":{"type","code","message","param"}}` and returns the inner object.
#[track_caller]
pub fn assert_error_shape(resp: &Resp) -> Value {
    let error = resp
        .body
        .get("error")
        .unwrap_or_else(|| panic!("{}: body is not the error shape: {:?}", resp.status, resp.text()));
    for field in ["type", "code", "message"] {
        assert!(error[field].is_string(), "error.{field} is not a string: {}", resp.text());
    }
    assert!(
        error.get("param").is_some_and(|p| p.is_null() || p.is_string()),
        "error.param is missing or not a string/null: {}",
        resp.text()
    );
    error.clone()
}

/// How to start the server.
#[derive(Clone, Debug)]
pub struct Options {
    /// `PAYCORE_API_KEY` for the child; `None` leaves it unset (the server then generates a key
    /// and writes it to `<data>/api-key`).
    pub api_key: Option<String>,
    /// More arguments after `serve --data … --listen …`.
    pub extra_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options { api_key: Some(format!("sk_test_{}", random_hex(16))), extra_args: Vec::new() }
    }
}

/// A client of one server process: cheap to clone into tasks.
#[derive(Clone)]
pub struct Api {
    pub base_url: String,
    pub key: String,
    pub client: reqwest::Client,
}

impl Api {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    async fn finish(response: reqwest::Response) -> Resp {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp { status, body, headers, bytes }
    }

    /// Sends a request built by `build`, retrying while the server answers 503 (its queue is
    /// full: nothing was done, so a retry is safe). Transport errors are returned.
    pub async fn send(&self, build: impl Fn() -> reqwest::RequestBuilder) -> Result<Resp, reqwest::Error> {
        let started = Instant::now();
        loop {
            let resp = Self::finish(build().send().await?).await;
            if resp.status == StatusCode::SERVICE_UNAVAILABLE && started.elapsed() < OVERLOAD_RETRY_FOR {
                let wait = resp.header("retry-after").and_then(|v| v.parse::<u64>().ok()).unwrap_or(1).clamp(0, 1);
                tokio::time::sleep(Duration::from_millis(50 + 950 * wait)).await;
                continue;
            }
            return Ok(resp);
        }
    }

    pub fn authed(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        builder.bearer_auth(&self.key)
    }

    /// POST with a JSON body, optionally with an `Idempotency-Key`; transport errors returned.
    pub async fn try_post(&self, path: &str, body: &Value, key: Option<&str>) -> Result<Resp, reqwest::Error> {
        let url = self.url(path);
        self.send(|| {
            let mut b = self.authed(self.client.post(&url)).json(body);
            if let Some(key) = key {
                b = b.header("Idempotency-Key", key);
            }
            b
        })
        .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.try_post(path, &body, None).await.unwrap_or_else(|e| panic!("POST {path} {body}: {e}"))
    }

    pub async fn post_with_key(&self, path: &str, body: Value, key: &str) -> Resp {
        self.try_post(path, &body, Some(key))
            .await
            .unwrap_or_else(|e| panic!("POST {path} {body} (Idempotency-Key {key}): {e}"))
    }

    pub async fn get(&self, path: &str) -> Resp {
        let url = self.url(path);
        self.send(|| self.authed(self.client.get(&url))).await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// GET without authentication (health, metrics).
    pub async fn get_public(&self, path: &str) -> Resp {
        let url = self.url(path);
        self.send(|| self.client.get(&url)).await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// POST raw bytes with the given content type (None: no Content-Type header).
    pub async fn raw_post(&self, path: &str, bytes: Vec<u8>, content_type: Option<&str>) -> Resp {
        self.try_raw_post(path, bytes, content_type).await.unwrap_or_else(|e| panic!("POST {path} (raw): {e}"))
    }

    pub async fn try_raw_post(
        &self,
        path: &str,
        bytes: Vec<u8>,
        content_type: Option<&str>,
    ) -> Result<Resp, reqwest::Error> {
        let url = self.url(path);
        self.send(|| {
            let mut b = self.authed(self.client.post(&url)).body(bytes.clone());
            if let Some(ct) = content_type {
                b = b.header("Content-Type", ct);
            }
            b
        })
        .await
    }

    /// Whether the server answers `/healthz` with 200, on a new connection (a pooled one may
    /// have been closed by the server after a refused request, which says nothing of its health).
    pub async fn healthy(&self) -> bool {
        let Ok(client) = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).pool_max_idle_per_host(0).build() else {
            return false;
        };
        matches!(client.get(self.url("/healthz")).send().await, Ok(r) if r.status().is_success())
    }

    /// The same server, through a client of its own (a connection pool of its own).
    pub fn with_fresh_client(&self) -> Api {
        let client =
            reqwest::Client::builder().timeout(REQUEST_TIMEOUT).pool_max_idle_per_host(0).build().expect("client");
        Api { client, ..self.clone() }
    }

    /// GET, returning the body as text (reports); asserts 200.
    pub async fn get_text(&self, path: &str) -> String {
        let resp = self.get(path).await;
        resp.expect(200);
        resp.text()
    }

    /// Uploads a batch file: `POST /v1/batches?{query}` with the bytes as the body.
    pub async fn upload_batch(
        &self,
        query: &str,
        bytes: Vec<u8>,
        content_type: Option<&str>,
        key: Option<&str>,
    ) -> Resp {
        let url = self.url(&format!("/v1/batches?{query}"));
        self.send(|| {
            let mut b = self.authed(self.client.post(&url)).body(bytes.clone());
            if let Some(ct) = content_type {
                b = b.header("Content-Type", ct);
            }
            if let Some(key) = key {
                b = b.header("Idempotency-Key", key);
            }
            b
        })
        .await
        .unwrap_or_else(|e| panic!("POST /v1/batches?{query}: {e}"))
    }

    /// Uploads a batch file, asserts 202 `validating`, returns the batch id.
    pub async fn submit_batch(&self, query: &str, bytes: Vec<u8>, content_type: Option<&str>) -> String {
        let resp = self.upload_batch(query, bytes, content_type, None).await;
        let body = resp.expect(202);
        let id = body["id"].as_str().unwrap_or_else(|| panic!("no batch id: {body}")).to_owned();
        assert!(id.starts_with("bat_"), "batch id without prefix: {id}");
        id
    }

    /// `GET /v1/batches/{id}`.
    pub async fn batch(&self, id: &str) -> Value {
        self.get(&format!("/v1/batches/{id}")).await.expect(200).clone()
    }

    /// Polls the batch with backoff until it is `completed`, `rejected` or `cancelled` (up to
    /// [`BATCH_TIMEOUT`]); returns it.
    pub async fn wait_for_batch(&self, id: &str) -> Value {
        let started = Instant::now();
        let mut wait = Duration::from_millis(20);
        loop {
            let batch = self.batch(id).await;
            let status = batch["status"].as_str().unwrap_or_default();
            if matches!(status, "completed" | "rejected" | "cancelled") {
                return batch;
            }
            assert!(started.elapsed() < BATCH_TIMEOUT, "batch {id} not finished after {BATCH_TIMEOUT:?}: {batch}");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(500));
        }
    }

    /// Every item of a batch with the given status (`None`: all), following the cursor with
    /// pages of `limit`; asserts each page is well formed and the items come in file order.
    pub async fn all_batch_items(&self, id: &str, status: Option<&str>, limit: usize) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        let mut cursor: Option<u64> = None;
        loop {
            let mut path = format!("/v1/batches/{id}/items?limit={limit}");
            if let Some(status) = status {
                path.push_str(&format!("&status={status}"));
            }
            if let Some(c) = cursor {
                path.push_str(&format!("&starting_after={c}"));
            }
            let resp = self.get(&path).await;
            let body = resp.expect(200);
            let data = body["data"].as_array().unwrap_or_else(|| panic!("no data array: {body}"));
            assert!(data.len() <= limit, "page larger than limit {limit}: {}", data.len());
            for item in data {
                if let Some(previous) = out.last() {
                    assert!(
                        item["index"].as_u64() > previous["index"].as_u64(),
                        "items out of order: {previous} then {item}"
                    );
                }
                out.push(item.clone());
            }
            if !body["has_more"].as_bool().unwrap_or_else(|| panic!("no has_more: {body}")) {
                return out;
            }
            assert!(!data.is_empty(), "has_more with an empty page: {body}");
            cursor =
                Some(body["next_cursor"].as_u64().unwrap_or_else(|| panic!("has_more without next_cursor: {body}")));
        }
    }
}

/// A running `paycore serve` process.
pub struct Server {
    pub api: Api,
    pub data_dir: PathBuf,
    options: Options,
    tmp: tempfile::TempDir,
    child: Option<Child>,
    /// How many processes were started on this data folder (names the log files).
    generation: u32,
    /// The unlimited funding account per currency, opened on first use.
    funding: Mutex<HashMap<String, String>>,
    /// The currency of each account the helpers opened.
    currencies: Mutex<HashMap<String, String>>,
    /// The child's file-descriptor limit (`ulimit -n`), when a test lowers it.
    fd_limit: Option<u32>,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Server {
        Server::start_at(None, options, None)
    }

    /// A server whose data folder is `data_dir` (`None`: `data` in its temporary folder), for
    /// a data folder on a filesystem of the test's own; the logs stay in the temporary folder.
    pub fn start_in(data_dir: Option<PathBuf>, options: Options) -> Server {
        Server::start_at(data_dir, options, None)
    }

    /// [`Server::start_with`], the child limited to `fd_limit` open files (`ulimit -n`).
    pub fn start_limited(options: Options, fd_limit: Option<u32>) -> Server {
        Server::start_at(None, options, fd_limit)
    }

    fn start_at(data_dir: Option<PathBuf>, options: Options, fd_limit: Option<u32>) -> Server {
        let tmp = tempfile::Builder::new().prefix("paycore-e2e-").tempdir().expect("tempdir");
        let data_dir = data_dir.unwrap_or_else(|| tmp.path().join("data"));
        let client =
            reqwest::Client::builder().timeout(REQUEST_TIMEOUT).pool_max_idle_per_host(128).build().expect("client");
        let mut server = Server {
            api: Api { base_url: String::new(), key: options.api_key.clone().unwrap_or_default(), client },
            data_dir,
            options,
            tmp,
            child: None,
            generation: 0,
            funding: Mutex::new(HashMap::new()),
            currencies: Mutex::new(HashMap::new()),
            fd_limit,
        };
        server.spawn();
        if server.api.key.is_empty() {
            let path = server.data_dir.join("api-key");
            let key = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("no API key given, and {} is unreadable: {e}", path.display()));
            server.api.key = key.trim().to_owned();
        }
        server
    }

    pub fn tmp_path(&self) -> &Path {
        self.tmp.path()
    }

    fn log_path(&self, stream: &str, generation: u32) -> PathBuf {
        self.tmp.path().join(format!("{stream}-{generation}.log"))
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "a server is already running");
        self.generation += 1;
        let stderr = File::create(self.log_path("stderr", self.generation)).expect("stderr log");
        let mut command = match self.fd_limit {
            None => Command::new(env!("CARGO_BIN_EXE_paycore")),
            Some(limit) => {
                let mut shell = Command::new("sh");
                shell
                    .arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_paycore"));
                shell
            }
        };
        command
            .arg("serve")
            .arg("--data")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(&self.options.extra_args)
            .current_dir(self.tmp.path())
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        // Only what the test sets: no PAYCORE_* of the environment running the tests.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PAYCORE_") {
                command.env_remove(name);
            }
        }
        // The harness drives the server harder than one client should: no per-key rate limit
        // unless a test passes `--rate-limit-per-second` (a flag wins over the variable).
        command.env("PAYCORE_RATE_LIMIT_PER_SECOND", "0");
        if let Some(key) = &self.options.api_key {
            command.env("PAYCORE_API_KEY", key);
        }
        let mut child = command.spawn().expect("spawn paycore");
        let stdout = child.stdout.take().expect("stdout");
        let mut stdout_log = File::create(self.log_path("stdout", self.generation)).expect("stdout log");
        let (tx, rx) = mpsc::channel::<String>();
        // Keeps draining stdout into the log after the listening line, so the child never
        // blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(stdout_log, "{line}");
                if let Some(pos) = line.find(LISTENING).or_else(|| line.find(LISTENING_TLS)) {
                    let addr = line[pos..].trim().trim_end_matches('/').to_owned();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        self.child = Some(child);
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(url) => self.api.base_url = url.trim_start_matches("paycore listening on ").to_owned(),
            Err(_) => {
                let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                self.dump_logs();
                panic!("paycore did not print {LISTENING:?}… within {START_TIMEOUT:?} (exit status: {status:?})");
            }
        }
    }

    /// The running child's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL (`Child::kill` is SIGKILL on Unix), then reap the process.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `within` for the process to exit; its exit status, or `None`
    /// if it was still running (it is then killed).
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let sent = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM failed");
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Starts a new process on the same data folder (after [`Server::terminate`]).
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Starts a new process on the same data folder with the same key setting.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// What the child wrote to stderr so far (every process on this data folder).
    pub fn stderr(&self) -> String {
        (1..=self.generation).map(|g| std::fs::read_to_string(self.log_path("stderr", g)).unwrap_or_default()).collect()
    }

    /// Prints the child's logs (every generation) to the test output.
    pub fn dump_logs(&self) {
        for generation in 1..=self.generation {
            for stream in ["stdout", "stderr"] {
                let path = self.log_path(stream, generation);
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: String =
                    if text.len() > 20_000 { format!("…{}", &text[text.len() - 20_000..]) } else { text };
                eprintln!("----- paycore {stream} (process {generation}) -----\n{tail}");
            }
        }
        eprintln!("----- end of paycore logs (data in {}) -----", self.data_dir.display());
    }

    // Domain helpers.

    /// Opens an account; `overdraft_limit` as JSON (a number or "unlimited"). Returns its id.
    pub async fn open_account(&self, currency: &str, overdraft_limit: Option<Value>) -> String {
        let mut body = json!({ "currency": currency });
        if let Some(limit) = overdraft_limit {
            body["overdraft_limit"] = limit;
        }
        let resp = self.post("/v1/accounts", body).await;
        let id = resp.expect(201)["id"].as_str().expect("account id").to_owned();
        assert!(id.starts_with("acct_"), "account id without prefix: {id}");
        self.currencies.lock().unwrap().insert(id.clone(), currency.to_owned());
        id
    }

    /// The unlimited funding account of a currency (opened on first use).
    pub async fn funding_account(&self, currency: &str) -> String {
        if let Some(id) = self.funding.lock().unwrap().get(currency) {
            return id.clone();
        }
        let id = self.open_account(currency, Some(json!("unlimited"))).await;
        self.funding.lock().unwrap().entry(currency.to_owned()).or_insert(id).clone()
    }

    async fn currency_of(&self, account: &str) -> String {
        if let Some(c) = self.currencies.lock().unwrap().get(account) {
            return c.clone();
        }
        let resp = self.get(&format!("/v1/accounts/{account}")).await;
        resp.expect(200)["currency"].as_str().expect("currency").to_owned()
    }

    /// Moves `amount` from the funding account of the account's currency into it.
    pub async fn fund(&self, account: &str, amount: u64) {
        let currency = self.currency_of(account).await;
        let funding = self.funding_account(&currency).await;
        let resp = self
            .post(
                "/v1/transfers",
                json!({
                    "debit_account": funding,
                    "credit_account": account,
                    "amount": amount,
                    "currency": currency,
                }),
            )
            .await;
        let body = resp.expect(201);
        assert_eq!(body["result"], json!("ok"), "funding transfer: {body}");
    }

    /// The `balance` object of an account.
    pub async fn balance(&self, account: &str) -> Value {
        let resp = self.get(&format!("/v1/accounts/{account}")).await;
        let body = resp.expect(200);
        body["balance"].clone()
    }

    pub async fn posted(&self, account: &str) -> i64 {
        self.balance(account).await["posted"].as_i64().expect("posted is an integer")
    }

    /// Creates a payment; returns the response.
    pub async fn create_payment(&self, payer: &str, payee: &str, amount: u64, extra: Value) -> Resp {
        let currency = self.currency_of(payer).await;
        let mut body = json!({
            "payer_account": payer,
            "payee_account": payee,
            "amount": amount,
            "currency": currency,
        });
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                body[k] = v;
            }
        }
        self.post("/v1/payments", body).await
    }

    /// Creates and confirms an automatic payment; returns the confirm response.
    pub async fn pay(&self, payer: &str, payee: &str, amount: u64) -> Resp {
        let created = self.create_payment(payer, payee, amount, json!({})).await;
        let id = created.expect(201)["id"].as_str().expect("payment id").to_owned();
        self.post(&format!("/v1/payments/{id}/confirm"), json!({})).await
    }

    /// Opens an account with a `reference` (batch files name accounts by reference); returns its id.
    pub async fn open_account_ref(&self, currency: &str, reference: &str, overdraft_limit: Option<Value>) -> String {
        let mut body = json!({ "currency": currency, "reference": reference });
        if let Some(limit) = overdraft_limit {
            body["overdraft_limit"] = limit;
        }
        let resp = self.post("/v1/accounts", body).await;
        let id = resp.expect(201)["id"].as_str().expect("account id").to_owned();
        self.currencies.lock().unwrap().insert(id.clone(), currency.to_owned());
        id
    }

    /// Every transfer of an account, following the cursor; asserts each page is well formed.
    pub async fn all_transfers(&self, account: &str, limit: usize) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1_000_000 {
            let mut path = format!("/v1/accounts/{account}/transfers?limit={limit}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&starting_after={c}"));
            }
            let resp = self.get(&path).await;
            let body = resp.expect(200);
            let data = body["data"].as_array().unwrap_or_else(|| panic!("no data array: {body}"));
            assert!(data.len() <= limit, "page larger than limit {limit}: {}", data.len());
            out.extend(data.iter().cloned());
            let has_more = body["has_more"].as_bool().unwrap_or_else(|| panic!("no has_more: {body}"));
            if !has_more {
                return out;
            }
            assert!(!data.is_empty(), "has_more with an empty page: {body}");
            cursor = Some(match body["next_cursor"].as_str() {
                Some(c) => c.to_owned(),
                None => data.last().and_then(|t| t["id"].as_str()).expect("cursor").to_owned(),
            });
        }
        panic!("pagination never ended");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() || std::env::var_os("PAYCORE_E2E_LOGS").is_some() {
            self.dump_logs();
        }
    }
}

impl std::ops::Deref for Server {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}
