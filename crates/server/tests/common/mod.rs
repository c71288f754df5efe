//! What the server's tests share: the service started in process on a free local port (the
//! real router, engine and store, embedded in a data folder or on a PostgreSQL database), and
//! an HTTP client for it.
//!
//! Every place these tests open a store is [`Data`] (its `location`), so a change of how
//! stores are opened is one change here. A test written once as `async fn name(backend:
//! Backend)` runs on both stores through [`on_both_backends!`].

#![allow(dead_code, unused_macros, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use paycore_server::{Config, Secret};
use paycore_store::testing::TestDatabase;
use paycore_store::ApiStore;
use serde_json::{json, Value};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The store a test service runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded store, in the data folder.
    Embedded,
    /// A throwaway PostgreSQL database (`paycore_store::testing`), as `paycore serve --store`.
    Postgres,
}

/// Runs each `async fn NAME(backend: Backend)` given as two tests, `NAME::embedded` and
/// `NAME::postgres`, on a multi-threaded runtime.
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn embedded() {
                    super::$name(crate::common::Backend::Embedded).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(crate::common::Backend::Postgres).await
                }
            }
        )+
    };
}
pub(crate) use on_both_backends;

/// A test service's data: its folder and, on PostgreSQL, its database (dropped with it).
pub struct Data {
    dir: tempfile::TempDir,
    database: Option<TestDatabase>,
}

impl Data {
    /// A new data folder and, on PostgreSQL, a new database named after the running test;
    /// `None` (after a loud `SKIPPED:` line) when there is no PostgreSQL server, except under
    /// `CI=true`, where that fails.
    pub fn new(backend: Backend) -> Option<Data> {
        let dir = tempfile::tempdir().unwrap();
        let database = match backend {
            Backend::Embedded => None,
            Backend::Postgres => {
                let test = std::thread::current().name().unwrap_or("a server test").to_owned();
                // On a thread of its own: the PostgreSQL client cannot run on an async one.
                Some(std::thread::scope(|scope| scope.spawn(|| TestDatabase::create(&test)).join().unwrap())?)
            }
        };
        Some(Data { dir, database })
    }

    /// The data folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where the store is: the database's URL, else the data folder.
    pub fn location(&self) -> PathBuf {
        match &self.database {
            Some(database) => PathBuf::from(database.url()),
            None => self.dir.path().to_path_buf(),
        }
    }

    pub fn backend(&self) -> Backend {
        if self.database.is_some() {
            Backend::Postgres
        } else {
            Backend::Embedded
        }
    }
}

impl Drop for Data {
    /// Drops the database on a thread of its own, as it was made.
    fn drop(&mut self) {
        if let Some(database) = self.database.take() {
            let _ = std::thread::spawn(move || drop(database)).join();
        }
    }
}

/// The configuration every test service starts from: `data` as its store, `key` as the
/// admin key, webhooks to private addresses allowed (the tests' receivers are on 127.0.0.1).
pub fn config(data: &Data, key: &str) -> Config {
    let mut config = Config::new(data.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.store = data.database.as_ref().map(|database| database.url().to_owned());
    config.api_key = Some(Secret::new(key.to_owned()));
    config.webhook_allow_private = true;
    config
}

/// Starts the service of `config` on a free local port until `shutdown` completes; returns
/// its base URL (`http://127.0.0.1:PORT`) and the serving task. The start runs where blocking
/// is allowed, as `paycore_server::run` does it.
pub async fn serve(
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (String, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let start = config.clone();
    let service = tokio::task::spawn_blocking(move || paycore_server::start(&start)).await.unwrap().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    (base, tokio::spawn(service.serve(listener, shutdown)))
}

/// A service on the embedded store in a new temporary data folder with `key` as its admin
/// key, `tune` applied to its configuration, serving until the test ends; a client for it.
pub async fn boot(key: &str, tune: impl FnOnce(&mut Config)) -> (Client, Data) {
    boot_on(Backend::Embedded, key, tune).await.unwrap()
}

/// [`boot`] on `backend`; `None` when it is PostgreSQL and there is none (see [`Data::new`]).
pub async fn boot_on(backend: Backend, key: &str, tune: impl FnOnce(&mut Config)) -> Option<(Client, Data)> {
    let data = Data::new(backend)?;
    let mut config = config(&data, key);
    tune(&mut config);
    let (base, _serving) = serve(&config, std::future::pending()).await;
    Some((Client { base, http: reqwest::Client::new(), key: key.to_owned() }, data))
}

/// The API side of a running service's store, beside the service: `open_for_verify` takes no
/// writer lock. Blocking, as every store call: use it from [`blocking`].
pub fn open_reader(data: &Path) -> Arc<dyn ApiStore> {
    paycore_store::open_for_verify(data).unwrap()
}

/// Runs `f` with the API side of `data`'s store on a blocking thread (the PostgreSQL client
/// cannot run on an async one), and closes it there.
pub async fn blocking<T: Send + 'static>(data: &Data, f: impl FnOnce(&dyn ApiStore) -> T + Send + 'static) -> T {
    let location = data.location();
    tokio::task::spawn_blocking(move || f(open_reader(&location).as_ref())).await.unwrap()
}

/// A response: its status, its body as JSON (`Null` when it is not JSON) and as bytes, and
/// whether it says `Idempotent-Replayed: true`.
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub bytes: Vec<u8>,
    pub replayed: bool,
}

