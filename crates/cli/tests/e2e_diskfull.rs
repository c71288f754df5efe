//! A full disk, end to end: the real server on a data folder of its own small filesystem (a
//! `tmpfs` the test mounts; it needs root, as CI has, and skips loudly otherwise unless
//! `CI=true`). Writes are answered 503 `storage_full` with `Retry-After`, reads go on, nothing
//! answered 2xx is lost and nothing answered 503 is applied, an upload leaves no file and no
//! batch, and once the room returns writes succeed again without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{assert_error_shape, Options, Resp, Server};
use paycore_store::testing::SmallDisk;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

/// The small filesystem: room for a fresh data folder and some traffic, little enough to fill
/// in a blink.
const DISK_KIB: u64 = 8192;
/// Most transfers tried on the full disk before one must have been refused: commits go on as
/// long as the WAL has room it already holds (it starts over once checkpointed), so the
/// refusal comes when a checkpoint cannot grow the database file and the WAL must grow.
const TRIES_MAX: usize = 3_000;

/// POSTs once (no retry on 503, unlike the harness's helpers).
async fn post_once(server: &Server, path: &str, body: &Value) -> Resp {
    post_once_with(server, path, body, None).await
}

/// [`post_once`] with an optional `Idempotency-Key`.
async fn post_once_with(server: &Server, path: &str, body: &Value, key: Option<&str>) -> Resp {
    let mut request = server.authed(server.client.post(server.url(path))).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    Resp { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null), headers, bytes }
}

/// A transfer of `amount` from `from` to `to`.
fn transfer(from: &str, to: &str, amount: u64) -> Value {
    json!({ "debit_account": from, "credit_account": to, "amount": amount, "currency": "EUR" })
}

/// A batch in the JSON form (stored as a file like any upload): one item of 100.
fn batch_items(payer: &str, payee: &str) -> Value {
    json!({ "items": [{ "payer": payer, "payee": payee, "amount": 100, "currency": "EUR", "reference": "inv-1" }] })
}

