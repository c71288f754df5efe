//! Limits: rate limiting per key (429 `rate_limited` with `Retry-After`) and the line count of
//! batch files (`too_many_lines`, naming `max_batch_lines`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::{json, Value};
use std::time::Duration;

const KEY: &str = "sk_test_limits_0123456789abcdefghijklmnop";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    let (service, _dir) = common::boot(KEY, |c| {
        c.rate_limit_per_second = 5;
        c.rate_limit_burst = 10;
    })
    .await;
    let base = service.base;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..30 {
        let response = http.get(format!("{base}/v1/webhook_endpoints")).bearer_auth(KEY).send().await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 && limited.is_none() {
            let retry = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            let body: Value = response.json().await.unwrap();
            limited = Some((retry, body));
        }
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!((10..=12).contains(&ok), "{statuses:?}");
    let (retry, body) = limited.expect("no 429");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(body["error"]["message"].as_str().unwrap().contains("rate_limit_per_second"));
    // Other keys have their own bucket; and the bucket refills.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = http.get(format!("{base}/v1/webhook_endpoints")).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(again.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_file_over_the_line_limit_is_rejected_naming_it() {
    let (service, _dir) = common::boot(KEY, |c| c.max_batch_lines = 3).await;
    let base = service.base;
    let http = reqwest::Client::new();
    let post = |items: Value| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http
                .post(format!("{base}/v1/batches?payer=acct_00000000000000000000000000&currency=EUR"))
                .bearer_auth(KEY)
                .json(&json!({"items": items}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
        }
    };
    let item = json!({"payee": "X", "amount": 1});
    let big = post(json!([item, item, item, item])).await;
    let small = post(json!([item, item, item])).await;
    for (id, rejected_for_lines) in [(big, true), (small, false)] {
        let mut batch = Value::Null;
        for _ in 0..200 {
            batch = http
                .get(format!("{base}/v1/batches/{id}"))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if batch["status"] != "validating" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let code = batch["rejection"]["code"].as_str();
        if rejected_for_lines {
            assert_eq!(batch["status"], "rejected", "{batch}");
            assert_eq!(code, Some("too_many_lines"), "{batch}");
            assert!(batch["rejection"]["message"].as_str().unwrap().contains("max_batch_lines"), "{batch}");
        } else {
            assert_ne!(code, Some("too_many_lines"), "{batch}");
        }
    }
}
