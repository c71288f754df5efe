//! Crash harness: `kill -9` of the real `paycore` binary, many times, under mixed load —
//! concurrent real-time payments (create + confirm, each with an `Idempotency-Key`) and large
//! CSV batches (`POST /v1/batches?format=csv&payer=…`, lines to 200 payees by `reference`).
//!
//! ```text
//! PAYCORE_CRASH_KILLS=20 cargo test -p paycore --test crash_mixed -- --nocapture
//! ```
//!
//! Without `PAYCORE_CRASH_KILLS` (CI) it kills 5 times. A 50 000-line batch is always running
//! when the server is killed (a new one is uploaded when the last has finished). Other knobs: `PAYCORE_CRASH_SEED` (the moments of the
//! kills; printed at the start, random by default), `PAYCORE_CRASH_CLIENTS` (8),
//! `PAYCORE_CRASH_LINES`.
//!
//! After every kill, while the server is down, `paycore verify DATA_DIR` must exit 0; after every
//! restart: every payment acknowledged `succeeded` is still succeeded with its amount; confirms
//! whose answer was lost are retried with their key and replay when they had been committed;
//! acknowledged confirms replay byte for byte; the real-time payee holds exactly Σ succeeded
//! payments and the payer exactly the rest; a batch never loses progress and its payer is
//! debited exactly (items × amount) for the items counted succeeded. At the end every batch is
//! `completed` once, with `succeeded + failed == total`, every payee holds exactly its lines,
//! and the batch payer exactly −Σ of them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::cast_possible_truncation)]

mod common;

use common::{Api, Server};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FUNDS: i64 = 1_000_000_000;
const PAYEES: usize = 200;
/// Every batch line pays this much (minor units), so that "items succeeded" and "money moved"
/// can be compared at any moment.
const LINE_AMOUNT: i64 = 123;
const BATCH_PAYER: &str = "CM-BATCH-PAYER";

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{name} must be a number")))
}

#[derive(Clone, Debug)]
struct Acknowledged {
    amount: i64,
    key: String,
    body: String,
}

#[derive(Default)]
struct Record {
    acknowledged: HashMap<String, Acknowledged>,
    /// Confirms whose answer never came (the server died): id → (amount, key).
    unknown: HashMap<String, (i64, String)>,
    /// Confirms answered with another status than `succeeded`.
    other: HashMap<String, String>,
    created: usize,
}

/// One real-time client: create and confirm payments until stopped or the server is gone.
async fn client(api: Api, payer: String, payee: String, seed: u64, stop: Arc<AtomicBool>, record: Arc<Mutex<Record>>) {
    let mut rng = Rng(seed | 1);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let amount = i64::try_from(rng.below(100)).expect("small") + 1;
        let body = json!({"payer_account": payer, "payee_account": payee, "amount": amount, "currency": "EUR"});
        let create_key = format!("create-{seed:x}-{n}");
        let Ok(created) = api.try_post("/v1/payments", &body, Some(&create_key)).await else { return };
        if matches!(created.status.as_u16(), 429 | 503) {
            // Rate limited or overloaded: nothing was done.
            backoff(&created).await;
            continue;
        }
        assert_eq!(created.status.as_u16(), 201, "create: {}", created.text());
        let id = created.body["id"].as_str().expect("payment id").to_owned();
        record.lock().unwrap().created += 1;

        let key = format!("confirm-{id}");
        let path = format!("/v1/payments/{id}/confirm");
        let mut answer = api.try_post(&path, &json!({}), Some(&key)).await;
        // Rate limited: not executed; the same confirm again, with its key, after a pause.
        while let Ok(resp) = &answer {
            if resp.status.as_u16() != 429 || stop.load(Ordering::Relaxed) {
                break;
            }
            backoff(resp).await;
            answer = api.try_post(&path, &json!({}), Some(&key)).await;
        }
        match answer {
            Ok(resp) if resp.status.as_u16() == 200 => {
                let status = resp.body["status"].as_str().expect("status").to_owned();
                let mut record = record.lock().unwrap();
                if status == "succeeded" {
                    assert_eq!(resp.body["amount"], json!(amount));
                    record.acknowledged.insert(id, Acknowledged { amount, key, body: resp.text() });
                } else {
                    record.other.insert(id, status);
                }
            }
            // 503 for longer than the helper retries, or still rate limited when stopped: not
            // acknowledged; resolved later.
            Ok(resp) if matches!(resp.status.as_u16(), 429 | 503) => {
                record.lock().unwrap().unknown.insert(id, (amount, key));
            }
            Ok(resp) => panic!("confirm {id}: {} {}", resp.status, resp.text()),
            Err(_) => {
                record.lock().unwrap().unknown.insert(id, (amount, key));
                return;
            }
        }
    }
}