/// An HTTP client of one service, authenticated with one key.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
    pub key: String,
}

impl Client {
    /// The same service with another key.
    pub fn with_key(&self, key: &str) -> Client {
        Client { base: self.base.clone(), http: self.http.clone(), key: key.to_owned() }
    }

    /// Sends `request` as it is (without adding the key).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let replayed = response.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
        let bytes = response.bytes().await.unwrap().to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status, body, bytes, replayed }
    }

    /// Sends `request` with the client's key.
    pub async fn send_as_key(&self, request: reqwest::RequestBuilder) -> Answer {
        self.send(request.bearer_auth(&self.key)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.post_with_key(path, body, None).await
    }

    /// A POST with an `Idempotency-Key` when `key` is given.
    pub async fn post_with_key(&self, path: &str, body: Value, key: Option<&str>) -> Answer {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        self.send_as_key(request).await
    }

    /// A POST of `body` as it is, labelled JSON.
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> Answer {
        let request =
            self.http.post(format!("{}{path}", self.base)).header("content-type", "application/json").body(body);
        self.send_as_key(request).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send_as_key(self.http.get(format!("{}{path}", self.base))).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send_as_key(self.http.delete(format!("{}{path}", self.base))).await
    }

    /// A new EUR account with `overdraft` as its `overdraft_limit`; its id.
    pub async fn account(&self, overdraft: Value) -> String {
        let a = self.post("/v1/accounts", json!({"currency": "EUR", "overdraft_limit": overdraft})).await;
        assert_eq!(a.status, 201, "{}", a.body);
        a.body["id"].as_str().unwrap().to_owned()
    }

    /// A single EUR transfer.
    pub async fn transfer(&self, debit: &str, credit: &str, amount: u64) -> Answer {
        self.post(
            "/v1/transfers",
            json!({"debit_account": debit, "credit_account": credit, "amount": amount, "currency": "EUR"}),
        )
        .await
    }

    /// A new EUR payment with the fields of `extra` added; its id.
    pub async fn payment(&self, payer: &str, payee: &str, amount: u64, extra: Value) -> String {
        let mut body = json!({"payer_account": payer, "payee_account": payee, "amount": amount, "currency": "EUR"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let p = self.post("/v1/payments", body).await;
        assert_eq!(p.status, 201, "{}", p.body);
        assert_eq!(p.body["status"], "requires_confirmation");
        p.body["id"].as_str().unwrap().to_owned()
    }

    /// A funding account (unlimited), a payer funded with `funds` and an empty payee.
    pub async fn parties(&self, funds: u64) -> (String, String, String) {
        let funding = self.account(json!("unlimited")).await;
        let payer = self.account(json!(0)).await;
        let payee = self.account(json!(0)).await;
        if funds > 0 {
            let t = self.transfer(&funding, &payer, funds).await;
            assert_eq!((t.status, t.body["result"].as_str()), (201, Some("ok")), "{}", t.body);
        }
        (funding, payer, payee)
    }

    /// The `balance` object of an account.
    pub async fn balance(&self, account: &str) -> Value {
        let a = self.get(&format!("/v1/accounts/{account}")).await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.body["balance"].clone()
    }
}
