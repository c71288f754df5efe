//! `kill -9` of the real `paycore` binary in the middle of a payment load, then a restart on the
//! same data: every payment answered `succeeded` is still there, none is applied twice, and the
//! balances still sum to zero. Three times over.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Api, Server};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;
const ROUNDS: usize = 3;
const FUNDS: i64 = 100_000_000;

/// A payment whose confirm was answered `succeeded`: the saved answer and its key.
#[derive(Clone, Debug)]
struct Acknowledged {
    amount: i64,
    key: String,
    body: String,
}

#[derive(Default)]
struct Record {
    acknowledged: HashMap<String, Acknowledged>,
    /// Confirms sent whose answer never came (the server died): id → (amount, key).
    unknown: HashMap<String, (i64, String)>,
    /// Confirms answered with something else than `succeeded` (failed: not enough funds).
    answered_other: HashMap<String, String>,
    created: usize,
}

/// One client: create and confirm payments until stopped or the server goes away.
async fn client(api: Api, payer: String, payee: String, seed: u64, stop: Arc<AtomicBool>, record: Arc<Mutex<Record>>) {
    let mut x = seed | 1;
    while !stop.load(Ordering::Relaxed) {
        // xorshift: amounts 1..=100.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let amount = i64::try_from(x % 100).expect("small") + 1;
        let body = json!({"payer_account": payer, "payee_account": payee, "amount": amount, "currency": "EUR"});
        let create_key = format!("create-{}", common::random_hex(12));
        let Ok(created) = api.try_post("/v1/payments", &body, Some(&create_key)).await else { return };
        assert_eq!(created.status.as_u16(), 201, "create: {}", created.text());
        let id = created.body["id"].as_str().expect("payment id").to_owned();
        record.lock().unwrap().created += 1;

        let key = format!("confirm-{id}");
        let path = format!("/v1/payments/{id}/confirm");
        match api.try_post(&path, &json!({}), Some(&key)).await {
            Ok(resp) => {
                assert_eq!(resp.status.as_u16(), 200, "confirm: {}", resp.text());
                let status = resp.body["status"].as_str().expect("status").to_owned();
                let mut record = record.lock().unwrap();
                if status == "succeeded" {
                    assert_eq!(resp.body["amount"], json!(amount));
                    record.acknowledged.insert(id, Acknowledged { amount, key, body: resp.text() });
                } else {
                    record.answered_other.insert(id, status);
                }
            }
            Err(_) => {
                record.lock().unwrap().unknown.insert(id, (amount, key));
                return;
            }
        }
    }
}

