//! Online backup and restore of the real binary: `paycore backup` taken while `paycore
//! serve` runs a payment load on the same folder, `paycore restore` into a new folder, `paycore
//! verify` on it, and a server on the restored folder that holds every payment acknowledged
//! before the backup began, with balances that are exactly the payments it holds, the
//! uploaded batch file carried along, and account history rebuilt.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Api, Options, Server};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: usize = 4;
const FUNDS: i64 = 10_000_000;

/// A payment the clients made: its id, its pair and amount, and when its confirm was answered
/// `succeeded` (if it was).
#[derive(Clone, Debug)]
struct Made {
    id: String,
    pair: usize,
    amount: i64,
    acknowledged: Option<Instant>,
}

async fn client(
    api: Api,
    pair: usize,
    payer: String,
    payee: String,
    stop: Arc<AtomicBool>,
    made: Arc<Mutex<Vec<Made>>>,
) {
    let mut amount = 1 + i64::try_from(pair).unwrap();
    while !stop.load(Ordering::Relaxed) {
        amount = amount % 97 + 1;
        let body = json!({"payer_account": payer, "payee_account": payee, "amount": amount, "currency": "EUR"});
        let created = api.post_with_key("/v1/payments", body, &format!("create-{}", common::random_hex(12))).await;
        let id = created.expect(201)["id"].as_str().unwrap().to_owned();
        let index = {
            let mut made = made.lock().unwrap();
            made.push(Made { id: id.clone(), pair, amount, acknowledged: None });
            made.len() - 1
        };
        let confirmed =
            api.post_with_key(&format!("/v1/payments/{id}/confirm"), json!({}), &format!("confirm-{id}")).await;
        assert_eq!(confirmed.expect(200)["status"], "succeeded", "{}", confirmed.text());
        made.lock().unwrap()[index].acknowledged = Some(Instant::now());
    }
}

fn paycore(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_paycore")).args(args).output().expect("run paycore");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

fn os(text: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(text)
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|e| e.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_restores_to_a_folder_that_verifies_and_holds_every_acknowledged_payment() {
    let server = Server::start();
    let mut pairs = Vec::new();
    for _ in 0..CLIENTS {
        let payer = server.open_account("EUR", Some(json!(0))).await;
        server.fund(&payer, u64::try_from(FUNDS).unwrap()).await;
        pairs.push((payer, server.open_account("EUR", Some(json!(0))).await));
    }
    // A batch file, paid before the backup: its upload goes into the backup.
    let (batch_payer, batch_payee) =
        (server.open_account("EUR", Some(json!(0))).await, server.open_account("EUR", Some(json!(0))).await);
    server.fund(&batch_payer, 1000).await;
    let csv = format!(
        "payer,payee,amount,currency\n{batch_payer},{batch_payee},2.50,EUR\n{batch_payer},{batch_payee},1.25,EUR\n"
    );
    let batch = server.submit_batch("format=csv", csv.into_bytes(), Some("text/csv")).await;
    assert_eq!(server.wait_for_batch(&batch).await["status"], "completed");

    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = pairs
        .iter()
        .enumerate()
        .map(|(pair, (payer, payee))| {
            tokio::spawn(client(server.api.clone(), pair, payer.clone(), payee.clone(), stop.clone(), made.clone()))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let backup = server.tmp_path().join("paycore.backup");
    let began = Instant::now();
    let (data, file) = (server.data_dir.clone().into_os_string(), backup.clone().into_os_string());
    let (code, said) =
        tokio::task::spawn_blocking(move || paycore(&[os("backup"), os("--data"), &data, os("--to"), &file]))
            .await
            .unwrap();
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("1 batch file(s)"), "{said}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let made = made.lock().unwrap().clone();
    let before: Vec<&Made> = made.iter().filter(|m| m.acknowledged.is_some_and(|at| at < began)).collect();
    let after = made.iter().filter(|m| m.acknowledged.is_none_or(|at| at > began)).count();
    eprintln!("{} payments acknowledged before the backup began, {after} not (or after)", before.len());
    assert!(before.len() >= 20, "only {} payments acknowledged before the backup", before.len());
    assert!(after > 0, "the load went on during the backup");

    // A second data folder: its server stopped and its folder removed, then restored into.
    let mut restored = Server::start_with(Options { api_key: Some(server.api.key.clone()), ..Options::default() });
    restored.kill9();
    std::fs::remove_dir_all(&restored.data_dir).unwrap();
    std::fs::create_dir_all(&restored.data_dir).unwrap();
    std::fs::write(restored.data_dir.join("stray"), b"x").unwrap();
    let target = restored.data_dir.clone().into_os_string();
    let (code, said) = paycore(&[os("restore"), backup.as_os_str(), os("--data"), &target]);
    assert_eq!(code, Some(1), "a folder that is not empty is refused: {said}");
    assert!(said.contains("is not empty"), "{said}");
    assert_eq!(entries(&restored.data_dir), 1, "nothing written");
    std::fs::remove_dir_all(&restored.data_dir).unwrap();
    let (code, said) = paycore(&[os("restore"), backup.as_os_str(), os("--data"), &target]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("ok: every invariant holds"), "{said}");
    let (code, said) = paycore(&[os("verify"), &target]);
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(entries(&restored.data_dir.join("batches")), 1, "the batch's upload came along");

    restored.restart();
    // Every payment acknowledged before the backup began is there, succeeded.
    for m in &before {
        let payment = restored.get(&format!("/v1/payments/{}", m.id)).await;
        let body = payment.expect(200);
        assert_eq!((body["status"].as_str(), body["amount"].as_i64()), (Some("succeeded"), Some(m.amount)), "{}", m.id);
    }
    // The balances are exactly the payments the restored folder holds, pair by pair.
    for (pair, (payer, payee)) in pairs.iter().enumerate() {
        let mut paid = 0;
        let mut count = 0;
        for m in made.iter().filter(|m| m.pair == pair) {
            let payment = restored.get(&format!("/v1/payments/{}", m.id)).await;
            if payment.status.as_u16() == 200 && payment.body["status"] == "succeeded" {
                paid += m.amount;
                count += 1;
            }
        }
        assert_eq!(restored.posted(payee).await, paid, "pair {pair}");
        assert_eq!(restored.posted(payer).await, FUNDS - paid, "pair {pair}");
        // Account history, rebuilt from the transfers.
        let history = restored.get(&format!("/v1/accounts/{payee}/transfers?limit=100")).await;
        let listed = history.expect(200)["data"].as_array().unwrap().len();
        assert_eq!(listed, count.min(100), "pair {pair}");
    }
    let batch_after = restored.batch(&batch).await;
    assert_eq!(
        (batch_after["status"].as_str(), batch_after["counts"]["succeeded"].as_u64()),
        (Some("completed"), Some(2))
    );
    assert_eq!(restored.posted(&batch_payee).await, 375);
    drop(server);
}
