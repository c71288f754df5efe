//! Batch jobs run under leases: a job stopped mid-run is finished by the next start on the same
//! data at once (not when its lease would have lapsed), and a job whose lease another node took
//! over stops, the batch then finishing under whoever holds it next.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Client;
use paycore_ledger::{BatchId, BatchStatus};
use paycore_store::Claim;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const KEY: &str = "sk_test_leases_0123456789abcdefghijklmnopq";
/// Items per batch: enough that a run in a debug build is still going when the test stops it,
/// on a quiet machine too (40 000 were all paid within the ~300 ms a job takes to see its
/// lease taken over: renewals every third of the lease, then the chunk in flight).
const ITEMS: u64 = 200_000;

/// A running service that stops when `stop` is sent.
struct Running {
    client: Client,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(config: &paycore_server::Config) -> Running {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (base, task) = common::serve(config, async move {
        let _ = stopped.await;
    })
    .await;
    Running { client: Client { base, http: reqwest::Client::new(), key: KEY.to_owned() }, stop, task }
}

impl Running {
    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

/// Uploads a CSV batch of [`ITEMS`] payments of 0.01 EUR from `payer` to `payee`; its id.
async fn upload(client: &Client, payer: &str, payee: &str) -> String {
    let mut csv = b"payee,amount,currency,reference\n".to_vec();
    for i in 0..ITEMS {
        csv.extend_from_slice(format!("{payee},0.01,EUR,R{i}\n").as_bytes());
    }
    let request = client
        .http
        .post(format!("{}/v1/batches?format=csv&payer={payer}", client.base))
        .header("content-type", "text/csv")
        .body(csv);
    let answer = client.send_as_key(request).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    answer.body["id"].as_str().unwrap().to_owned()
}

async fn wait_completed(client: &Client, id: &str, within: Duration) -> Value {
    let started = Instant::now();
    loop {
        let b = client.get(&format!("/v1/batches/{id}")).await;
        assert_eq!(b.status, 200, "{}", b.body);
        if b.body["status"] == "completed" {
            return b.body;
        }
        assert!(started.elapsed() < within, "batch {id} not completed within {within:?}: {}", b.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The batch's status and count of paid items as stored, read beside the service, if it is
/// still active (`validating` or `processing`).
fn still_active(dir: &std::path::Path, id: &str) -> Option<(BatchStatus, u64)> {
    let id: BatchId = id.parse().unwrap();
    let active = common::open_reader(dir).active_batches().unwrap();
    active.into_iter().find(|b| b.id == id).map(|b| (b.status, b.succeeded))
}

/// The batch's status and counters, as the API shows them.
async fn progress(client: &Client, id: &str) -> (Value, Value, Value) {
    let b = client.get(&format!("/v1/batches/{id}")).await;
    assert_eq!(b.status, 200, "{}", b.body);
    (b.body["status"].clone(), b.body["counts"]["succeeded"].clone(), b.body["counts"]["failed"].clone())
}

fn config(data: &common::Data) -> paycore_server::Config {
    let mut config = common::config(data, KEY);
    // A lease that never lapses within the test: whatever resumes a batch here does not wait
    // for one.
    config.batch_lease = Duration::from_secs(3600);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stopped_mid_run_is_finished_by_the_next_start_without_waiting_for_its_lease() {
    let data = common::Data::new(common::Backend::Embedded).unwrap();
    let first = start(&config(&data)).await;
    let (_, payer, payee) = first.client.parties(ITEMS).await;
    let id = upload(&first.client, &payer, &payee).await;
    // At once: the job has just claimed the batch (intake claims its upload) and is validating
    // or paying its first chunks; a pause here let a fast machine finish all 40 000 first.
    first.stop().await;
    let interrupted = still_active(data.path(), &id);
    assert!(
        interrupted.is_some_and(|(_, paid)| paid < ITEMS),
        "the stop came too late to interrupt the batch: {interrupted:?}"
    );

    // Another node id: the first one's lease is not this start's, and it lasts an hour.
    let second = start(&config(&data)).await;
    let batch = wait_completed(&second.client, &id, Duration::from_secs(120)).await;
    assert_eq!(
        (batch["counts"]["succeeded"].as_u64(), batch["counts"]["failed"].as_u64()),
        (Some(ITEMS), Some(0)),
        "{batch}"
    );
    assert_eq!(second.client.balance(&payee).await["posted"], json!(ITEMS), "every item paid once");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_lease_is_taken_over_stops_and_the_batch_finishes_under_the_next_holder() {
    let data = common::Data::new(common::Backend::Embedded).unwrap();
    let mut config = config(&data);
    config.batch_lease = Duration::from_millis(600);
    let node = config.node_id.clone();
    let running = start(&config).await;
    let (_, payer, payee) = running.client.parties(ITEMS).await;
    let id = upload(&running.client, &payer, &payee).await;
    let batch: BatchId = id.parse().unwrap();

    // Another node takes the lease over (as it would once it lapsed): released under the
    // node's name as soon as the node holds it, and claimed at once.
    let other = common::open_reader(data.path());
    let started = Instant::now();
    while !other.release_batch_lease(batch, &node).unwrap() {
        assert!(started.elapsed() < Duration::from_secs(10), "the node never claimed its upload");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let now = now_ns();
    let taken = other.claim_batch(batch, &Claim { owner: "other-node", now, until: u64::MAX >> 1 }).unwrap();
    assert_eq!(taken.map(|b| b.id), Some(batch));

    // The node's next renewal fails (within a third of 600 ms), and its job stops.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = progress(&running.client, &id).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = progress(&running.client, &id).await;
    assert_eq!(before, after, "the job stopped: nothing moves while the other node holds the batch");
    assert!(after.0 == "validating" || after.0 == "processing", "{after:?}");
    assert!(after.1.as_u64().unwrap_or(0) < ITEMS, "{after:?}");

    // The other node lets it go; the node's claim loop takes it back and finishes it.
    assert!(other.release_batch_lease(batch, "other-node").unwrap());
    let body = wait_completed(&running.client, &id, Duration::from_secs(120)).await;
    assert_eq!(
        (body["counts"]["succeeded"].as_u64(), body["counts"]["failed"].as_u64()),
        (Some(ITEMS), Some(0)),
        "{body}"
    );
    assert_eq!(running.client.balance(&payee).await["posted"], json!(ITEMS), "every item paid once");
    running.stop().await;
}

fn now_ns() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    u64::try_from(since.as_nanos()).unwrap()
}