/// Every transfer touching `account`, checked for duplicates; returns the sum of its credits
/// minus its debits over posted (non-pending) transfers, and how many posted credits it had.
async fn ledger_sum(server: &Server, account: &str) -> (i64, usize) {
    let transfers = server.all_transfers(account, 100).await;
    let mut seen = HashSet::new();
    let mut sum = 0i64;
    let mut credits = 0usize;
    for t in &transfers {
        let id = t["id"].as_str().expect("transfer id").to_owned();
        assert!(seen.insert(id.clone()), "transfer {id} listed twice");
        let amount = t["amount"].as_i64().expect("amount");
        // Holds, voids and expiries move no posted money; single transfers and posts do.
        match t["kind"].as_str() {
            Some("single" | "post_pending") => {}
            Some("pending" | "void_pending" | "expire_pending") => continue,
            other => panic!("transfer {id} of unknown kind {other:?}: {t}"),
        }
        if t["credit_account"] == json!(account) {
            sum += amount;
            credits += 1;
        }
        if t["debit_account"] == json!(account) {
            sum -= amount;
        }
    }
    (sum, credits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_payment_load_loses_nothing() {
    let mut server = Server::start();
    let funding = server.funding_account("EUR").await;
    let payer = server.open_account("EUR", None).await;
    let payee = server.open_account("EUR", None).await;
    server.fund(&payer, u64::try_from(FUNDS).expect("positive")).await;

    let record = Arc::new(Mutex::new(Record::default()));
    for round in 1..=ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|i| {
                tokio::spawn(client(
                    server.api.clone(),
                    payer.clone(),
                    payee.clone(),
                    common::random_u64() ^ i as u64,
                    stop.clone(),
                    record.clone(),
                ))
            })
            .collect();
        // Let the load build up (at least 1.5 s and 50 more acknowledged payments, however
        // slow the machine), then pull the plug in the middle of it.
        let acknowledged_before = record.lock().unwrap().acknowledged.len();
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let progress = record.lock().unwrap().acknowledged.len() - acknowledged_before;
            let waited = started.elapsed();
            if (waited >= Duration::from_millis(1_500) && progress >= 50) || waited >= Duration::from_secs(60) {
                break;
            }
        }
        let created_before_kill = record.lock().unwrap().created;
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.expect("client task panicked");
        }
        assert!(created_before_kill > 0, "round {round}: no payment was created before the kill");

        server.restart();
        let (acknowledged, unknown) = {
            let r = record.lock().unwrap();
            eprintln!(
                "round {round}: {} created, {} acknowledged, {} unknown, {} answered otherwise",
                r.created,
                r.acknowledged.len(),
                r.unknown.len(),
                r.answered_other.len()
            );
            (r.acknowledged.clone(), r.unknown.clone())
        };
        assert!(!acknowledged.is_empty(), "round {round}: no payment succeeded before the kill");
        check(&server, &funding, &payer, &payee, &acknowledged, &unknown, round).await;
        // What a careful client does next: retry every unknown confirm with its key. The
        // answer is now known; the money checks must still hold.
        let resolved = retry_unknown(&server, &unknown, round).await;
        {
            let mut r = record.lock().unwrap();
            for (id, answer) in resolved {
                r.unknown.remove(&id);
                match answer {
                    Some(ack) => {
                        r.acknowledged.insert(id, ack);
                    }
                    None => {
                        r.answered_other.insert(id, "failed".to_owned());
                    }
                }
            }
        }
        let (acknowledged, unknown) = {
            let r = record.lock().unwrap();
            (r.acknowledged.clone(), r.unknown.clone())
        };
        assert!(unknown.is_empty(), "round {round}: unknown payments left after retrying");
        check(&server, &funding, &payer, &payee, &acknowledged, &unknown, round).await;
    }

    // The service still takes payments after all that.
    let confirmed = server.pay(&payer, &payee, 1).await;
    assert_eq!(confirmed.expect(200)["status"], json!("succeeded"));
}

/// Retries each unknown confirm with its original key. A payment whose confirm was committed
/// before the kill must answer with the saved response (a replay: the response is saved in the
/// same commit as the debit); one that was not must be confirmed now, once. Returns, per
/// payment, the acknowledgement if it succeeded.
async fn retry_unknown(
    server: &Server,
    unknown: &HashMap<String, (i64, String)>,
    round: usize,
) -> Vec<(String, Option<Acknowledged>)> {
    let mut out = Vec::new();
    let mut committed = 0;
    for (id, (amount, key)) in unknown {
        let before = server.get(&format!("/v1/payments/{id}")).await;
        let status_before = before.expect(200)["status"].as_str().expect("status").to_owned();
        let path = format!("/v1/payments/{id}/confirm");
        let retry = server.post_with_key(&path, json!({}), key).await;
        assert_eq!(retry.status.as_u16(), 200, "round {round}: retry of {id}: {}", retry.text());
        let status = retry.body["status"].as_str().expect("status").to_owned();
        match status_before.as_str() {
            "succeeded" | "failed" => {
                assert!(
                    retry.is_replay(),
                    "round {round}: {id} was {status_before} but its key has no saved answer: {}",
                    retry.text()
                );
                assert_eq!(status, status_before, "round {round}: {id}");
                committed += 1;
            }
            "requires_confirmation" => {
                assert!(!retry.is_replay(), "round {round}: {id} has a saved answer but was not confirmed");
            }
            other => panic!("round {round}: unknown payment {id} in status {other}"),
        }
        // And once more: now it is a replay, byte for byte.
        let again = server.post_with_key(&path, json!({}), key).await;
        assert_eq!(again.text(), retry.text(), "round {round}: second retry of {id}");
        assert!(again.is_replay());
        let ack =
            (status == "succeeded").then(|| Acknowledged { amount: *amount, key: key.clone(), body: retry.text() });
        out.push((id.clone(), ack));
    }
    eprintln!("round {round}: of {} unknown confirms, {committed} had been committed before the kill", unknown.len());
    out
}

