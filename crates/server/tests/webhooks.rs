//! Webhooks end to end, on both stores: a receiver that is down (500) while events happen, a
//! restart of the service on the same store, then the receiver up: every event arrives at
//! least once,
//! each signature verifies with the recipe of SECURITY.md, and the delivery log can replay.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "sk_test_webhooks_0123456789abcdefghijklmn";

#[derive(Default)]
struct Receiver {
    up: AtomicBool,
    refused: Mutex<u32>,
    received: Mutex<Vec<(String, Vec<u8>)>>,
}

async fn receive(
    axum::extract::State(r): axum::extract::State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if !r.up.load(Ordering::SeqCst) {
        *r.refused.lock().unwrap() += 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let signature = headers.get("paycore-signature").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    r.received.lock().unwrap().push((signature, body.to_vec()));
    StatusCode::OK
}

/// The verification recipe of SECURITY.md: HMAC-SHA256(secret, "<t>.<body>") in hex equals
/// `v1`, and `t` is recent.
fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<u64>().ok(),
            Some(("v1", value)) => v1 = Some(value.to_owned()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    if now.abs_diff(t) > 300 {
        return false;
    }
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(body);
    let expected: String = hmac(secret.as_bytes(), &message).iter().map(|b| format!("{b:02x}")).collect();
    expected == v1
}

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new().chain_update(ipad).chain_update(message).finalize();
    Sha256::new().chain_update(opad).chain_update(inner).finalize().to_vec()
}

struct Running {
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(data: &common::Data) -> Running {
    let mut config = common::config(data, KEY);
    config.webhook_retry_min = Duration::from_millis(50);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (base, task) = common::serve(&config, async move {
        let _ = stopped.await;
    })
    .await;
    Running { base, stop, task }
}

async fn call(http: &reqwest::Client, base: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    let url = format!("{base}{path}");
    let request = match method {
        "GET" => http.get(url),
        _ => http.post(url).json(&body),
    };
    let response = request.bearer_auth(KEY).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

common::on_both_backends!(events_arrive_signed_after_downtime_and_restart);

async fn events_arrive_signed_after_downtime_and_restart(backend: common::Backend) {
    let Some(data) = common::Data::new(backend) else { return };
    let receiver = Arc::new(Receiver::default());
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(receiver.clone());
    let hook_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", hook_listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(hook_listener, app).await });

    let http = reqwest::Client::new();
    let first = start(&data).await;
    let base = first.base.clone();

    let all = json!([
        "payment.succeeded",
        "payment.failed",
        "payment.requires_capture",
        "payment.refunded",
        "payment.expired",
        "batch.completed",
        "batch.rejected",
        "batch.cancelled"
    ]);
    let (status, endpoint) =
        call(&http, &base, "POST", "/v1/webhook_endpoints", json!({"url": hook_url, "events": all})).await;
    assert_eq!(status, 201, "{endpoint}");
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();
    let (_, listed) = call(&http, &base, "GET", "/v1/webhook_endpoints", Value::Null).await;
    assert_eq!(listed["data"][0]["id"], endpoint_id.as_str());
    assert!(listed["data"][0].get("secret").is_none(), "the secret is shown once");
    let (status, bad) =
        call(&http, &base, "POST", "/v1/webhook_endpoints", json!({"url": hook_url, "events": ["nope"]})).await;
    assert_eq!((status, bad["error"]["param"].as_str()), (400, Some("events[0]")));

    // Events of every payment kind and a batch, while the receiver is down.
    let account = |overdraft: Value| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let (s, a) =
                call(&http, &base, "POST", "/v1/accounts", json!({"currency": "EUR", "overdraft_limit": overdraft}))
                    .await;
            assert_eq!(s, 201, "{a}");
            a["id"].as_str().unwrap().to_owned()
        }
    };
    let funding = account(json!("unlimited")).await;
    let payer = account(json!(0)).await;
    let payee = account(json!(0)).await;
    let (_, t) = call(
        &http,
        &base,
        "POST",
        "/v1/transfers",
        json!({"debit_account": funding, "credit_account": payer, "amount": 1000, "currency": "EUR"}),
    )
    .await;
    assert_eq!(t["result"], "ok", "{t}");
    let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
    let pay = |amount: u64, capture: &str, expires: u64| {
        let (http, base, payer, payee, capture) =
            (http.clone(), base.clone(), payer.clone(), payee.clone(), capture.to_owned());
        async move {
            let (s, p) = call(
                &http,
                &base,
                "POST",
                "/v1/payments",
                json!({"payer_account": payer, "payee_account": payee,
                "amount": amount, "currency": "EUR", "capture_method": capture, "expires_in_seconds": expires}),
            )
            .await;
            assert_eq!(s, 201, "{p}");
            p["id"].as_str().unwrap().to_owned()
        }
    };
    let automatic = pay(100, "automatic", 3600).await;
    call(&http, &base, "POST", &format!("/v1/payments/{automatic}/confirm"), json!({})).await;
    expected.insert(("payment.succeeded".into(), automatic.clone()));
    let refunded =
        call(&http, &base, "POST", &format!("/v1/payments/{automatic}/refunds"), json!({"amount": 40})).await;
    assert_eq!(refunded.0, 201, "{}", refunded.1);
    expected.insert(("payment.refunded".into(), automatic.clone()));
    let manual = pay(200, "manual", 3600).await;
    call(&http, &base, "POST", &format!("/v1/payments/{manual}/confirm"), json!({})).await;
    expected.insert(("payment.requires_capture".into(), manual.clone()));
    let (s, captured) = call(&http, &base, "POST", &format!("/v1/payments/{manual}/capture"), json!({})).await;
    assert_eq!(s, 200, "{captured}");
    expected.insert(("payment.succeeded".into(), manual.clone()));
    let too_big = pay(1_000_000, "automatic", 3600).await;
    call(&http, &base, "POST", &format!("/v1/payments/{too_big}/confirm"), json!({})).await;
    expected.insert(("payment.failed".into(), too_big.clone()));
    let expiring = pay(10, "automatic", 1).await;
    expected.insert(("payment.expired".into(), expiring.clone()));
    let (s, batch) = call(
        &http,
        &base,
        "POST",
        &format!("/v1/batches?payer={payer}&currency=EUR"),
        json!({"items": [{"payee": payee, "amount": 5, "reference": "W1"}]}),
    )
    .await;
    assert_eq!(s, 202, "{batch}");
    expected.insert(("batch.completed".into(), batch["id"].as_str().unwrap().to_owned()));