/// Waits as `Retry-After` says (clamped to 20 ms..1 s).
async fn backoff(resp: &common::Resp) {
    let seconds = resp.header("retry-after").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis((seconds * 1000).clamp(20, 1000))).await;
}

/// `paycore verify` on the data folder of a stopped server.
fn verify(server: &Server, when: &str) -> Duration {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_paycore")).arg("verify").arg(&server.data_dir).output().expect("verify");
    assert!(
        out.status.success(),
        "{when}: paycore verify failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

struct Batch {
    id: String,
    lines: u64,
    /// Lines per payee index.
    per_payee: Vec<i64>,
    /// The most items seen succeeded.
    seen: u64,
    done: bool,
}

fn generate_csv(tag: usize, n: usize) -> (Vec<u8>, Vec<i64>) {
    let mut bytes = Vec::with_capacity(n * 40);
    bytes.extend_from_slice(b"payee,amount,currency,reference\n");
    let mut per_payee = vec![0i64; PAYEES];
    for i in 0..n {
        let payee = i % PAYEES;
        let amount = format!("{}.{:02}", LINE_AMOUNT / 100, LINE_AMOUNT % 100);
        bytes.extend_from_slice(format!("CM-{payee:03},{amount},EUR,CM{tag}-R{i:07}\n").as_bytes());
        per_payee[payee] += 1;
    }
    (bytes, per_payee)
}

async fn upload(server: &Server, tag: usize, lines: usize) -> Batch {
    let (bytes, per_payee) = generate_csv(tag, lines);
    let id = server.submit_batch(&format!("format=csv&payer={BATCH_PAYER}"), bytes, Some("text/csv")).await;
    eprintln!("batch {tag}: {id}, {lines} lines");
    Batch { id, lines: lines as u64, per_payee, seen: 0, done: false }
}

async fn open_payees(server: &Server) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in (0..PAYEES).collect::<Vec<_>>().chunks(16) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|k| {
                let api = server.api.clone();
                let reference = format!("CM-{k:03}");
                tokio::spawn(async move {
                    let resp = api.post("/v1/accounts", json!({"currency": "EUR", "reference": reference})).await;
                    resp.expect(201)["id"].as_str().expect("id").to_owned()
                })
            })
            .collect();
        for task in tasks {
            out.push(task.await.expect("task"));
        }
    }
    out
}