async fn check(
    server: &Server,
    funding: &str,
    payer: &str,
    payee: &str,
    acknowledged: &HashMap<String, Acknowledged>,
    unknown: &HashMap<String, (i64, String)>,
    round: usize,
) {
    // Every acknowledged payment is there, succeeded, with its amount.
    let mut succeeded_total = 0i64;
    for (id, ack) in acknowledged {
        let read = server.get(&format!("/v1/payments/{id}")).await;
        let body = read.expect(200);
        assert_eq!(body["status"], json!("succeeded"), "round {round}: acknowledged {id} lost: {body}");
        assert_eq!(body["amount"], json!(ack.amount), "round {round}: {id}");
        succeeded_total += ack.amount;
    }
    // Unknown ones: whatever they are, they say the same thing twice, and count if succeeded.
    let mut unknown_succeeded = 0usize;
    for (id, (amount, _key)) in unknown {
        let first = server.get(&format!("/v1/payments/{id}")).await;
        let second = server.get(&format!("/v1/payments/{id}")).await;
        // Its create was answered 201, and answers come only after the commit.
        assert_ne!(first.status.as_u16(), 404, "round {round}: payment {id} was answered 201 but is gone");
        let status = first.expect(200)["status"].clone();
        assert_eq!(second.expect(200)["status"], status, "round {round}: {id} changes by itself");
        match status.as_str() {
            Some("succeeded") => {
                succeeded_total += amount;
                unknown_succeeded += 1;
            }
            Some("requires_confirmation") | Some("failed") => {}
            other => panic!("round {round}: unknown payment {id} in status {other:?}"),
        }
    }

    // Money: double entry, and the payee holds exactly the succeeded payments.
    let (f, p, q) = (server.posted(funding).await, server.posted(payer).await, server.posted(payee).await);
    assert_eq!(f + p + q, 0, "round {round}: balances do not sum to zero: {f} + {p} + {q}");
    assert_eq!(f, -FUNDS, "round {round}: funding changed");
    assert_eq!(q, succeeded_total, "round {round}: payee posted vs Σ succeeded payments");
    assert_eq!(p, FUNDS - succeeded_total, "round {round}: payer posted");

    // The ledger's transfers agree with the balances, and none is listed twice.
    let (payee_sum, credits) = ledger_sum(server, payee).await;
    assert_eq!(payee_sum, q, "round {round}: Σ transfers of the payee vs its balance ({credits} credits)");
    // One credit per succeeded payment: none applied twice.
    let succeeded_count = acknowledged.len() + unknown_succeeded;
    assert_eq!(credits, succeeded_count, "round {round}: credits to the payee vs succeeded payments");
    let (payer_sum, _) = ledger_sum(server, payer).await;
    assert_eq!(payer_sum, p, "round {round}: Σ transfers of the payer vs its balance");

    // Retrying an acknowledged confirm with its key replays the saved answer, and moves nothing;
    // without a key it is refused.
    for (id, ack) in acknowledged.iter().take(20) {
        let path = format!("/v1/payments/{id}/confirm");
        let replay = server.post_with_key(&path, json!({}), &ack.key).await;
        assert_eq!(replay.status.as_u16(), 200, "round {round}: {}", replay.text());
        assert_eq!(replay.text(), ack.body, "round {round}: replay of {id} differs");
        assert!(replay.is_replay(), "round {round}: replay of {id} not marked");
        let bare = server.post(&path, json!({})).await;
        bare.expect_error(409, "payment_unexpected_state", None);
    }
    assert_eq!(server.posted(payer).await, p, "round {round}: a retry moved money");
    assert_eq!(server.posted(payee).await, q, "round {round}: a retry moved money");
}
