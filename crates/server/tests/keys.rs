//! API keys that expire and rotate with an overlap, on both stores, with the service's clock a
//! `ManualClock` (no sleeping); the `RateLimit-*` headers; and two API nodes on one
//! PostgreSQL database sharing one rate-limit budget per key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{on_both_backends, Backend, Client};
use paycore_cluster::testing::NatsServer;
use paycore_server::{ManualClock, ServiceClock};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

on_both_backends!(keys_expire_and_rotate_with_an_overlap, every_authenticated_answer_says_its_rate_limit);

const ADMIN: &str = "sk_test_admin_0123456789abcdefghijklmnopqr";
/// 2026-12-01T00:00:00Z.
const T0: u64 = 1_796_083_200 * SECOND;
const SECOND: u64 = 1_000_000_000;

/// A response's status, error code and `RateLimit-*`/`Retry-After` headers.
struct Seen {
    status: u16,
    code: Option<String>,
    limit: Option<u64>,
    remaining: Option<u64>,
    reset: Option<u64>,
    retry_after: Option<u64>,
}

/// A GET of a cheap authenticated read (`/v1/fx/rates`) with `key`.
async fn get_with(base: &str, key: Option<&str>) -> Seen {
    get_path(base, "/v1/fx/rates", key).await
}

async fn get_path(base: &str, path: &str, key: Option<&str>) -> Seen {
    let mut request = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| -> Option<u64> {
        response.headers().get(name).map(|v| v.to_str().unwrap().parse().expect("a number of seconds or requests"))
    };
    let (limit, remaining, reset, retry_after) =
        (header("ratelimit-limit"), header("ratelimit-remaining"), header("ratelimit-reset"), header("retry-after"));
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().map(str::to_owned);
    Seen { status, code, limit, remaining, reset, retry_after }
}

/// The status and error code `key` gets.
async fn answer(client: &Client, key: &str) -> (u16, Option<String>) {
    let seen = get_with(&client.base, Some(key)).await;
    (seen.status, seen.code)
}

fn ok() -> (u16, Option<String>) {
    (200, None)
}

fn refused(code: &str) -> (u16, Option<String>) {
    (401, Some(code.to_owned()))
}

async fn new_tenant(admin: &Client) -> String {
    let t = admin.post("/v1/tenants", json!({"name": "Keys"})).await;
    assert_eq!(t.status, 201, "{}", t.body);
    t.body["id"].as_str().unwrap().to_owned()
}

