//! Validation and the runner on real files: accounts are created from the file's own
//! references, then the batch is validated, run and checked line by line.

// Amounts are written as units and cents (`100_00`), hence the digit grouping.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::inconsistent_digit_grouping)]

mod common;

use common::{execute, ReadSide};
use paycore_engine::batches::{run, validate};
use paycore_engine::{EngineError, EngineHandle, Envelope, Priority, Submitter};
use paycore_ledger::{
    AccountId, BatchFormat, BatchId, BatchMode, BatchStatus, Command, Currency, ItemStatus, NewAccount, NewTransfer,
    OnInvalid, Outcome, Overdraft, TenantId, TransferId, TransferOp,
};
use paycore_store::{BatchRecord, BatchStore};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

const TENANT: TenantId = TenantId(5);
const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/samples");

struct Env {
    _dir: tempfile::TempDir,
    handle: EngineHandle,
    reader: Arc<dyn ReadSide>,
    next_id: u128,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_owned();
    let engine = common::boot(&data, 64, common::no_renderer());
    Env { _dir: dir, handle: engine.handle, reader: engine.reader, next_id: 1000 }
}

impl Env {
    async fn run(&self, command: Command) -> Outcome {
        execute(&self.handle, TENANT, command).await
    }

    async fn account(&mut self, currency: &str, reference: Option<&str>, balance: u64) -> AccountId {
        self.next_id += 1;
        let id = AccountId(self.next_id);
        let currency = Currency::from_code(currency).unwrap();
        let overdraft = if reference == Some("FUNDING") { Overdraft::Unlimited } else { Overdraft::Limit(0) };
        let open = NewAccount { id, currency, overdraft, reference: reference.map(str::to_owned), metadata: None };
        assert!(matches!(self.run(Command::CreateAccount(open)).await, Outcome::Account(Ok(_))));
        if balance > 0 {
            let funding = self.reader.find_account(TENANT, "FUNDING", None).unwrap().unwrap().id;
            self.next_id += 1;
            let fund = NewTransfer {
                id: TransferId(self.next_id),
                linked: false,
                op: TransferOp::Move {
                    debit_account: funding,
                    credit_account: id,
                    amount: balance,
                    currency,
                    hold: None,
                },
            };
            self.run(Command::Transfers(vec![fund])).await;
        }
        id
    }

    /// Stores `bytes` as the uploaded file `name`, as the API's intake does; its stored name.
    fn store_file(&self, name: &str, bytes: &[u8]) -> String {
        let file = format!("batches/{name}");
        let mut sink = self.reader.file_writer(&file).unwrap();
        sink.write_chunk(bytes).unwrap();
        sink.finish().unwrap();
        file
    }

    /// Creates, validates and runs a batch; returns its final record.
    async fn batch(&self, number: u128, format: &str, file: String, params: &[(&str, &str)]) -> BatchRecord {
        let id = batch_id(number);
        let get = |k: &str| params.iter().find(|(key, _)| *key == k).map(|(_, v)| (*v).to_owned());
        let new = BatchRecord::new(id, TENANT, BatchFormat::parse(format).unwrap(), 1);
        let record = BatchRecord {
            mode: get("mode").map_or(new.mode, |mode| BatchMode::parse(&mode).unwrap()),
            on_invalid: get("on_invalid").map_or(new.on_invalid, |on| OnInvalid::parse(&on).unwrap()),
            payer: get("payer"),
            currency: get("currency"),
            expected_count: get("expected_count").map(|c| c.parse().unwrap()),
            expected_total: get("expected_total"),
            file: Some(file),
            ..new
        };
        self.reader.create_batch(&record).unwrap();
        validate(self.reader.as_ref(), &record, &|| 2, &AtomicBool::new(false)).unwrap();
        let store: Arc<dyn BatchStore> = self.reader.clone();
        run(&self.handle, store, id, TENANT, &Arc::new(AtomicBool::new(false))).await.unwrap();
        self.reader.batch(TENANT, id).unwrap().unwrap()
    }