    // Wait until the expiry happened and deliveries have failed at least once.
    let mut tries = 0;
    loop {
        let (_, p) = call(&http, &base, "GET", &format!("/v1/payments/{expiring}"), Value::Null).await;
        let (_, log) = call(
            &http,
            &base,
            "GET",
            &format!("/v1/webhook_endpoints/{endpoint_id}/deliveries?limit=100"),
            Value::Null,
        )
        .await;
        let failed = log["data"].as_array().unwrap().iter().filter(|d| d["last_status"] == 500).count();
        if p["status"] == "expired" && failed == expected.len() {
            break;
        }
        tries += 1;
        assert!(tries < 200, "no expiry or no failed attempts: {p} {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(receiver.received.lock().unwrap().is_empty());

    // Restart on the same data folder; then the receiver comes up.
    first.stop.send(()).unwrap();
    first.task.await.unwrap().unwrap();
    let second = start(&data).await;
    let base = second.base.clone();
    receiver.up.store(true, Ordering::SeqCst);

    let mut tries = 0;
    let got = loop {
        let got: BTreeSet<(String, String)> = receiver
            .received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body)| {
                let event: Value = serde_json::from_slice(body).unwrap();
                (event["type"].as_str().unwrap().to_owned(), event["data"]["object"]["id"].as_str().unwrap().to_owned())
            })
            .collect();
        if got.is_superset(&expected) {
            break got;
        }
        tries += 1;
        assert!(tries < 400, "missing events: {:?}", expected.difference(&got).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(got, expected);
    for (signature, body) in receiver.received.lock().unwrap().iter() {
        assert!(verify(&secret, signature, body), "bad signature {signature}");
        assert!(!verify("whsec_wrong", signature, body));
        let event: Value = serde_json::from_slice(body).unwrap();
        assert!(event["id"].as_str().unwrap().starts_with("evt_"));
        assert!(event["created_at"].is_string());
    }
    assert!(*receiver.refused.lock().unwrap() as usize >= expected.len());

    // The log shows each delivery delivered (the receiver keeps an event before it answers,
    // so the last attempt may still be recording); replay sends one again.
    let mut tries = 0;
    let log = loop {
        let (_, log) = call(
            &http,
            &base,
            "GET",
            &format!("/v1/webhook_endpoints/{endpoint_id}/deliveries?limit=100"),
            Value::Null,
        )
        .await;
        if log["data"].as_array().unwrap().iter().all(|d| d["status"] == "delivered") {
            break log;
        }
        tries += 1;
        assert!(tries < 100, "not all recorded delivered: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let deliveries = log["data"].as_array().unwrap();
    assert_eq!(deliveries.len(), expected.len());
    assert!(deliveries.iter().all(|d| d["status"] == "delivered" && d["attempts"].as_u64().unwrap() >= 2), "{log}");
    let count = receiver.received.lock().unwrap().len();
    let one = deliveries[0]["id"].as_str().unwrap();
    let (s, replayed) = call(&http, &base, "POST", &format!("/v1/webhook_deliveries/{one}/replay"), json!({})).await;
    assert_eq!(s, 202, "{replayed}");
    let mut tries = 0;
    while receiver.received.lock().unwrap().len() == count {
        tries += 1;
        assert!(tries < 100, "the replay did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, _) =
        call(&http, &base, "POST", "/v1/webhook_deliveries/whd_00000000000000000000000000/replay", json!({})).await;
    assert_eq!(s, 404);
    second.stop.send(()).unwrap();
    second.task.await.unwrap().unwrap();
}

// ---- HTTPS, SSRF and concurrent deliveries (issue 17) ----

/// A resolver for the tests: names map to the addresses a test sets, and change when it says.
#[derive(Default)]
struct Names(Mutex<std::collections::HashMap<String, Vec<std::net::IpAddr>>>);

impl Names {
    fn set(&self, name: &str, addresses: &[&str]) {
        let addresses = addresses.iter().map(|a| a.parse().unwrap()).collect();
        self.0.lock().unwrap().insert(name.to_owned(), addresses);
    }
}

impl paycore_server::ssrf::Resolver for Names {
    fn lookup(&self, host: &str) -> paycore_server::ssrf::Lookup {
        let found = self.0.lock().unwrap().get(host).cloned();
        Box::pin(async move {
            found.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such name in the test"))
        })
    }
}

/// A receiver that records what it gets (time, signature, body) and answers `status` after
/// `delay`.
struct Hook {
    delay: Duration,
    status: StatusCode,
    got: Mutex<Vec<(std::time::Instant, String, Vec<u8>)>>,
}

impl Hook {
    fn new(delay: Duration, status: StatusCode) -> Arc<Hook> {
        Arc::new(Hook { delay, status, got: Mutex::new(Vec::new()) })
    }

    fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    fn router(self: &Arc<Hook>) -> axum::Router {
        async fn take(
            axum::extract::State(hook): axum::extract::State<Arc<Hook>>,
            headers: HeaderMap,
            body: Bytes,
        ) -> axum::response::Response {
            tokio::time::sleep(hook.delay).await;
            let signature = headers.get("paycore-signature").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            hook.got.lock().unwrap().push((std::time::Instant::now(), signature, body.to_vec()));
            let mut response = axum::response::IntoResponse::into_response(hook.status);
            if hook.status.is_redirection() {
                response.headers_mut().insert("location", "http://127.0.0.1:9/elsewhere".parse().unwrap());
            }
            response
        }
        axum::Router::new().route("/hook", axum::routing::post(take)).with_state(self.clone())
    }

    /// Serves over plain HTTP on 127.0.0.1; its port.
    async fn serve(self: &Arc<Hook>) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = self.router();
        tokio::spawn(async move { axum::serve(listener, app).await });
        port
    }
}

/// A TLS listener for `axum::serve`: each accepted connection after its handshake.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, address)) = self.tcp.accept().await else { continue };
            // A client that refuses the certificate ends its handshake: wait for the next.
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, address);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A test CA (its PEM) and an HTTPS receiver for `localhost` with a certificate it signed; the
/// receiver's port.
async fn https_hook(hook: &Arc<Hook>) -> (String, u16) {
    use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "paycore test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let certificate =
        rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    let tls = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![certificate.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener = TlsListener { tcp, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls)) };
    let app = hook.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (ca.pem(), port)
}

/// Registers `url` for `events`; the endpoint's id and secret.
async fn endpoint(client: &common::Client, url: &str, events: Value) -> (String, String) {
    let created = client.post("/v1/webhook_endpoints", json!({"url": url, "events": events})).await;
    assert_eq!(created.status, 201, "{url}: {}", created.body);
    (created.body["id"].as_str().unwrap().to_owned(), created.body["secret"].as_str().unwrap().to_owned())
}

/// A payment of `amount` confirmed: one `payment.succeeded` event. Its id.
async fn succeeded_payment(client: &common::Client, payer: &str, payee: &str) -> String {
    let payment = client.payment(payer, payee, 10, json!({})).await;
    let confirmed = client.post(&format!("/v1/payments/{payment}/confirm"), json!({})).await;
    assert_eq!(confirmed.body["status"], "succeeded", "{}", confirmed.body);
    payment
}

/// The endpoint's newest delivery once it has had an attempt.
async fn attempted(client: &common::Client, endpoint: &str) -> Value {
    let mut tries = 0;
    loop {
        let log = client.get(&format!("/v1/webhook_endpoints/{endpoint}/deliveries")).await;
        let newest = &log.body["data"][0];
        if newest["attempts"].as_u64().unwrap_or(0) >= 1 {
            return newest.clone();
        }
        tries += 1;
        assert!(tries < 200, "no attempt to {endpoint}: {}", log.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_inside_the_network_are_refused_without_the_flag() {
    let names = Arc::new(Names::default());
    names.set("loopback.example.com", &["127.0.0.1"]);
    names.set("private.example.com", &["10.0.0.1"]);
    names.set("metadata.example.com", &["169.254.169.254"]);
    names.set("mixed.example.com", &["93.184.215.14", "192.168.1.20"]);
    names.set("mapped.example.com", &["::ffff:10.0.0.1"]);
    names.set("public.example.com", &["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]);
    let resolver = paycore_server::ssrf::WebhookResolver(names.clone());
    let (client, _data) = common::boot(KEY, |c| {
        c.webhook_allow_private = false;
        c.webhook_resolver = resolver.clone();
    })
    .await;
    let events = json!(["payment.succeeded"]);
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fd00::1]/hook",
        "http://0x7f000001/hook",
        "http://2130706433/hook",
        "http://0.0.0.0:8080/hook",
        "https://loopback.example.com/hook",
        "https://private.example.com/hook",
        "https://metadata.example.com/hook",
        "https://mixed.example.com/hook",
        "https://mapped.example.com/hook",
    ] {
        let refused = client.post("/v1/webhook_endpoints", json!({"url": url, "events": events})).await;
        assert_eq!(refused.status, 400, "{url}: {}", refused.body);
        assert_eq!(refused.body["error"]["code"], "webhook_url_not_public", "{url}: {}", refused.body);
        assert_eq!(refused.body["error"]["param"], "url", "{url}");
    }
    for (url, why) in [
        ("ftp://public.example.com/hook", "must be an http"),
        ("file:///etc/passwd", "must be an http"),
        ("http://user:secret@public.example.com/hook", "user name or password"),
        ("https://nowhere.example.com/hook", "does not resolve"),
    ] {
        let refused = client.post("/v1/webhook_endpoints", json!({"url": url, "events": events})).await;
        assert_eq!((refused.status, refused.body["error"]["param"].as_str()), (400, Some("url")), "{url}");
        assert_eq!(refused.body["error"]["code"], "parameter_invalid", "{url}");
        assert!(refused.body["error"]["message"].as_str().unwrap().contains(why), "{url}: {}", refused.body);
    }
    assert_eq!(client.get("/v1/webhook_endpoints").await.body["data"].as_array().unwrap().len(), 0);
    endpoint(&client, "https://public.example.com/hook", events.clone()).await;

    // With the flag, the same private endpoints are accepted.
    let (allowed, _data) = common::boot(KEY, |c| {
        c.webhook_allow_private = true;
        c.webhook_resolver = paycore_server::ssrf::WebhookResolver(names.clone());
    })
    .await;
    endpoint(&allowed, "http://10.0.0.1/hook", events.clone()).await;
    endpoint(&allowed, "https://metadata.example.com/hook", events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_rebinds_to_a_private_address_is_refused_when_connecting() {
    let hook = Hook::new(Duration::ZERO, StatusCode::OK);
    let port = hook.serve().await;
    let names = Arc::new(Names::default());
    // Public when registered (nothing connects then: no event yet) …
    names.set("rebind.example.com", &["93.184.215.14"]);
    let resolver = paycore_server::ssrf::WebhookResolver(names.clone());
    let (client, _data) = common::boot(KEY, |c| {
        c.webhook_allow_private = false;
        c.webhook_resolver = resolver;
        c.webhook_retry_min = Duration::from_secs(3600);
    })
    .await;
    let url = format!("http://rebind.example.com:{port}/hook");
    let (id, _) = endpoint(&client, &url, json!(["payment.succeeded"])).await;
    // … and the receiver's own loopback address when the delivery connects.
    names.set("rebind.example.com", &["127.0.0.1"]);
    let (_, payer, payee) = client.parties(100).await;
    succeeded_payment(&client, &payer, &payee).await;
    let delivery = attempted(&client, &id).await;
    let error = delivery["last_error"].as_str().unwrap();
    assert!(error.contains("rebind.example.com resolves to 127.0.0.1, not a public address"), "{delivery}");
    assert_eq!(delivery["status"], "pending", "retried later: {delivery}");
    assert_eq!(delivery["last_status"], Value::Null);
    assert_eq!(hook.count(), 0, "the delivery reached the private address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_literal_registered_while_allowed_is_refused_once_no_longer_allowed() {
    let hook = Hook::new(Duration::ZERO, StatusCode::OK);
    let port = hook.serve().await;
    let data = common::Data::new(common::Backend::Embedded).unwrap();
    let mut config = common::config(&data, KEY);
    config.webhook_retry_min = Duration::from_secs(3600);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (base, task) = common::serve(&config, async move {
        let _ = stopped.await;
    })
    .await;
    let client = common::Client { base, http: reqwest::Client::new(), key: KEY.to_owned() };
    let (id, _) = endpoint(&client, &format!("http://127.0.0.1:{port}/hook"), json!(["payment.succeeded"])).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    config.webhook_allow_private = false;
    let (base, _task) = common::serve(&config, std::future::pending()).await;
    let client = common::Client { base, ..client };
    let (_, payer, payee) = client.parties(100).await;
    succeeded_payment(&client, &payer, &payee).await;
    let delivery = attempted(&client, &id).await;
    let error = delivery["last_error"].as_str().unwrap();
    assert!(error.starts_with("refused: 127.0.0.1 is not a public address"), "{delivery}");
    assert_eq!(hook.count(), 0, "the delivery reached the private address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_deliveries_arrive_signed_with_the_given_ca_and_fail_without_it() {
    let hook = Hook::new(Duration::ZERO, StatusCode::OK);
    let (ca, port) = https_hook(&hook).await;
    let url = format!("https://localhost:{port}/hook");
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), ca).unwrap();

    let path = ca_file.path().to_path_buf();
    let (client, _data) = common::boot(KEY, |c| c.webhook_ca = Some(path)).await;
    let (_, secret) = endpoint(&client, &url, json!(["payment.succeeded"])).await;
    let (_, payer, payee) = client.parties(100).await;
    let payment = succeeded_payment(&client, &payer, &payee).await;
    for _ in 0..200 {
        if hook.count() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = hook.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "the event did not arrive over HTTPS");
    let (_, signature, body) = &got[0];
    assert!(verify(&secret, signature, body), "bad signature {signature}");
    let event: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        (event["type"].as_str(), event["data"]["object"]["id"].as_str()),
        (Some("payment.succeeded"), Some(payment.as_str()))
    );

    // Without the CA the receiver's certificate is not trusted: the attempt fails, recorded.
    let (client, _data) = common::boot(KEY, |c| c.webhook_retry_min = Duration::from_secs(3600)).await;
    let (id, _) = endpoint(&client, &url, json!(["payment.succeeded"])).await;
    let (_, payer, payee) = client.parties(100).await;
    succeeded_payment(&client, &payer, &payee).await;
    let delivery = attempted(&client, &id).await;
    assert!(delivery["last_error"].as_str().unwrap().contains("certificate"), "{delivery}");
    assert_eq!(delivery["status"], "pending");
    assert_eq!(hook.count(), 1, "nothing more arrived");

    // A CA file without a certificate stops the start with a clear error.
    let empty = tempfile::NamedTempFile::new().unwrap();
    let data = common::Data::new(common::Backend::Embedded).unwrap();
    let mut config = common::config(&data, KEY);
    config.webhook_ca = Some(empty.path().to_path_buf());
    let error = tokio::task::spawn_blocking(move || paycore_server::start(&config).err()).await.unwrap();
    assert!(error.unwrap().to_string().contains("no certificate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_a_failed_attempt_and_is_not_followed() {
    let hook = Hook::new(Duration::ZERO, StatusCode::FOUND);
    let port = hook.serve().await;
    let (client, _data) = common::boot(KEY, |c| c.webhook_retry_min = Duration::from_secs(3600)).await;
    let (id, _) = endpoint(&client, &format!("http://127.0.0.1:{port}/hook"), json!(["payment.succeeded"])).await;
    let (_, payer, payee) = client.parties(100).await;
    succeeded_payment(&client, &payer, &payee).await;
    let delivery = attempted(&client, &id).await;
    assert_eq!(delivery["last_status"], 302, "{delivery}");
    assert_eq!(delivery["status"], "pending");
    assert!(delivery["last_error"].as_str().unwrap().contains("a redirect, not followed"), "{delivery}");
    assert_eq!(hook.count(), 1, "one POST, no second request to the redirect's target");
}

common::on_both_backends!(a_slow_endpoint_does_not_delay_another);

/// A slow endpoint (5 s an answer) gets an event first; a fast endpoint's later event arrives
/// while the slow one is still being answered.
async fn a_slow_endpoint_does_not_delay_another(backend: common::Backend) {
    const SLOW: Duration = Duration::from_secs(5);
    let slow = Hook::new(SLOW, StatusCode::OK);
    let fast = Hook::new(Duration::ZERO, StatusCode::OK);
    let (slow_port, fast_port) = (slow.serve().await, fast.serve().await);
    let Some((client, _data)) = common::boot_on(backend, KEY, |_| {}).await else { return };
    endpoint(&client, &format!("http://127.0.0.1:{slow_port}/hook"), json!(["payment.succeeded"])).await;
    let (fast_id, fast_secret) =
        endpoint(&client, &format!("http://127.0.0.1:{fast_port}/hook"), json!(["payment.refunded"])).await;
    let (_, payer, payee) = client.parties(100).await;
    let payment = succeeded_payment(&client, &payer, &payee).await;
    // The slow delivery is in flight before the fast endpoint's event exists.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refunded = client.post(&format!("/v1/payments/{payment}/refunds"), json!({"amount": 4})).await;
    assert_eq!(refunded.status, 201, "{}", refunded.body);
    let refunded_at = std::time::Instant::now();
    for _ in 0..100 {
        if fast.count() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = fast.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "the fast endpoint's event did not arrive within 2 s");
    let (at, signature, body) = &got[0];
    assert!(at.duration_since(refunded_at) < Duration::from_secs(2), "took {:?}", at.duration_since(refunded_at));
    assert!(verify(&fast_secret, signature, body));
    assert_eq!(slow.count(), 0, "the slow endpoint has not answered yet: both were in flight at once");
    // The slow one arrives too, and both are recorded delivered.
    for _ in 0..200 {
        if slow.count() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(slow.count(), 1);
    let delivery = attempted(&client, &fast_id).await;
    assert_eq!((delivery["status"].as_str(), delivery["attempts"].as_u64()), (Some("delivered"), Some(1)));
}