async fn keys_expire_and_rotate_with_an_overlap(backend: Backend) {
    let clock = Arc::new(ManualClock::new(T0));
    let service_clock = ServiceClock(clock.clone());
    let Some((admin, _data)) = common::boot_on(backend, ADMIN, move |c| c.clock = service_clock).await else { return };
    let tenant = new_tenant(&admin).await;

    // A key with an expiry works until then, cached or not, and is then refused by name.
    let k = admin
        .post("/v1/api_keys", json!({"tenant": tenant, "scopes": ["read"], "expires_at": "2026-12-01T01:00:00Z"}))
        .await;
    assert_eq!(k.status, 201, "{}", k.body);
    assert_eq!(k.body["expires_at"], "2026-12-01T01:00:00.000000000Z");
    let expiring = k.body["secret"].as_str().unwrap().to_owned();
    assert_eq!(answer(&admin, &expiring).await, ok());
    clock.set(T0 + 3600 * SECOND - 1);
    assert_eq!(answer(&admin, &expiring).await, ok(), "one nanosecond before its expiry");
    clock.set(T0 + 3600 * SECOND);
    assert_eq!(answer(&admin, &expiring).await, refused("api_key_expired"));
    clock.set(T0 + 7200 * SECOND);
    assert_eq!(answer(&admin, &expiring).await, refused("api_key_expired"), "read again from the store");

    // Expiries that cannot be.
    for (expires_at, why) in [("tomorrow", "not RFC 3339"), ("2026-12-01T00:00:00Z", "in the past"), ("", "empty")] {
        let bad =
            admin.post("/v1/api_keys", json!({"tenant": tenant, "scopes": ["read"], "expires_at": expires_at})).await;
        let error = &bad.body["error"];
        assert_eq!(
            (bad.status, error["code"].as_str(), error["param"].as_str()),
            (400, Some("parameter_invalid"), Some("expires_at")),
            "{why}: {}",
            bad.body
        );
    }

    // Rotation: the new secret works at once, the old one until the overlap ends.
    let now = T0 + 7200 * SECOND;
    let k = admin.post("/v1/api_keys", json!({"tenant": tenant, "scopes": ["read"]})).await;
    assert_eq!(k.status, 201, "{}", k.body);
    assert!(k.body.get("expires_at").is_none(), "no expiry: {}", k.body);
    let id = k.body["id"].as_str().unwrap().to_owned();
    let first = k.body["secret"].as_str().unwrap().to_owned();
    assert_eq!(answer(&admin, &first).await, ok(), "cached before the rotation");
    let rotate = |overlap: Value| {
        let admin = admin.clone();
        let path = format!("/v1/api_keys/{id}/rotate");
        async move { admin.post(&path, overlap).await }
    };
    let r = rotate(json!({"overlap_seconds": 60})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.body["id"].as_str(), r.body["tenant"].as_str()), (Some(id.as_str()), Some(tenant.as_str())));
    assert_eq!(r.body["previous_secret_expires_at"], "2026-12-01T02:01:00.000000000Z");
    let second = r.body["secret"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert_eq!(answer(&admin, &second).await, ok());
    assert_eq!(answer(&admin, &first).await, ok(), "within the overlap");
    clock.set(now + 59 * SECOND);
    assert_eq!(answer(&admin, &first).await, ok());
    clock.set(now + 60 * SECOND);
    assert_eq!(answer(&admin, &first).await, refused("api_key_expired"), "the overlap is over");
    assert_eq!(answer(&admin, &second).await, ok());

    // Rotating again while the replaced secret is live (a retry after a lost answer) keeps
    // that one: the secret the client holds never stops early.
    let r = rotate(json!({"overlap_seconds": 600})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let third = r.body["secret"].as_str().unwrap().to_owned();
    clock.set(now + 70 * SECOND);
    let retried = rotate(json!({"overlap_seconds": 600})).await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    let fourth = retried.body["secret"].as_str().unwrap().to_owned();
    assert_eq!(answer(&admin, &second).await, ok(), "the secret the client held");
    assert_eq!(answer(&admin, &fourth).await, ok());
    assert_eq!(answer(&admin, &third).await, refused("invalid_api_key"), "a key has two live secrets at most");

    // What a rotation refuses.
    let bad = rotate(json!({"overlap_seconds": 2_592_001})).await;
    assert_eq!((bad.status, bad.body["error"]["param"].as_str()), (400, Some("overlap_seconds")), "{}", bad.body);
    let bad = rotate(json!({"overlap": 5})).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let missing = admin.post("/v1/api_keys/key_00000000000000000000000000/rotate", json!({})).await;
    assert_eq!((missing.status, missing.body["error"]["code"].as_str()), (404, Some("resource_missing")));
    let not_admin = admin.with_key(&fourth).post(&format!("/v1/api_keys/{id}/rotate"), json!({})).await;
    assert_eq!((not_admin.status, not_admin.body["error"]["code"].as_str()), (403, Some("insufficient_scope")));

    // Once the kept secret's overlap is over, the current one is the one a rotation keeps;
    // the default overlap is a day. Revoking stops both secrets at once.
    clock.set(now + 70 * SECOND + 600 * SECOND);
    assert_eq!(answer(&admin, &second).await, refused("api_key_expired"));
    let r = rotate(json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["previous_secret_expires_at"], "2026-12-02T02:11:10.000000000Z");
    let fifth = r.body["secret"].as_str().unwrap().to_owned();
    assert_eq!(answer(&admin, &fourth).await, ok());
    assert_eq!(answer(&admin, &fifth).await, ok());
    assert_eq!(admin.delete(&format!("/v1/api_keys/{id}")).await.status, 200);
    assert_eq!(answer(&admin, &fourth).await, refused("invalid_api_key"));
    assert_eq!(answer(&admin, &fifth).await, refused("invalid_api_key"));
    let gone = rotate(json!({})).await;
    assert_eq!(gone.status, 404, "a revoked key does not rotate: {}", gone.body);
}

async fn every_authenticated_answer_says_its_rate_limit(backend: Backend) {
    let tune = |c: &mut paycore_server::Config| {
        c.rate_limit_per_second = 1;
        c.rate_limit_burst = 3;
    };
    let Some((admin, _data)) = common::boot_on(backend, ADMIN, tune).await else { return };
    let mut remaining = Vec::new();
    for path in ["/v1/fx/rates", "/v1/webhook_endpoints", "/v1/accounts/acct_00000000000000000000000000"] {
        let seen = get_path(&admin.base, path, Some(ADMIN)).await;
        assert_eq!(seen.status, if path.contains("acct_") { 404 } else { 200 }, "{path}");
        assert_eq!(seen.limit, Some(3), "{path}");
        assert_eq!(seen.retry_after, None);
        // Full again once the missing tokens come back, at one a second.
        let missing = 3 - seen.remaining.unwrap();
        assert!(
            seen.reset.unwrap() >= missing.saturating_sub(1) && seen.reset.unwrap() <= missing,
            "reset {:?}",
            seen.reset
        );
        remaining.push(seen.remaining.unwrap());
    }
    assert_eq!(remaining, [2, 1, 0]);
    let seen = get_with(&admin.base, Some(ADMIN)).await;
    assert_eq!((seen.status, seen.code.as_deref()), (429, Some("rate_limited")));
    assert_eq!((seen.limit, seen.remaining), (Some(3), Some(0)));
    assert_eq!(seen.retry_after, Some(1), "one token comes back within a second");
    assert!(matches!(seen.reset, Some(2 | 3)), "reset {:?}", seen.reset);
    // Without a key there is no budget to tell.
    let anonymous = get_with(&admin.base, None).await;
    assert_eq!((anonymous.status, anonymous.limit, anonymous.remaining), (401, None, None));
}

/// Two API nodes (cluster mode's `--role api`) on one PostgreSQL database: a key's requests
/// spread over both get one budget between them, not one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_nodes_share_one_rate_limit() {
    let Some(data) = common::Data::new(Backend::Postgres) else { return };
    let Some(nats) = NatsServer::start("the shared rate limit test") else { return };
    const RATE: u32 = 5;
    const BURST: u32 = 5;
    let mut bases = Vec::new();
    for _ in 0..2 {
        let mut config = common::config(&data, ADMIN);
        config.rate_limit_per_second = RATE;
        config.rate_limit_burst = BURST;
        config.role = paycore_server::Role::Api;
        let queue = paycore_server::QueueConfig::new(nats.url(), 1);
        // With no engine to record the partition count, the API nodes are given it.
        config.cluster = Some(paycore_server::Cluster { queue, partitions: Some(1), preferred: Vec::new() });
        let (base, _serving) = common::serve(&config, std::future::pending()).await;
        bases.push(base);
    }
    let started = Instant::now();
    let mut served = [0u64; 2];
    let mut refusal = None;
    while started.elapsed() < Duration::from_millis(1500) {
        for (node, base) in bases.iter().enumerate() {
            let seen = get_with(base, Some(ADMIN)).await;
            match seen.status {
                200 => served[node] += 1,
                429 => refusal = Some(seen),
                other => panic!("node {node} answered {other}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap();
    // One bucket: the burst, and what came in at RATE a second meanwhile. Two buckets would
    // have let about twice that through.
    let budget = u64::from(BURST) + (u64::from(RATE) * elapsed_ms).div_ceil(1000);
    let total = served[0] + served[1];
    eprintln!("served {served:?} over {elapsed_ms} ms; one budget allows {budget}");
    assert!(total <= budget, "{total} requests served over {elapsed_ms} ms, one budget allows {budget}: {served:?}");
    assert!(total + u64::from(RATE) >= budget, "far below the limit: {total} of {budget}: {served:?}");
    assert!(served[0] > 0 && served[1] > 0, "both nodes served: {served:?}");
    let refusal = refusal.expect("some requests were refused");
    assert_eq!(refusal.code.as_deref(), Some("rate_limited"));
    assert_eq!((refusal.limit, refusal.remaining), (Some(u64::from(BURST)), Some(0)));
    assert!(refusal.retry_after.is_some_and(|s| s >= 1) && refusal.reset.is_some());
}
