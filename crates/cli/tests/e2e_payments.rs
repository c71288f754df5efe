//! Real-time payments end to end, against the real `paycore` binary: the README's tour,
//! concurrent payments racing for one payer's funds, idempotent retries, expiry of held funds,
//! and the API key file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{assert_error_shape, Options, Resp, Server};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Asserts an account's whole balance object.
#[track_caller]
fn assert_balance(balance: &Value, posted: i64, pending_debits: i64, pending_credits: i64, available: Option<i64>) {
    assert_eq!(balance["posted"], json!(posted), "posted; balance {balance}");
    assert_eq!(balance["pending_debits"], json!(pending_debits), "pending_debits; balance {balance}");
    assert_eq!(balance["pending_credits"], json!(pending_credits), "pending_credits; balance {balance}");
    match available {
        Some(a) => assert_eq!(balance["available"], json!(a), "available; balance {balance}"),
        None => assert!(
            balance.get("available").is_none_or(Value::is_null),
            "available should be absent for an unlimited account: {balance}"
        ),
    }
}

fn id_of(resp: &Resp) -> String {
    resp.body["id"].as_str().unwrap_or_else(|| panic!("no id in {}", resp.text())).to_owned()
}

/// The README's five-minute tour, with exact balances after each step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_minute_tour() {
    let server = Server::start();
    let funding = server.funding_account("EUR").await;
    let alice = server.open_account("EUR", None).await;
    let bob = server.open_account("EUR", None).await;

    // A new account is empty, and cannot go below zero.
    let opened = server.get(&format!("/v1/accounts/{alice}")).await;
    let opened = opened.expect(200);
    assert_eq!(opened["id"], json!(alice));
    assert_eq!(opened["currency"], json!("EUR"));
    assert_balance(&opened["balance"], 0, 0, 0, Some(0));

    // 1. Fund an account: 100.00 EUR from the funding account.
    server.fund(&alice, 10_000).await;
    assert_balance(&server.balance(&alice).await, 10_000, 0, 0, Some(10_000));
    assert_balance(&server.balance(&funding).await, -10_000, 0, 0, None);

    // 2. Pay 25.00 EUR: create, then confirm.
    let created = server.create_payment(&alice, &bob, 2_500, json!({"description": "coffee beans"})).await;
    let body = created.expect(201);
    let pay1 = id_of(&created);
    assert!(pay1.starts_with("pay_"), "{pay1}");
    assert_eq!(body["status"], json!("requires_confirmation"));
    assert_eq!(body["amount"], json!(2_500));
    assert_eq!(body["currency"], json!("EUR"));
    // Creating moves nothing.
    assert_balance(&server.balance(&alice).await, 10_000, 0, 0, Some(10_000));

    let confirmed = server.post(&format!("/v1/payments/{pay1}/confirm"), json!({})).await;
    let body = confirmed.expect(200);
    assert_eq!(body["id"], json!(pay1));
    assert_eq!(body["status"], json!("succeeded"), "{body}");
    assert_balance(&server.balance(&alice).await, 7_500, 0, 0, Some(7_500));
    assert_balance(&server.balance(&bob).await, 2_500, 0, 0, Some(2_500));
    let read = server.get(&format!("/v1/payments/{pay1}")).await;
    assert_eq!(read.expect(200)["status"], json!("succeeded"));

    // 3. Pay with manual capture: confirm holds 30.00, capture takes 20.00, releases the rest.
    let created = server.create_payment(&alice, &bob, 3_000, json!({"capture_method": "manual"})).await;
    created.expect(201);
    let pay2 = id_of(&created);
    let confirmed = server.post(&format!("/v1/payments/{pay2}/confirm"), json!({})).await;
    assert_eq!(confirmed.expect(200)["status"], json!("requires_capture"));
    assert_balance(&server.balance(&alice).await, 7_500, 3_000, 0, Some(4_500));
    assert_balance(&server.balance(&bob).await, 2_500, 0, 3_000, Some(2_500));

    let captured = server.post(&format!("/v1/payments/{pay2}/capture"), json!({"amount": 2_000})).await;
    let body = captured.expect(200);
    assert_eq!(body["status"], json!("succeeded"), "{body}");
    assert_eq!(body["amount_captured"], json!(2_000), "{body}");
    assert_balance(&server.balance(&alice).await, 5_500, 0, 0, Some(5_500));
    assert_balance(&server.balance(&bob).await, 4_500, 0, 0, Some(4_500));

    // A second capture is refused: the payment is no longer waiting for one.
    let again = server.post(&format!("/v1/payments/{pay2}/capture"), json!({})).await;
    again.expect_error(409, "payment_unexpected_state", None);

    // 4. Refund 10.00 of the first payment, then try to refund more than is left.
    let refund = server.post(&format!("/v1/payments/{pay1}/refunds"), json!({"amount": 1_000})).await;
    let body = refund.expect(201);
    assert!(body["id"].as_str().is_some_and(|id| id.starts_with("re_")), "{body}");
    assert_eq!(body["status"], json!("succeeded"), "{body}");
    assert_eq!(body["amount"], json!(1_000), "{body}");
    assert_balance(&server.balance(&alice).await, 6_500, 0, 0, Some(6_500));
    assert_balance(&server.balance(&bob).await, 3_500, 0, 0, Some(3_500));
    let read = server.get(&format!("/v1/payments/{pay1}")).await;
    assert_eq!(read.expect(200)["amount_refunded"], json!(1_000));

    let too_much = server.post(&format!("/v1/payments/{pay1}/refunds"), json!({"amount": 1_501})).await;
    assert!(too_much.status.is_client_error(), "{}: {}", too_much.status, too_much.text());
    assert_eq!(assert_error_shape(&too_much)["param"], json!("amount"), "{}", too_much.text());
    // The rest (15.00) can be refunded without an amount.
    let rest = server.post(&format!("/v1/payments/{pay1}/refunds"), json!({})).await;
    assert_eq!(rest.expect(201)["amount"], json!(1_500));
    assert_balance(&server.balance(&alice).await, 8_000, 0, 0, Some(8_000));
    assert_balance(&server.balance(&bob).await, 2_000, 0, 0, Some(2_000));

    // 5. A failed payment: more than alice has.
    let created = server.create_payment(&alice, &bob, 1_000_000, json!({})).await;
    created.expect(201);
    let pay3 = id_of(&created);
    let confirmed = server.post(&format!("/v1/payments/{pay3}/confirm"), json!({})).await;
    let body = confirmed.expect(200);
    assert_eq!(body["status"], json!("failed"), "{body}");
    assert_eq!(body["failure_code"], json!("insufficient_funds"), "{body}");
    assert_balance(&server.balance(&alice).await, 8_000, 0, 0, Some(8_000));
    assert_balance(&server.balance(&bob).await, 2_000, 0, 0, Some(2_000));
    // A failed payment stays failed.
    let again = server.post(&format!("/v1/payments/{pay3}/confirm"), json!({})).await;
    again.expect_error(409, "payment_unexpected_state", None);

    // 6. Cancel a held payment: the hold is released.
    let created = server.create_payment(&alice, &bob, 500, json!({"capture_method": "manual"})).await;
    let pay4 = id_of(&created);
    server.post(&format!("/v1/payments/{pay4}/confirm"), json!({})).await.expect(200);
    assert_balance(&server.balance(&alice).await, 8_000, 500, 0, Some(7_500));
    let cancelled = server.post(&format!("/v1/payments/{pay4}/cancel"), json!({})).await;
    assert_eq!(cancelled.expect(200)["status"], json!("cancelled"));
    assert_balance(&server.balance(&alice).await, 8_000, 0, 0, Some(8_000));
    assert_balance(&server.balance(&bob).await, 2_000, 0, 0, Some(2_000));

    // Double entry: the EUR balances sum to zero.
    let sum = server.posted(&funding).await + server.posted(&alice).await + server.posted(&bob).await;
    assert_eq!(sum, 0);

    // The ledger shows alice's movements: fund, pay1, hold+post of pay2, two refunds, hold+void.
    let transfers = server.all_transfers(&alice, 2).await;
    assert!(transfers.len() >= 5, "too few transfers for alice: {transfers:?}");
    let mut ids: Vec<&str> = transfers.iter().map(|t| t["id"].as_str().expect("transfer id")).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), transfers.len(), "a transfer appears twice across pages");

    // 7. Close the EUR clearing window: every posted movement so far (the cancelled hold moved
    // nothing), netted per account; the nets sum to zero.
    let window = server.post("/v1/clearing/windows/close", json!({"currency": "EUR"})).await;
    let body = window.expect(201);
    let positions: Vec<(&str, i64, i64, i64)> = body["positions"]
        .as_array()
        .expect("positions")
        .iter()
        .map(|p| {
            let figure = |name: &str| p[name].as_i64().expect("a figure");
            (p["account"].as_str().expect("account"), figure("debits"), figure("credits"), figure("net"))
        })
        .collect();
    assert_eq!(
        positions,
        vec![
            (funding.as_str(), 10_000, 0, -10_000),
            (alice.as_str(), 4_500, 12_500, 8_000),
            (bob.as_str(), 2_500, 4_500, 2_000)
        ],
        "{body}"
    );
    assert_eq!((&body["gross_volume"], &body["net_total"]), (&json!(17_000), &json!(0)), "{body}");
    let again = server.post("/v1/clearing/windows/close", json!({"currency": "EUR"})).await;
    again.expect_error(409, "window_empty", Some("currency"));
}

