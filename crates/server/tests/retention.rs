//! Retention end to end, on both stores: the service's clock (`ManualClock`) moves past the
//! windows and the pruner removes what they let go — saved `Idempotency-Key` responses (a
//! replay after that is a new request), an ended batch's uploaded file and its report file
//! (the report is written again from the items, byte for byte) — while the ledger (balances,
//! payments, transfers, the batch and its items) stays as it was and `verify` passes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{on_both_backends, Backend, Client, Data};
use paycore_server::{ManualClock, ServiceClock};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const KEY: &str = "sk_test_retention_0123456789abcdefghijklm";
const HOUR: u64 = 3600 * 1_000_000_000;

on_both_backends!(
    idempotency_records_expire_and_the_ledger_stays,
    an_ended_batch_loses_its_file_and_keeps_its_items_and_report,
    a_nacha_return_file_needs_the_upload_and_is_gone_with_it
);

fn now_ns() -> u64 {
    u64::try_from(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos()).unwrap()
}

async fn boot(backend: Backend, clock: &Arc<ManualClock>) -> Option<(Client, Data)> {
    let clock = clock.clone();
    common::boot_on(backend, KEY, move |config| {
        config.clock = ServiceClock(clock);
        config.retention_interval = Duration::from_millis(50);
    })
    .await
}

/// The value of `paycore_retention_pruned_total{kind="KIND"}` in `/metrics`.
async fn pruned(client: &Client, kind: &str) -> u64 {
    let metrics = client.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8(metrics.bytes).unwrap();
    let prefix = format!("paycore_retention_pruned_total{{kind=\"{kind}\"}} ");
    let line = text.lines().find(|line| line.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix} in {text}"));
    line[prefix.len()..].parse().unwrap()
}

/// Waits until the pruner has counted at least `n` records of `kind`.
async fn wait_pruned(client: &Client, kind: &str, n: u64) {
    for _ in 0..200 {
        if pruned(client, kind).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the pruner did not remove {n} {kind}");
}

fn verify(data: &Data) -> impl std::future::Future<Output = paycore_store::verify::Report> + '_ {
    common::blocking(data, |store| paycore_store::verify::verify(store).unwrap())
}

async fn idempotency_records_expire_and_the_ledger_stays(backend: Backend) {
    let start = now_ns();
    let clock = Arc::new(ManualClock::new(start));
    let Some((api, data)) = boot(backend, &clock).await else { return };
    let (_funding, payer, payee) = api.parties(1000).await;
    let body = json!({"payer_account": payer, "payee_account": payee, "amount": 300, "currency": "EUR"});
    let created = api.post_with_key("/v1/payments", body.clone(), Some("order-1")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let first = created.body["id"].as_str().unwrap().to_owned();
    let confirm = api.post_with_key(&format!("/v1/payments/{first}/confirm"), json!({}), Some("confirm-1")).await;
    assert_eq!(confirm.body["status"], "succeeded", "{}", confirm.body);
    let balances = (api.balance(&payer).await, api.balance(&payee).await);
    assert_eq!(balances.1["posted"], 300, "{}", balances.1);

    // Within the window (23 hours on), the key still answers with the saved response.
    clock.set(start + 23 * HOUR);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let replay = api.post_with_key("/v1/payments", body.clone(), Some("order-1")).await;
    assert!(replay.replayed);
    assert_eq!((replay.status, replay.bytes.clone()), (created.status, created.bytes.clone()));
    assert_eq!(pruned(&api, "idempotency").await, 0);

    // Past it (25 hours on), both keys' records go; a replay is a new request: a new payment,
    // which moves nothing until confirmed.
    clock.set(start + 25 * HOUR);
    wait_pruned(&api, "idempotency", 2).await;
    assert_eq!(pruned(&api, "idempotency").await, 2);
    let again = api.post_with_key("/v1/payments", body.clone(), Some("order-1")).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert!(!again.replayed);
    assert_ne!(again.body["id"], created.body["id"]);
    assert_eq!(again.body["status"], "requires_confirmation");
    // And that new request's record is kept (it is young): its retry is a replay again.
    let retry = api.post_with_key("/v1/payments", body, Some("order-1")).await;
    assert!(retry.replayed);
    assert_eq!(retry.body["id"], again.body["id"]);

    // The ledger is untouched.
    assert_eq!((api.balance(&payer).await, api.balance(&payee).await), balances);
    let payment = api.get(&format!("/v1/payments/{first}")).await;
    assert_eq!(payment.body["status"], "succeeded", "{}", payment.body);
    let history = api.get(&format!("/v1/accounts/{payee}/transfers")).await;
    assert_eq!(history.body["data"].as_array().map(Vec::len), Some(1), "{}", history.body);
    let report = verify(&data).await;
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.payments, 2);
}

async fn upload(client: &Client, bytes: &str) -> String {
    let request = client
        .http
        .post(format!("{}/v1/batches?format=csv", client.base))
        .header("content-type", "text/csv")
        .body(bytes.to_owned());
    let answer = client.send_as_key(request).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    answer.body["id"].as_str().unwrap().to_owned()
}

