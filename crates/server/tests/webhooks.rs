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

    // The log shows each delivery delivered; replay sends one again.
    let (_, log) =
        call(&http, &base, "GET", &format!("/v1/webhook_endpoints/{endpoint_id}/deliveries?limit=100"), Value::Null)
            .await;
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