fn succeeded(batch: &Value) -> u64 {
    batch["counts"]["succeeded"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_mixed_load_loses_nothing_and_applies_nothing_twice() {
    let started = Instant::now();
    let kills = env_u64("PAYCORE_CRASH_KILLS").unwrap_or(5).max(1);
    let clients = env_u64("PAYCORE_CRASH_CLIENTS").unwrap_or(8).clamp(1, 64);
    let lines = env_u64("PAYCORE_CRASH_LINES").unwrap_or(50_000) as usize;
    let seed = env_u64("PAYCORE_CRASH_SEED").unwrap_or_else(common::random_u64);
    eprintln!(
        "crash_mixed: seed {seed} (PAYCORE_CRASH_SEED={seed}), {kills} kills, {clients} clients, {lines}-line batches"
    );
    let mut rng = Rng(seed | 1);

    let mut server = Server::start();
    let funding = server.funding_account("EUR").await;
    let payer = server.open_account("EUR", Some(json!(0))).await;
    let payee = server.open_account("EUR", None).await;
    server.fund(&payer, u64::try_from(FUNDS).expect("positive")).await;
    let batch_payer = server.open_account_ref("EUR", BATCH_PAYER, Some(json!("unlimited"))).await;
    let payees = open_payees(&server).await;
    let mut batches = vec![upload(&server, 0, lines).await];

    let record = Arc::new(Mutex::new(Record::default()));
    // Acknowledged payments read back after a restart at least once (and a sample again every
    // round; the balance sums cover all of them every round).
    let mut verified: HashSet<String> = HashSet::new();
    let mut verify_time = Duration::ZERO;
    for round in 1..=kills {
        // Mixed load: the clients, and a batch still running (a new one once the last is done).
        if batches.iter().all(|b| b.done) {
            let tag = batches.len();
            batches.push(upload(&server, tag, lines).await);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..clients)
            .map(|i| {
                tokio::spawn(client(
                    server.api.clone(),
                    payer.clone(),
                    payee.clone(),
                    rng.next() ^ i,
                    stop.clone(),
                    record.clone(),
                ))
            })
            .collect();
        // A random moment: sometimes right away (recovery, validation), mostly under load.
        let wait = match rng.below(10) {
            0 => 20 + rng.below(100),
            _ => 150 + rng.below(1_500),
        };
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.expect("client task panicked");
        }
        verify_time += verify(&server, &format!("after kill {round}"));
        server.restart();

        // Lost answers: retry each confirm with its key. Committed ones replay.
        let unknown: Vec<(String, (i64, String))> = record.lock().unwrap().unknown.drain().collect();
        let mut replayed = 0;
        for (id, (amount, key)) in &unknown {
            let before = server.get(&format!("/v1/payments/{id}")).await;
            let status_before = before.expect(200)["status"].as_str().expect("status").to_owned();
            let retry = server.post_with_key(&format!("/v1/payments/{id}/confirm"), json!({}), key).await;
            assert_eq!(retry.status.as_u16(), 200, "round {round}: retry of {id}: {}", retry.text());
            let status = retry.body["status"].as_str().expect("status").to_owned();
            match status_before.as_str() {
                "succeeded" | "failed" => {
                    assert!(retry.is_replay(), "round {round}: {id} was {status_before}, its key has no saved answer");
                    assert_eq!(status, status_before, "round {round}: {id}");
                    replayed += 1;
                }
                "requires_confirmation" => {
                    assert!(!retry.is_replay(), "round {round}: {id} replayed but not confirmed")
                }
                other => panic!("round {round}: unknown payment {id} in status {other}"),
            }
            let mut r = record.lock().unwrap();
            if status == "succeeded" {
                r.acknowledged
                    .insert(id.clone(), Acknowledged { amount: *amount, key: key.clone(), body: retry.text() });
            } else {
                r.other.insert(id.clone(), status);
            }
        }

        // Every acknowledged payment is durable: all new ones, and a sample of the older ones.
        let acknowledged: Vec<(String, Acknowledged)> = {
            let r = record.lock().unwrap();
            let mut all: Vec<_> = r.acknowledged.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            all
        };
        let mut to_read: Vec<&(String, Acknowledged)> =
            acknowledged.iter().filter(|(id, _)| !verified.contains(id)).collect();
        for _ in 0..30.min(acknowledged.len()) {
            to_read.push(&acknowledged[rng.below(acknowledged.len() as u64) as usize]);
        }
        for (id, ack) in &to_read {
            let body = server.get(&format!("/v1/payments/{id}")).await.expect(200).clone();
            assert_eq!(body["status"], json!("succeeded"), "round {round}: acknowledged {id} lost: {body}");
            assert_eq!(body["amount"], json!(ack.amount), "round {round}: {id}");
            verified.insert(id.clone());
        }
        // Acknowledged confirms replay byte for byte and move nothing.
        for _ in 0..10.min(acknowledged.len()) {
            let (id, ack) = &acknowledged[rng.below(acknowledged.len() as u64) as usize];
            let replay = server.post_with_key(&format!("/v1/payments/{id}/confirm"), json!({}), &ack.key).await;
            assert!(replay.is_replay(), "round {round}: replay of {id} not marked: {}", replay.text());
            assert_eq!(replay.text(), ack.body, "round {round}: replay of {id} differs");
        }

        // Money: nothing applied twice, nothing lost.
        let total: i64 = acknowledged.iter().map(|(_, a)| a.amount).sum();
        let (f, p, q) = (server.posted(&funding).await, server.posted(&payer).await, server.posted(&payee).await);
        assert_eq!(f, -FUNDS, "round {round}: funding changed");
        assert_eq!(q, total, "round {round}: payee holds {q}, Σ succeeded payments is {total}");
        assert_eq!(p, FUNDS - total, "round {round}: payer");

        // Batches: progress never goes back, and the payer paid exactly the items counted.
        let mut low = 0u64;
        let mut states = Vec::new();
        for b in &mut batches {
            let batch = server.batch(&b.id).await;
            let now = succeeded(&batch);
            assert!(now >= b.seen, "round {round}: batch {} lost progress: {now} < {}: {batch}", b.id, b.seen);
            b.seen = now;
            b.done = batch["status"] == json!("completed");
            low += now;
            states.push(format!("{}:{}/{}", batch["status"].as_str().unwrap_or("?"), now, b.lines));
        }
        let paid = -server.posted(&batch_payer).await;
        let mut high = 0u64;
        for b in &batches {
            high += succeeded(&server.batch(&b.id).await);
        }
        assert_eq!(paid % LINE_AMOUNT, 0, "round {round}: batch payer paid {paid}, not a multiple of a line");
        let items_paid = u64::try_from(paid / LINE_AMOUNT).expect("non-negative");
        assert!(
            low <= items_paid && items_paid <= high,
            "round {round}: the batch payer paid {items_paid} items, batches counted {low}..{high} succeeded"
        );
        let r = record.lock().unwrap();
        eprintln!(
            "kill {round}/{kills} after {wait} ms: {} payments created, {} acknowledged, {} unknown retried ({replayed} replayed); \
             batches {states:?} ({:.1?})",
            r.created,
            r.acknowledged.len(),
            unknown.len(),
            started.elapsed()
        );
    }

    // Every batch finishes, exactly once.
    let mut expected = vec![0i64; PAYEES];
    let mut total_items = 0i64;
    for b in &batches {
        let batch = server.wait_for_batch(&b.id).await;
        assert_eq!(batch["status"], json!("completed"), "{batch}");
        let (s, fl) = (succeeded(&batch), batch["counts"]["failed"].as_u64().unwrap_or(0));
        assert_eq!(s + fl, b.lines, "succeeded + failed == total: {batch}");
        assert_eq!(s, b.lines, "every line pays an open account from an unlimited payer: {batch}");
        for (k, n) in b.per_payee.iter().enumerate() {
            expected[k] += n * LINE_AMOUNT;
        }
        total_items += i64::try_from(s).expect("small");
    }
    assert_eq!(server.posted(&batch_payer).await, -total_items * LINE_AMOUNT, "batch payer == −Σ succeeded items");
    let mut balances = BTreeMap::new();
    for (k, id) in payees.iter().enumerate() {
        balances.insert(k, server.posted(id).await);
    }
    for (k, want) in expected.iter().enumerate() {
        assert_eq!(balances[&k], *want, "payee CM-{k:03}: each line paid exactly once");
    }
    server.kill9();
    verify_time += verify(&server, "at the end");
    let r = record.lock().unwrap();
    eprintln!(
        "crash_mixed: seed {seed}: {kills} kills, {} batches ({} items), {} payments acknowledged, verify {:.1?} in all, {:.1?}",
        batches.len(),
        total_items,
        r.acknowledged.len(),
        verify_time,
        started.elapsed()
    );
}