async fn wait_batch(client: &Client, id: &str) -> Value {
    for _ in 0..400 {
        let b = client.get(&format!("/v1/batches/{id}")).await;
        if !matches!(b.body["status"].as_str(), Some("validating" | "processing")) {
            return b.body;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("batch {id} did not finish");
}

async fn an_ended_batch_loses_its_file_and_keeps_its_items_and_report(backend: Backend) {
    let start = now_ns();
    let clock = Arc::new(ManualClock::new(start));
    let Some((api, data)) = boot(backend, &clock).await else { return };
    let funding = api.account(json!("unlimited")).await;
    for reference in ["PAYER-1", "PAYEE-1", "PAYEE-2"] {
        let a = api.post("/v1/accounts", json!({"currency": "EUR", "reference": reference})).await;
        assert_eq!(a.status, 201, "{}", a.body);
        if reference == "PAYER-1" {
            let funded = api.transfer(&funding, a.body["id"].as_str().unwrap(), 10_000).await;
            assert_eq!(funded.body["result"], "ok");
        }
    }
    let id = upload(
        &api,
        "payer,payee,amount,currency,reference\nPAYER-1,PAYEE-1,10.00,EUR,r1\nPAYER-1,PAYEE-2,2.50,EUR,r2\n",
    )
    .await;
    let batch = wait_batch(&api, &id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    let report = api.get(&format!("/v1/batches/{id}/report")).await;
    assert_eq!(report.status, 200);
    let items = api.get(&format!("/v1/batches/{id}/items")).await;
    let files_in = |dir: &str| std::fs::read_dir(data.path().join(dir)).map(|entries| entries.count()).unwrap_or(0);
    if backend == Backend::Embedded {
        assert_eq!(files_in("batches"), 1);
    }

    // 29 days on the file stays; 31 days on it goes (and the report file written while the
    // batch ran, kept by the file's mtime against the service's clock).
    clock.set(start + 29 * 24 * HOUR);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pruned(&api, "batch_files").await, 0);
    clock.set(start + 31 * 24 * HOUR);
    wait_pruned(&api, "batch_files", 1).await;
    if backend == Backend::Embedded {
        wait_pruned(&api, "reports", 1).await;
        assert_eq!(files_in("batches"), 0);
        assert_eq!(files_in("reports"), 0);
    }

    // The batch, its items and its report are as they were.
    let after = api.get(&format!("/v1/batches/{id}")).await;
    assert_eq!(after.body["status"], "completed");
    assert_eq!(batch["counts"]["succeeded"], 2, "{batch}");
    assert_eq!(after.body["counts"], batch["counts"]);
    assert_eq!(api.get(&format!("/v1/batches/{id}/items")).await.bytes, items.bytes);
    let rebuilt = api.get(&format!("/v1/batches/{id}/report")).await;
    assert_eq!((rebuilt.status, rebuilt.bytes), (200, report.bytes));
    let verified = verify(&data).await;
    assert!(verified.ok(), "{:?}", verified.problems);
    assert_eq!(verified.batch_items, 2);
}

const NACHA_HEADER: &str =
    "101 03130001202313801041908161055A094101Federal Reserve Bank   My Bank Name           12345678";

/// A PPD credit batch of one entry of `cents` to account 111 at RDFI 23138010.
fn nacha_file(cents: u64) -> String {
    let pad = |text: String| format!("{text:<94}");
    let odfi = "12104288";
    [
        NACHA_HEADER.to_owned(),
        pad(format!(
            "5220{:<16}{:<20}{:<10}PPD{:<10}{:<6}190816   1{odfi}0000001",
            "Company", "", "1234567890", "PAYROLL", ""
        )),
        format!("622231380104{:<17}{cents:010}{:<15}{:<22}  0{odfi}{:07}", "111", "ID", "Receiver", 1),
        pad(format!("8220{:06}{:010}{:012}{cents:012}{:<10}{:<25}{odfi}0000001", 1, 23_138_010, 0, "1234567890", "")),
        pad(format!("9000001{:06}{:08}{:010}{:012}{cents:012}", 1, 1, 23_138_010, 0)),
    ]
    .join("\n")
        + "\n"
}

async fn a_nacha_return_file_needs_the_upload_and_is_gone_with_it(backend: Backend) {
    let start = now_ns();
    let clock = Arc::new(ManualClock::new(start));
    let Some((api, _data)) = boot(backend, &clock).await else { return };
    let funding = api.post("/v1/accounts", json!({"currency": "USD", "overdraft_limit": "unlimited"})).await;
    let payer = api.post("/v1/accounts", json!({"currency": "USD", "reference": "PAYROLL-1"})).await;
    api.post("/v1/accounts", json!({"currency": "USD", "reference": "231380104111"})).await;
    let t = json!({"debit_account": funding.body["id"], "credit_account": payer.body["id"], "amount": 100, "currency": "USD"});
    assert_eq!(api.post("/v1/transfers", t).await.status, 201);
    let request = api
        .http
        .post(format!("{}/v1/batches?format=nacha&payer=PAYROLL-1&on_invalid=skip_invalid", api.base))
        .body(nacha_file(2_500));
    let answer = api.send_as_key(request).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.body["id"].as_str().unwrap().to_owned();
    assert_eq!(wait_batch(&api, &id).await["status"], "completed");
    let nacha = format!("/v1/batches/{id}/report?format=nacha");
    assert_eq!(api.get(&nacha).await.status, 200, "the return file, while the upload is kept");

    clock.set(start + 31 * 24 * HOUR);
    wait_pruned(&api, "batch_files", 1).await;
    let gone = api.get(&nacha).await;
    assert_eq!(gone.status, 410, "{}", gone.body);
    assert_eq!(gone.body["error"]["code"], "file_pruned");
    assert_eq!(gone.body["error"]["param"], "format");
    let csv = api.get(&format!("/v1/batches/{id}/report?format=csv")).await;
    assert_eq!(csv.status, 200, "the CSV report is written from the items");
    assert!(String::from_utf8(csv.bytes).unwrap().contains("insufficient_funds"));
}