/// 64 payments of 30 race for a payer that has 1 000: exactly 33 succeed, the payer never goes
/// below zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_payments_from_one_payer() {
    race_for_funds(None, 1_000).await;
}

/// The same race with an overdraft limit of 100 and 900 funded: the limit is the floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_payments_within_an_overdraft_limit() {
    race_for_funds(Some(100), 900).await;
}

/// 64 concurrent payments of 30 from a payer with `funded` and an overdraft limit: exactly 33
/// fit in 1 000 of capacity; the payer never passes its limit.
async fn race_for_funds(overdraft: Option<i64>, funded: i64) {
    let limit = overdraft.unwrap_or(0);
    assert_eq!(limit + funded, 1_000);
    let server = Arc::new(Server::start());
    let payer = server.open_account("EUR", overdraft.map(|l| json!(l))).await;
    let payee = server.open_account("EUR", None).await;
    server.fund(&payer, u64::try_from(funded).expect("positive")).await;

    let done = Arc::new(AtomicBool::new(false));
    // Watches the payer while the race runs.
    let watcher = {
        let (server, payer, done) = (server.clone(), payer.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen = 0;
            while !done.load(Ordering::Relaxed) {
                let balance = server.balance(&payer).await;
                let posted = balance["posted"].as_i64().expect("posted");
                let available = balance["available"].as_i64().expect("available");
                assert!(posted >= -limit, "payer below its limit: {balance}");
                assert!(available >= 0, "payer available below zero: {balance}");
                seen += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        })
    };

    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (server, payer, payee) = (server.clone(), payer.clone(), payee.clone());
            tokio::spawn(async move {
                let created = server.create_payment(&payer, &payee, 30, json!({})).await;
                created.expect(201);
                let id = id_of(&created);
                let confirmed = server.post(&format!("/v1/payments/{id}/confirm"), json!({})).await;
                let body = confirmed.expect(200).clone();
                (id, body)
            })
        })
        .collect();
    let mut succeeded = Vec::new();
    let mut failed = 0;
    for task in tasks {
        let (id, body) = task.await.expect("payment task");
        match body["status"].as_str() {
            Some("succeeded") => succeeded.push(id),
            Some("failed") => {
                assert_eq!(body["failure_code"], json!("insufficient_funds"), "{body}");
                failed += 1;
            }
            other => panic!("unexpected status {other:?}: {body}"),
        }
    }
    done.store(true, Ordering::Relaxed);
    let samples = watcher.await.expect("watcher");
    assert!(samples > 0);

    assert_eq!(succeeded.len(), 33, "exactly 33 payments of 30 fit in 1 000");
    assert_eq!(failed, 31);
    assert_balance(&server.balance(&payer).await, funded - 990, 0, 0, Some(10));
    assert_balance(&server.balance(&payee).await, 990, 0, 0, Some(990));
    // What was answered is what is stored.
    for id in &succeeded {
        let read = server.get(&format!("/v1/payments/{id}")).await;
        assert_eq!(read.expect(200)["status"], json!("succeeded"));
    }
    let credits: i64 = server
        .all_transfers(&payee, 10)
        .await
        .iter()
        .filter(|t| t["credit_account"] == json!(payee))
        .map(|t| t["amount"].as_i64().expect("amount"))
        .sum();
    assert_eq!(credits, 990);
}