    fn posted(&self, id: AccountId) -> i64 {
        self.reader.account(TENANT, id).unwrap().unwrap().balances.posted()
    }
}

/// Batch ids as the server makes them: distinct in their time-ordered top bits.
fn batch_id(number: u128) -> BatchId {
    BatchId(paycore_ledger::time_ordered(1_700_000_000_000 + u64::try_from(number).unwrap(), 12345))
}

fn sample(path: &str) -> Vec<u8> {
    std::fs::read(Path::new(SAMPLES).join(path)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pain001_sample_pays_every_transaction() {
    let mut env = env();
    env.account("EUR", Some("FUNDING"), 0).await;
    // sepa_king's DK sample: one debtor, two creditors, EUR 6655.86 in all.
    let debtor = env.account("EUR", Some("DE87200500001234567890"), 1_000_000).await;
    let c1 = env.account("EUR", Some("DE21500500009876543210"), 0).await;
    let c2 = env.account("EUR", Some("DE21500500001234567897"), 0).await;
    let file = env.store_file("dk.xml", &sample("iso20022/pain.001.001.03_sepaking_DK-sample_2tx_EUR.xml"));
    let batch = env.batch(1, "pain.001", file, &[]).await;
    assert_eq!(
        (batch.status.as_str(), batch.total, batch.succeeded, batch.failed),
        ("completed", 2, 2, 0),
        "{batch:?}"
    );
    assert_eq!(env.posted(debtor), 1_000_000 - 665_586);
    assert_eq!(env.posted(c1) + env.posted(c2), 665_586);
    assert_eq!(batch.variant.as_deref(), Some("pain.001.001.03"));
    let totals = env.reader.batch_totals(batch_id(1)).unwrap();
    assert_eq!((totals[0].count, totals[0].sum), (2, 665_586));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_sample_is_rejected_before_any_money_moves() {
    let mut env = env();
    env.account("EUR", Some("FUNDING"), 0).await;
    let file = env.store_file("bad.xml", &sample("iso20022/INVALID-pain.001.001.09_5tx_EUR_nboftxs-mismatch.xml"));
    let batch = env.batch(2, "pain.001", file, &[]).await;
    assert_eq!(batch.status, BatchStatus::Rejected);
    let rejection: serde_json::Value = serde_json::from_str(batch.rejection.as_deref().unwrap()).unwrap();
    assert_eq!(rejection["code"], "control_total_mismatch");
    assert!(rejection["message"].as_str().unwrap().contains("NbOfTxs is 2 but the file has 5"), "{rejection}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_best_effort_runs_dry_and_reports_each_line() {
    let mut env = env();
    env.account("EUR", Some("FUNDING"), 0).await;
    let payer = env.account("EUR", Some("PAYROLL"), 100_00).await;
    let mut csv = String::from("payee,amount,currency,reference\n");
    for i in 0..30 {
        env.account("EUR", Some(&format!("EMP{i}")), 0).await;
        csv.push_str(&format!("EMP{i},10.00,EUR,salary-{i}\n"));
    }
    csv.push_str("NOBODY,1.00,EUR,salary-x\n");
    csv.push_str("EMP1,1.005,EUR,salary-y\n");
    let file = env.store_file("pay.csv", csv.as_bytes());

    // Rejected as a whole by default: two invalid lines, nothing paid.
    let rejected = env.batch(3, "csv", file.clone(), &[("payer", "PAYROLL")]).await;
    assert_eq!((rejected.status.as_str(), rejected.invalid), ("rejected", 2));
    assert_eq!(env.posted(payer), 100_00);

    // Skipping invalid lines: 10 of 30 are paid before the money runs out.
    let batch = env.batch(4, "csv", file.clone(), &[("payer", "PAYROLL"), ("on_invalid", "skip_invalid")]).await;
    assert_eq!(
        (batch.status.as_str(), batch.total, batch.invalid, batch.succeeded, batch.failed),
        ("completed", 32, 2, 10, 20)
    );
    assert_eq!(env.posted(payer), 0);
    let failed = env.reader.batch_items(batch_id(4), &[ItemStatus::Failed], None, 100).unwrap();
    assert_eq!(failed.len(), 20);
    assert!(failed.iter().all(|i| i.failure_code.as_deref() == Some("insufficient_funds")));
    let invalid = env.reader.batch_items(batch_id(4), &[ItemStatus::Invalid], None, 100).unwrap();
    assert_eq!(
        invalid.iter().map(|i| (i.line, i.failure_code.clone().unwrap())).collect::<Vec<_>>(),
        [(32, "account_not_found".to_owned()), (33, "too_many_decimals".to_owned())]
    );

    // Atomic: 30 × 10.00 from 50.00 cannot all be paid, so none is.
    env.account("EUR", Some("BONUS"), 50_00).await;
    let atomic = env
        .batch(5, "csv", file.clone(), &[("payer", "BONUS"), ("on_invalid", "skip_invalid"), ("mode", "atomic")])
        .await;
    assert_eq!((atomic.status.as_str(), atomic.succeeded, atomic.failed, atomic.held), ("completed", 0, 30, 0));
    let bonus = env.reader.find_account(TENANT, "BONUS", None).unwrap().unwrap();
    assert_eq!((bonus.balances.posted(), bonus.balances.debits_pending), (50_00, 0));

    // Expected totals that do not match reject the file, naming both figures.
    let wrong = env
        .batch(6, "csv", file, &[("payer", "PAYROLL"), ("on_invalid", "skip_invalid"), ("expected_count", "31")])
        .await;
    assert_eq!(wrong.status, BatchStatus::Rejected);
    assert!(wrong.rejection.unwrap().contains("expected_count is 31 but the file has 32"));

    // The offline check agrees with all of it.
    let report = paycore_store::verify::verify(env.reader.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.batch_items, 4 * 32);
}

/// An engine that never takes anything: its queue is always full.
struct AlwaysFull;

impl Submitter for AlwaysFull {
    fn try_submit(&self, _: Envelope, _: Priority) -> Result<(), EngineError> {
        Err(EngineError::Overloaded)
    }

    fn depth(&self) -> usize {
        0
    }
}

/// A submitter with a bug: it panics.
struct Panicking;

impl Submitter for Panicking {
    fn try_submit(&self, _: Envelope, _: Priority) -> Result<(), EngineError> {
        panic!("the submitter broke")
    }

    fn depth(&self) -> usize {
        0
    }
}

impl Env {
    /// A validated CSV batch in `mode` of three payments from PAYROLL (funded with 100.00),
    /// `processing`.
    async fn processing_batch(&mut self, number: u128, mode: &str) -> (BatchId, AccountId) {
        self.account("EUR", Some("FUNDING"), 0).await;
        let payer = self.account("EUR", Some("PAYROLL"), 10_000).await;
        for i in 0..3 {
            self.account("EUR", Some(&format!("EMP{i}")), 0).await;
        }
        let file = self.store_file("pay.csv", b"payee,amount,currency\nEMP0,1.00,EUR\nEMP1,1.00,EUR\nEMP2,1.00,EUR\n");
        let new = BatchRecord::new(batch_id(number), TENANT, BatchFormat::Csv, 1);
        let record = BatchRecord {
            mode: BatchMode::parse(mode).unwrap(),
            payer: Some("PAYROLL".into()),
            file: Some(file),
            ..new
        };
        self.reader.create_batch(&record).unwrap();
        validate(self.reader.as_ref(), &record, &|| 2, &AtomicBool::new(false)).unwrap();
        assert_eq!(self.reader.batch(TENANT, batch_id(number)).unwrap().unwrap().status, BatchStatus::Processing);
        (batch_id(number), payer)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_asked_to_stop_stops_retrying_an_engine_that_does_not_answer() {
    for mode in ["best_effort", "atomic"] {
        let mut env = env();
        let (batch, payer) = env.processing_batch(7, mode).await;
        let full = EngineHandle::new(Arc::new(AlwaysFull));
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = {
            let stopping = stopping.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                stopping.store(true, std::sync::atomic::Ordering::Relaxed);
            })
        };
        let store: Arc<dyn BatchStore> = env.reader.clone();
        let ran = tokio::time::timeout(std::time::Duration::from_secs(10), run(&full, store, batch, TENANT, &stopping))
            .await
            .unwrap_or_else(|_| panic!("{mode}: the runner kept retrying after it was asked to stop"));
        assert!(ran.is_ok(), "{mode}: {ran:?}");
        stop.await.unwrap();
        // Nothing was paid, and the batch waits for the next start.
        let record = env.reader.batch(TENANT, batch).unwrap().unwrap();
        assert_eq!((record.status.as_str(), record.succeeded, record.failed), ("processing", 0, 0), "{mode}");
        assert_eq!(env.posted(payer), 10_000, "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_task_that_panics_is_reported_as_an_error() {
    let mut env = env();
    let (batch, payer) = env.processing_batch(8, "best_effort").await;
    let broken = EngineHandle::new(Arc::new(Panicking));
    let store: Arc<dyn BatchStore> = env.reader.clone();
    let stopping = Arc::new(AtomicBool::new(false));
    let ran = tokio::time::timeout(std::time::Duration::from_secs(10), run(&broken, store, batch, TENANT, &stopping))
        .await
        .expect("the runner hung on a panicked task");
    let error = ran.expect_err("a panicked submission task must be an error").to_string();
    assert!(error.contains("a batch submission task failed") && error.contains("panicked"), "{error}");
    let record = env.reader.batch(TENANT, batch).unwrap().unwrap();
    assert_eq!((record.status.as_str(), record.succeeded), ("processing", 0));
    assert_eq!(env.posted(payer), 10_000);
}

// ---------------------------------------------------------------- NACHA: what is not paid

const NACHA_HEADER: &str =
    "101 03130001202313801041908161055A094101Federal Reserve Bank   My Bank Name           12345678";

/// A one-batch PPD file with correct control records, of entries (transaction code, account
/// number at RDFI 231380104, cents), trace numbers under ODFI 12104288.
fn nacha_file(service_class: &str, entries: &[(&str, &str, u64)]) -> Vec<u8> {
    let mut lines = vec![NACHA_HEADER.to_owned()];
    lines.push(format!(
        "{:<94}",
        format!("5{service_class}{:<16}{:<20}1234567890PPDPAYMENT   {:<6}190816   1121042880000001", "Company", "", "")
    ));
    let (mut hash, mut debit, mut credit) = (0u64, 0u64, 0u64);
    for (n, (code, account, cents)) in entries.iter().enumerate() {
        lines.push(format!(
            "6{code}231380104{account:<17}{cents:010}{:<15}{:<22}  0{}{:07}",
            "ID",
            "Receiver",
            "12104288",
            n + 1
        ));
        hash += 23138010;
        if code.starts_with('2') && matches!(&code[1..], "2" | "3" | "4") {
            credit += cents;
        } else {
            debit += cents;
        }
    }
    let count = entries.len();
    lines.push(format!(
        "{:<94}",
        format!("8{service_class}{count:06}{hash:010}{debit:012}{credit:012}1234567890{:<25}121042880000001", "")
    ));
    let blocks = (lines.len() + 1).div_ceil(10);
    lines.push(format!("{:<94}", format!("9000001{blocks:06}{count:08}{hash:010}{debit:012}{credit:012}")));
    (lines.join("\n") + "\n").into_bytes()
}

fn rejection_of(batch: &BatchRecord) -> serde_json::Value {
    serde_json::from_str(batch.rejection.as_deref().expect("a rejection")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacha_prenotes_are_reported_not_paid_and_do_not_reject_the_file() {
    let mut env = env();
    let funding = env.account("USD", Some("FUNDING"), 0).await;
    let receiver = env.account("USD", Some("231380104111"), 0).await;
    env.account("USD", Some("231380104222"), 0).await;
    let file =
        env.store_file("prenotes.ach", &nacha_file("200", &[("22", "111", 12_34), ("23", "222", 0), ("24", "222", 0)]));
    let batch = env.batch(20, "nacha", file, &[("payer", "FUNDING")]).await;
    assert_eq!(
        (batch.status, batch.total, batch.invalid, batch.succeeded, batch.failed),
        (BatchStatus::Completed, 3, 2, 1, 0),
        "{batch:?}"
    );
    assert_eq!((env.posted(receiver), env.posted(funding)), (12_34, -12_34));
    let skipped = env.reader.batch_items(batch_id(20), &[ItemStatus::Invalid], None, 10).unwrap();
    let codes: Vec<_> = skipped.iter().map(|i| (i.line, i.failure_code.as_deref())).collect();
    assert_eq!(codes, vec![(4, Some("prenote")), (5, Some("zero_dollar_entry"))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacha_files_with_nothing_payable_say_so() {
    let mut env = env();
    let funding = env.account("USD", Some("FUNDING"), 0).await;
    // Only prenotes: nothing to pay.
    let file = env.store_file("only-prenotes.ach", &nacha_file("200", &[("23", "111", 0), ("33", "222", 0)]));
    let batch = env.batch(21, "nacha", file, &[("payer", "FUNDING")]).await;
    assert_eq!((batch.status, batch.total, batch.invalid), (BatchStatus::Rejected, 2, 2), "{batch:?}");
    let rejection = rejection_of(&batch);
    assert_eq!(rejection["code"], "no_payable_items");
    assert_eq!(
        rejection["message"],
        "none of the file's 2 items is payable: 2 are prenotes or zero-dollar entries, which are reported but not paid, and 0 are invalid"
    );

    // Returns (moov-io/ach's return-WEB.ach): never paid, even with the accounts in place.
    env.account("USD", Some("091400606123456789"), 0).await;
    let returns =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../formats/tests/fixtures/nacha/return-WEB.ach")).unwrap();
    let file = env.store_file("returns.ach", &returns);
    let batch = env.batch(22, "nacha", file.clone(), &[("payer", "FUNDING")]).await;
    assert_eq!(batch.status, BatchStatus::Rejected);
    let rejection = rejection_of(&batch);
    assert_eq!(rejection["code"], "invalid_items");
    assert_eq!(rejection["errors"][0]["code"], "return_entry_not_matched");
    assert_eq!(rejection["errors"][0]["line"], 3);
    let batch = env.batch(23, "nacha", file, &[("payer", "FUNDING"), ("on_invalid", "skip_invalid")]).await;
    assert_eq!(rejection_of(&batch)["code"], "no_payable_items");
    assert_eq!(env.posted(funding), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_service_class_code_names_itself() {
    let mut env = env();
    let funding = env.account("USD", Some("FUNDING"), 0).await;
    env.account("USD", Some("231380104111"), 0).await;
    let file = env.store_file("scc.ach", &nacha_file("123", &[("22", "111", 5_00)]));
    let batch = env.batch(24, "nacha", file, &[("payer", "FUNDING")]).await;
    assert_eq!(batch.status, BatchStatus::Rejected);
    let rejection = rejection_of(&batch);
    assert_eq!(rejection["code"], "invalid_service_class_code");
    assert_eq!(rejection["errors"][0]["line"], 2);
    assert_eq!(env.posted(funding), 0);
}
