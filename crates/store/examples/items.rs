//! The batch item writer and readers alone, for callgrind: writes `N` items of the bench's CSV
//! shape (a batch-level payer, payees named by account id, `inv-N` references, `line N`
//! locations; one in 1 000 invalid) to a fresh embedded store in chunks of 4 096, as
//! validation's writer does, then reads them back as the runner (`batch_work`, 8 190 at a time),
//! the report did (`batch_items`, windows of 4 096), as it does (`visit_batch_items`, borrowed,
//! windows of 4 096) and the invalid listing do.
//!
//! `cargo run --release -p paycore-store --example items -- 100000`; under
//! `valgrind --tool=callgrind`, `callgrind_annotate --inclusive=yes` gives each call's
//! instructions (`insert_batch_items`, `batch_work`, `batch_items`, `visit_batch_items`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use paycore_ledger::{AccountId, BatchFormat, BatchId, Currency, ItemStatus, TenantId};
use paycore_store::{ApiStore, BatchItemRow, BatchRecord};

fn main() {
    let n: u64 = std::env::args().nth(1).map_or(100_000, |a| a.parse().expect("a count of items"));
    let dir = tempfile::tempdir().unwrap();
    let opened = paycore_store::open(dir.path()).unwrap();
    let api = opened.api;
    let tenant = TenantId(1);
    let batch = BatchId(7 << 64);
    let payer = AccountId(2);
    let payees: Vec<AccountId> = (0..1000).map(|k| AccountId(1_000 + k)).collect();
    let mut record = BatchRecord::new(batch, tenant, BatchFormat::Csv, 1);
    record.payer = Some(payer.to_string());
    api.create_batch(&record).unwrap();
    let eur = Currency::from_code("EUR");
    let row = |index: u64| {
        let payee = payees[usize::try_from(index.wrapping_mul(7_919) % 1000).unwrap()];
        let invalid = index % 1000 == 999;
        BatchItemRow {
            index,
            line: index + 2,
            location: format!("line {}", index + 2),
            reference: Some(format!("inv-{index}")),
            instruction_id: None,
            payment_information_id: None,
            payer_text: Some(payer.to_string()),
            payee_text: Some(payee.to_string()),
            payer: Some(payer),
            payee: Some(payee),
            amount: Some(1 + index % 100_000),
            currency: eur,
            status: if invalid { ItemStatus::Invalid } else { ItemStatus::Pending },
            failure_code: invalid.then(|| "account_not_found".to_owned()),
            message: invalid.then(|| "payee: no account".to_owned()),
            remittance: None,
        }
    };
    let started = std::time::Instant::now();
    let mut next = 0;
    while next < n {
        let chunk: Vec<BatchItemRow> = (next..n.min(next + 4096)).map(row).collect();
        next += chunk.len() as u64;
        api.insert_batch_items(batch, &chunk).unwrap();
    }
    let written = started.elapsed();
    let started = std::time::Instant::now();
    let (mut after, mut work) = (None, 0);
    loop {
        let chunk = api.batch_work(batch, ItemStatus::Pending, after, 8_190).unwrap();
        let Some(last) = chunk.last() else { break };
        after = Some(last.index);
        work += chunk.len();
    }
    let sent = started.elapsed();
    let started = std::time::Instant::now();
    let (rows, bytes) = whole_rows(api.as_ref(), batch);
    let reported = started.elapsed();
    let started = std::time::Instant::now();
    let (viewed, view_bytes) = borrowed(api.as_ref(), batch);
    let visited = started.elapsed();
    let invalid = api.batch_items(batch, &[ItemStatus::Invalid], None, 100_000).unwrap().len();
    let size = std::fs::metadata(dir.path().join("paycore.db")).map_or(0, |m| m.len())
        + std::fs::metadata(dir.path().join("paycore.db-wal")).map_or(0, |m| m.len());
    println!(
        "{n} items: written {written:?}; batch_work {work} in {sent:?}; batch_items {rows} ({bytes} reference and payee \
         bytes) in {reported:?}; visit_batch_items {viewed} ({view_bytes}) in {visited:?}; \
         {invalid} invalid; database and WAL {size} bytes"
    );
}

/// The items read as the report read them before session 15: whole rows, windows of 4 096
/// (their strings freed here, so that callgrind counts them in this function); how many, and
/// their reference and payee bytes.
#[inline(never)]
fn whole_rows(api: &dyn ApiStore, batch: BatchId) -> (usize, usize) {
    let (mut after, mut rows, mut bytes) = (None, 0, 0);
    loop {
        let window = api.batch_items(batch, &[], after, 4_096).unwrap();
        let Some(last) = window.last() else { break };
        after = Some(last.index);
        rows += window.len();
        bytes += window
            .iter()
            .map(|i| i.reference.as_ref().map_or(0, String::len) + i.payee_text.as_ref().map_or(0, String::len))
            .sum::<usize>();
    }
    (rows, bytes)
}

/// The items read as the report reads them: borrowed, windows of 4 096.
#[inline(never)]
fn borrowed(api: &dyn ApiStore, batch: BatchId) -> (usize, usize) {
    let (mut after, mut viewed, mut bytes) = (None, 0, 0);
    loop {
        let from = after;
        let shown = api
            .visit_batch_items(batch, from, 4_096, &mut |item| {
                after = Some(item.index);
                bytes += item.reference.map_or(0, str::len) + item.payee_text.map_or(0, str::len);
                true
            })
            .unwrap();
        viewed += shown;
        if shown < 4_096 {
            break;
        }
    }
    (viewed, bytes)
}