/// Retries with the same `Idempotency-Key` return the saved response and have one effect; the
/// same key with another body is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotent_retries() {
    let server = Arc::new(Server::start());
    let payer = server.open_account("EUR", None).await;
    let payee = server.open_account("EUR", None).await;
    server.fund(&payer, 1_000).await;
    let body = json!({"payer_account": payer, "payee_account": payee, "amount": 100, "currency": "EUR"});

    // Create: a retry returns the same payment, byte for byte, marked as replayed.
    let first = server.post_with_key("/v1/payments", body.clone(), "create-1").await;
    first.expect(201);
    assert!(!first.is_replay(), "a first response must not be marked replayed");
    let retry = server.post_with_key("/v1/payments", body.clone(), "create-1").await;
    assert_eq!(retry.status, first.status);
    assert_eq!(retry.text(), first.text(), "a replay must return the saved body");
    assert!(retry.is_replay(), "a replay must carry Idempotent-Replayed: true");
    let pay = id_of(&first);

    // The same key with another body is refused, and nothing is created.
    let mut other = body.clone();
    other["amount"] = json!(101);
    let reused = server.post_with_key("/v1/payments", other, "create-1").await;
    reused.expect_error(422, "idempotency_key_reused", None);

    // Confirm: the retry does not debit twice.
    let path = format!("/v1/payments/{pay}/confirm");
    let confirmed = server.post_with_key(&path, json!({}), "confirm-1").await;
    assert_eq!(confirmed.expect(200)["status"], json!("succeeded"));
    for _ in 0..3 {
        let retry = server.post_with_key(&path, json!({}), "confirm-1").await;
        assert_eq!(retry.status, confirmed.status);
        assert_eq!(retry.text(), confirmed.text());
        assert!(retry.is_replay());
    }
    assert_balance(&server.balance(&payer).await, 900, 0, 0, Some(900));
    assert_balance(&server.balance(&payee).await, 100, 0, 0, Some(100));
    // Without the key, a second confirm is a state error, not a second debit.
    let bare = server.post(&path, json!({})).await;
    bare.expect_error(409, "payment_unexpected_state", None);
    assert_balance(&server.balance(&payer).await, 900, 0, 0, Some(900));

    // A key used on one path is not a replay for another path (the fingerprint includes it).
    let refund = server.post_with_key(&format!("/v1/payments/{pay}/refunds"), json!({"amount": 10}), "confirm-1").await;
    reused_or_distinct(&refund);

    // Concurrent requests with one key: one payment, one debit, the same answer for everyone.
    let key = format!("concurrent-{}", common::random_hex(8));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (server, body, key) = (server.clone(), body.clone(), key.clone());
            tokio::spawn(async move { server.post_with_key("/v1/payments", body, &key).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    let ids: Vec<String> = answers
        .iter()
        .map(|r| {
            r.expect(201);
            id_of(r)
        })
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one key made several payments: {ids:?}");
    assert!(answers.iter().all(|r| r.text() == answers[0].text()), "answers differ");
    assert_eq!(answers.iter().filter(|r| !r.is_replay()).count(), 1, "exactly one original answer");

    let path = format!("/v1/payments/{}/confirm", ids[0]);
    let key = format!("concurrent-confirm-{}", common::random_hex(8));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (server, path, key) = (server.clone(), path.clone(), key.clone());
            tokio::spawn(async move { server.post_with_key(&path, json!({}), &key).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    for answer in &answers {
        assert_eq!(answer.expect(200)["status"], json!("succeeded"));
        assert_eq!(answer.text(), answers[0].text());
    }
    assert_balance(&server.balance(&payer).await, 800, 0, 0, Some(800));

    // Transfers with one key and no id: one movement.
    let funding = server.funding_account("EUR").await;
    let transfer = json!({"debit_account": funding, "credit_account": payee, "amount": 7, "currency": "EUR"});
    let key = format!("concurrent-transfer-{}", common::random_hex(8));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (server, transfer, key) = (server.clone(), transfer.clone(), key.clone());
            tokio::spawn(async move { server.post_with_key("/v1/transfers", transfer, &key).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    for answer in &answers {
        answer.expect(201);
        assert_eq!(answer.text(), answers[0].text());
    }
    assert_balance(&server.balance(&payee).await, 207, 0, 0, Some(207));

    // A transfer with a client id retried without a key reports `exists`, once applied.
    let with_id = json!({
        "id": answers[0].body["id"], "debit_account": funding, "credit_account": payee,
        "amount": 7, "currency": "EUR",
    });
    let exists = server.post("/v1/transfers", with_id.clone()).await;
    assert_eq!(exists.expect(200)["result"], json!("exists"), "{}", exists.text());
    let mut different = with_id;
    different["amount"] = json!(8);
    let diff = server.post("/v1/transfers", different).await;
    diff.expect_error(422, "exists_with_different_fields", Some("id"));
    assert_balance(&server.balance(&payee).await, 207, 0, 0, Some(207));
}

/// A key reused on another path: either refused as reused, or treated as a distinct request.
/// Never a replay of the other path's response.
fn reused_or_distinct(resp: &Resp) {
    assert!(!resp.is_replay(), "a key from another path must not replay: {}", resp.text());
    if resp.status.as_u16() == 422 {
        assert_eq!(assert_error_shape(resp)["code"], json!("idempotency_key_reused"));
    } else {
        assert_eq!(resp.status.as_u16(), 201, "{}", resp.text());
    }
}

/// A held payment that is not captured in time expires, and its funds come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_payment_expires() {
    let server = Server::start();
    let payer = server.open_account("EUR", None).await;
    let payee = server.open_account("EUR", None).await;
    server.fund(&payer, 1_000).await;

    // On a loaded machine the confirm may come after the one second; try a few times.
    let mut held = None;
    for _ in 0..5 {
        let created = server
            .create_payment(&payer, &payee, 400, json!({"capture_method": "manual", "expires_in_seconds": 1}))
            .await;
        created.expect(201);
        let id = id_of(&created);
        let confirmed = server.post(&format!("/v1/payments/{id}/confirm"), json!({})).await;
        if confirmed.status.as_u16() == 200 && confirmed.body["status"] == json!("requires_capture") {
            held = Some(id);
            break;
        }
        // Too late: it must have expired, and it must say so.
        confirmed.expect_error(409, "payment_unexpected_state", None);
    }
    let held = held.expect("could not confirm a 1-second payment in time, five times");

    tokio::time::sleep(Duration::from_secs(2)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let read = server.get(&format!("/v1/payments/{held}")).await;
        let status = read.expect(200)["status"].clone();
        if status == json!("expired") {
            break;
        }
        assert_eq!(status, json!("requires_capture"), "{}", read.text());
        assert!(Instant::now() < deadline, "the payment never expired: {}", read.text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_balance(&server.balance(&payer).await, 1_000, 0, 0, Some(1_000));
    assert_balance(&server.balance(&payee).await, 0, 0, 0, Some(0));
    // An expired payment can be neither captured nor cancelled.
    let capture = server.post(&format!("/v1/payments/{held}/capture"), json!({})).await;
    capture.expect_error(409, "payment_unexpected_state", None);
    let cancel = server.post(&format!("/v1/payments/{held}/cancel"), json!({})).await;
    cancel.expect_error(409, "payment_unexpected_state", None);

    // An unconfirmed payment expires too, and can no longer be confirmed.
    let created = server.create_payment(&payer, &payee, 100, json!({"expires_in_seconds": 1})).await;
    let id = id_of(&created);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let read = server.get(&format!("/v1/payments/{id}")).await;
        if read.expect(200)["status"] == json!("expired") {
            break;
        }
        assert!(Instant::now() < deadline, "the payment never expired: {}", read.text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let confirm = server.post(&format!("/v1/payments/{id}/confirm"), json!({})).await;
    confirm.expect_error(409, "payment_unexpected_state", None);
    assert_balance(&server.balance(&payer).await, 1_000, 0, 0, Some(1_000));
}

/// Without `PAYCORE_API_KEY`, the server makes a key and writes it to `<data>/api-key`, mode
/// 0600; it works as a bearer key, a wrong one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_api_key_file() {
    use std::os::unix::fs::PermissionsExt;

    let mut server = Server::start_with(Options { api_key: None, ..Options::default() });
    let path = server.data_dir.join("api-key");
    let mode = std::fs::metadata(&path).expect("api-key file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{} has mode {:o}", path.display(), mode & 0o777);
    assert!(!server.key.is_empty() && !server.key.contains(char::is_whitespace), "key: {:?}", server.key);
    // It says where the key is, and never the key itself.
    let logs = server.stderr();
    assert!(logs.contains(&path.display().to_string()), "the log does not say where the key is:\n{logs}");
    assert!(!logs.contains(&server.key), "the key is in the log");
    assert!(!std::fs::read_to_string(server.tmp_path().join("stdout-1.log")).unwrap_or_default().contains(&server.key));

    // The key works.
    let account = server.open_account("USD", None).await;
    server.get(&format!("/v1/accounts/{account}")).await.expect(200);

    // A wrong key, a missing header and a wrong scheme are refused, with the error shape.
    let url = server.url(&format!("/v1/accounts/{account}"));
    let wrong = format!("{}x", server.key);
    let requests = [
        server.client.get(&url).bearer_auth(&wrong),
        server.client.get(&url),
        server.client.get(&url).header("Authorization", format!("Basic {}", server.key)),
        server.client.post(server.url("/v1/accounts")).bearer_auth("sk_test_nope").json(&json!({"currency": "USD"})),
    ];
    for request in requests {
        let resp = server.send(|| request.try_clone().expect("clone")).await.expect("request");
        assert_eq!(resp.status.as_u16(), 401, "{}", resp.text());
        assert_error_shape(&resp);
    }

    // The key survives a restart (it is stored hashed; the file stays as it was).
    let before = std::fs::read_to_string(&path).expect("api-key");
    server.restart();
    assert_eq!(std::fs::read_to_string(&path).expect("api-key"), before);
    server.get(&format!("/v1/accounts/{account}")).await.expect(200);
    // The health check needs no key.
    assert!(server.healthy().await);
}

/// Bulk transfers: one result per item, in order; a linked chain fails as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_and_linked_transfers() {
    let server = Server::start();
    let funding = server.funding_account("EUR").await;
    let a = server.open_account("EUR", None).await;
    let b = server.open_account("EUR", None).await;
    server.fund(&a, 100).await;
    let t = |debit: &str, credit: &str, amount: u64, linked: bool| json!({"debit_account": debit, "credit_account": credit, "amount": amount, "currency": "EUR", "linked": linked});
    let resp = server
        .post(
            "/v1/transfers",
            json!({"transfers": [
                t(&a, &b, 10, false),
                // A chain of two: the second cannot be paid, so neither is applied.
                t(&a, &b, 20, true),
                t(&a, &b, 1_000, false),
                t(&funding, &b, 5, false),
                t(&a, &a, 1, false),
            ]}),
        )
        .await;
    let body = resp.expect(200);
    let results: Vec<&str> = body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data: {body}"))
        .iter()
        .enumerate()
        .map(|(i, r)| {
            assert_eq!(r["index"], json!(i), "{body}");
            assert!(r["id"].as_str().is_some_and(|id| id.starts_with("tr_")), "{body}");
            r["result"].as_str().expect("result")
        })
        .collect();
    assert_eq!(results, ["ok", "linked_event_failed", "insufficient_funds", "ok", "same_account"], "{body}");
    assert_balance(&server.balance(&a).await, 90, 0, 0, Some(90));
    assert_balance(&server.balance(&b).await, 15, 0, 0, Some(15));

    // A pending transfer with a timeout, posted in part; a second post is refused.
    let hold = server
        .post("/v1/transfers", json!({"debit_account": a, "credit_account": b, "amount": 50, "currency": "EUR", "pending": true, "timeout_seconds": 3600}))
        .await;
    let hold_id = hold.expect(201)["id"].as_str().expect("id").to_owned();
    assert_balance(&server.balance(&a).await, 90, 50, 0, Some(40));
    let post = server.post("/v1/transfers", json!({"post_pending_id": hold_id, "amount": 30})).await;
    assert_eq!(post.expect(201)["result"], json!("ok"), "{}", post.text());
    assert_balance(&server.balance(&a).await, 60, 0, 0, Some(60));
    assert_balance(&server.balance(&b).await, 45, 0, 0, Some(45));
    let again = server.post("/v1/transfers", json!({"void_pending_id": hold_id})).await;
    again.expect_error(422, "pending_already_posted", Some("void_pending_id"));
    let sum = server.posted(&funding).await + server.posted(&a).await + server.posted(&b).await;
    assert_eq!(sum, 0);
}

/// A full queue answers 503 with `Retry-After` and does nothing; everything else is applied
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_queue_answers_503() {
    let server = Arc::new(Server::start_with(Options {
        extra_args: vec!["--queue-capacity".into(), "1".into()],
        ..Options::default()
    }));
    let payer = server.open_account("EUR", None).await;
    let payee = server.open_account("EUR", None).await;
    let funding = server.funding_account("EUR").await;
    let body = json!({"debit_account": funding, "credit_account": payee, "amount": 1, "currency": "EUR"});
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (server, body) = (server.clone(), body.clone());
            tokio::spawn(async move {
                // Straight through the client: no retry on 503 here.
                let response = server
                    .authed(server.client.post(server.url("/v1/transfers")))
                    .json(&body)
                    .send()
                    .await
                    .expect("request");
                let status = response.status().as_u16();
                let retry_after = response.headers().get("retry-after").is_some();
                let text = response.text().await.expect("body");
                (status, retry_after, text)
            })
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for task in tasks {
        let (status, retry_after, text) = task.await.expect("task");
        match status {
            201 => ok += 1,
            503 => {
                assert!(retry_after, "503 without Retry-After: {text}");
                let body: Value = serde_json::from_str(&text).expect("JSON");
                assert_eq!(body["error"]["code"], json!("queue_full"), "{text}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {text}"),
        }
    }
    eprintln!("{ok} applied, {refused} refused with 503");
    assert_eq!(server.posted(&payee).await, ok, "applied transfers vs answered 201");
    assert_eq!(server.posted(&payer).await, 0);
}

/// The operational endpoints answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_openapi() {
    let server = Server::start();
    let account = server.open_account("EUR", None).await;
    server.fund(&account, 5).await;
    let health = server.get_public("/healthz").await;
    health.expect(200);
    let metrics = server.get_public("/metrics").await;
    assert_eq!(metrics.status.as_u16(), 200, "{}", metrics.text());
    let text = metrics.text();
    assert!(text.contains("# TYPE"), "not Prometheus text: {text}");
    let openapi = server.get_public("/openapi.json").await;
    let doc = openapi.expect(200);
    for path in ["/v1/accounts", "/v1/transfers", "/v1/payments", "/v1/payments/{id}/confirm"] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from /openapi.json");
    }
}