/// Asserts the answer is the full disk's: 503, `Retry-After`, `storage_full`.
fn assert_storage_full(resp: &Resp, what: &str) {
    assert_eq!(resp.status.as_u16(), 503, "{what}: {}", resp.text());
    assert!(resp.header("retry-after").is_some(), "{what}: no Retry-After");
    let error = assert_error_shape(resp);
    assert_eq!(error["code"], json!("storage_full"), "{what}: {}", resp.text());
    assert_eq!(error["type"], json!("api_error"), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_503s_and_recovers() {
    let Some(disk) = SmallDisk::mount("a_full_disk_gives_503s_and_recovers", DISK_KIB) else { return };
    let data = disk.path().join("data");
    let mut server = Server::start_in(Some(data.clone()), Options::default());

    let payer = server.open_account("EUR", None).await;
    let payee = server.open_account("EUR", None).await;
    server.fund(&payer, 1_000_000).await;
    // Everything answered 2xx from payer to payee, in minor units.
    let mut moved = 0_u64;
    for _ in 0..20 {
        let resp = post_once(&server, "/v1/transfers", &transfer(&payer, &payee, 7)).await;
        assert_eq!(resp.expect(201)["result"], json!("ok"));
        moved += 7;
    }
    let paid = server.pay(&payer, &payee, 100).await;
    let paid_id = paid.expect(200)["id"].as_str().unwrap().to_owned();
    moved += 100;

    let filled = disk.fill();
    assert!(filled > 0 && disk.is_full(), "the filler took the room left");

    // Writes until the disk refuses one; every answer is 201 (counted) or 503 storage_full.
    let mut refused = 0;
    for _ in 0..TRIES_MAX {
        let resp = post_once(&server, "/v1/transfers", &transfer(&payer, &payee, 1)).await;
        if resp.status.as_u16() == 201 {
            assert_eq!(resp.body["result"], json!("ok"), "{}", resp.text());
            moved += 1;
            continue;
        }
        assert_storage_full(&resp, "a transfer on a full disk");
        refused += 1;
        break;
    }
    assert_eq!(refused, 1, "no write was refused in {TRIES_MAX} tries on a full disk");
    // While the disk stays full, writes of every kind keep being refused, promptly.
    let started = Instant::now();
    for _ in 0..5 {
        let resp = post_once(&server, "/v1/transfers", &transfer(&payer, &payee, 1)).await;
        assert_storage_full(&resp, "a transfer while the disk stays full");
    }
    let created = post_once(
        &server,
        "/v1/payments",
        &json!({ "payer_account": payer, "payee_account": payee, "amount": 5, "currency": "EUR" }),
    )
    .await;
    assert_storage_full(&created, "a payment while the disk is full");
    let opened = post_once(&server, "/v1/accounts", &json!({ "currency": "EUR" })).await;
    assert_storage_full(&opened, "an account while the disk is full");
    assert!(started.elapsed() < Duration::from_secs(10), "refusals took {:?}", started.elapsed());

    // An upload finds no room for its file: 503, and neither a file nor a batch is left.
    let upload_key = format!("upload-{}", common::random_hex(8));
    let upload = post_once_with(&server, "/v1/batches", &batch_items(&payer, &payee), Some(&upload_key)).await;
    assert_storage_full(&upload, "a batch upload on a full disk");
    let left: Vec<_> = std::fs::read_dir(data.join("batches"))
        .map(|dir| dir.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "files left by the refused upload: {left:?}");

    // Reads go on, and show exactly what was answered 2xx.
    assert_eq!(server.posted(&payee).await, i64::try_from(moved).unwrap());
    let payment = server.get(&format!("/v1/payments/{paid_id}")).await;
    assert_eq!(payment.expect(200)["status"], json!("succeeded"));
    let listed = server.all_transfers(&payee, 100).await;
    assert_eq!(listed.len() as u64, 20 + 1 + (moved - 20 * 7 - 100), "the payee's transfers");

    // Room again: writes succeed without a restart (after the engine's next try, ≤ 2 s).
    disk.free();
    let started = Instant::now();
    loop {
        let resp = post_once(&server, "/v1/transfers", &transfer(&payer, &payee, 3)).await;
        if resp.status.as_u16() == 201 {
            assert_eq!(resp.body["result"], json!("ok"));
            moved += 3;
            break;
        }
        assert_storage_full(&resp, "a transfer just after the room returned");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "writes still refused {:?} after the room returned",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..10 {
        let resp = post_once(&server, "/v1/transfers", &transfer(&payer, &payee, 2)).await;
        assert_eq!(resp.expect(201)["result"], json!("ok"));
        moved += 2;
    }
    let paid = server.pay(&payer, &payee, 50).await;
    assert_eq!(paid.expect(200)["status"], json!("succeeded"));
    moved += 50;
    let opened = post_once(&server, "/v1/accounts", &json!({ "currency": "EUR" })).await;
    opened.expect(201);
    // The upload refused earlier recorded no batch: its key takes a new one, not a replay.
    let taken = post_once_with(&server, "/v1/batches", &batch_items(&payer, &payee), Some(&upload_key)).await;
    let batch = taken.expect(202)["id"].as_str().unwrap().to_owned();
    assert!(!taken.is_replay(), "the refused upload had recorded a batch");
    assert_eq!(server.wait_for_batch(&batch).await["status"], json!("completed"));
    assert_eq!(server.posted(&payee).await, i64::try_from(moved + 100).unwrap());
    assert_eq!(server.posted(&payer).await, 1_000_000 - i64::try_from(moved + 100).unwrap());

    // Nothing lost across a stop either: the folder verifies, and a new process agrees.
    server.kill9();
    let out = Command::new(env!("CARGO_BIN_EXE_paycore")).arg("verify").arg(&data).output().expect("verify");
    assert!(
        out.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    server.restart();
    assert_eq!(server.posted(&payee).await, i64::try_from(moved + 100).unwrap());
    let stderr = server.stderr();
    assert!(!stderr.contains("panicked"), "the server panicked:\n{stderr}");
    assert!(stderr.contains("storage_full") || stderr.contains("disk is full"), "the full disk was not logged");
}
