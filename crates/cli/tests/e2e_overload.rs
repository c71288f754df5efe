//! Overload: far more concurrent requests than the engine's queue admits. The server keeps
//! answering — each request gets its result or a clear rejection (503 `queue_full` with
//! `Retry-After`), never a hang or a dropped connection — rejected requests change nothing,
//! memory stays bounded, and the server serves normally once the load drops.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Options, Server};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Resident memory of a process, from /proc, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_answered_with_rejections_and_changes_nothing_it_rejects() {
    // A queue of 16 requests against 256 clients that never wait: well over ten times what
    // the engine admits at once.
    let options = Options {
        extra_args: vec!["--queue-capacity".into(), "16".into(), "--rate-limit-per-second".into(), "0".into()],
        ..Options::default()
    };
    let server = Server::start_with(options);
    let funding = server.funding_account("EUR").await;
    let target = server.open_account("EUR", None).await;
    let pid = server.pid().expect("pid");
    let rss_before = rss_kib(pid);

    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default()); // ok, queue_full, other status, transport error
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut clients = Vec::new();
    for _ in 0..256 {
        let api = server.api.with_fresh_client();
        let counts = counts.clone();
        let (funding, target) = (funding.clone(), target.clone());
        clients.push(tokio::spawn(async move {
            let body = json!({"debit_account": funding, "credit_account": target, "amount": 3, "currency": "EUR"});
            while Instant::now() < deadline {
                let sent = api.authed(api.client.post(api.url("/v1/transfers"))).json(&body).send().await;
                let slot = match sent {
                    Err(_) => 3,
                    Ok(response) => match response.status().as_u16() {
                        201 => 0,
                        503 => {
                            assert_eq!(
                                response.headers().get("retry-after").map(|v| v.to_str().unwrap_or("")),
                                Some("1")
                            );
                            let error: serde_json::Value = response.json().await.unwrap_or_default();
                            assert_eq!(error["error"]["code"], "queue_full", "{error}");
                            1
                        }
                        _ => 2,
                    },
                };
                counts[slot].fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut rss_peak = 0;
    while Instant::now() < deadline {
        rss_peak = rss_peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for client in clients {
        client.await.expect("client task");
    }
    let [ok, full, other, failed] = [0, 1, 2, 3].map(|i| counts[i].load(Ordering::Relaxed));
    eprintln!("overload: {ok} applied, {full} refused with queue_full, {other} other, {failed} transport errors; RSS {rss_before} KiB before, {rss_peak} KiB peak");
    assert!(ok > 0, "some requests must get through");
    assert!(full > 0, "the load must exceed the queue (else the test proves nothing)");
    assert_eq!((other, failed), (0, 0), "every request gets its result or queue_full");
    assert!(rss_peak < rss_before + 200 * 1024, "memory grew from {rss_before} to {rss_peak} KiB");

    // Exactly the applied transfers moved money; the rejected ones nothing.
    assert_eq!(server.posted(&target).await, i64::try_from(ok * 3).expect("fits"));
    assert_eq!(server.posted(&funding).await, -i64::try_from(ok * 3).expect("fits"));

    // The load is gone: the server serves at once.
    assert!(server.api.healthy().await);
    let payee = server.open_account("EUR", None).await;
    let paid = server.pay(&target, &payee, 2).await;
    assert_eq!(paid.body["status"], "succeeded", "{:?}", paid.body);
}
