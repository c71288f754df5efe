//! Batch items through the engine: item results and counters are committed with the transfers,
//! a resubmitted chunk pays nothing twice, and an atomic batch releases every hold when one
//! item fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{account, eur, execute, execute_background, move_of, ReadSide};
use paycore_engine::{EngineHandle, Stopped};
use paycore_ledger::{
    AccountId, BatchEnd, BatchFormat, BatchId, BatchItem, BatchMode, BatchStatus, BatchStep, Command, ItemStatus,
    Outcome, Overdraft, ResultCode, TenantId,
};
use paycore_store::{BatchItemRow, BatchRecord, Validated};
use std::sync::Arc;

const TENANT: TenantId = TenantId(9);

async fn run(handle: &EngineHandle, command: Command, background: bool) -> Outcome {
    if background {
        execute_background(handle, TENANT, command).await
    } else {
        execute(handle, TENANT, command).await
    }
}

fn record(id: BatchId, mode: &str) -> BatchRecord {
    BatchRecord {
        status: BatchStatus::Processing,
        mode: BatchMode::parse(mode).unwrap(),
        ..BatchRecord::new(id, TENANT, BatchFormat::Csv, 1)
    }
}

fn row(index: u64, amount: u64) -> BatchItemRow {
    BatchItemRow {
        index,
        line: index + 2,
        location: format!("line {}", index + 2),
        reference: Some(format!("ref-{index}")),
        instruction_id: None,
        payment_information_id: None,
        payer_text: None,
        payee_text: None,
        payer: Some(AccountId(2)),
        payee: Some(AccountId(3)),
        amount: Some(amount),
        currency: Some(eur()),
        status: ItemStatus::Pending,
        failure_code: None,
        message: None,
        remittance: None,
    }
}

/// An engine on a store in `dir`, with accounts 1 (unlimited), 2 and 3 (no overdraft) in EUR.
async fn engine(dir: &std::path::Path) -> (EngineHandle, Arc<dyn ReadSide>, std::thread::JoinHandle<Stopped>) {
    let engine = common::boot(dir, 64, common::no_renderer());
    for (id, overdraft) in [(1, Overdraft::Unlimited), (2, Overdraft::Limit(0)), (3, Overdraft::Limit(0))] {
        run(&engine.handle, Command::CreateAccount(account(id, overdraft)), false).await;
    }
    (engine.handle, engine.reader, engine.thread)
}

fn item(index: u64, amount: u64) -> BatchItem {
    BatchItem { index, payer: AccountId(2), payee: AccountId(3), amount, currency: eur(), fx: None, refund: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_effort_and_atomic_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, reader, thread) = engine(dir.path()).await;
    run(&handle, Command::Transfers(vec![move_of(1, 1, 2, 250)]), false).await;

    // Best effort: 100 + 100 + 100 from 250: the third fails.
    let batch = BatchId(77 << 64);
    reader.create_batch(&record(batch, "best_effort")).unwrap();
    reader.insert_batch_items(batch, &[row(0, 100), row(1, 100), row(2, 100)]).unwrap();
    let items = vec![item(0, 100), item(1, 100), item(2, 100)];
    let codes = run(&handle, Command::BatchItems { batch, step: BatchStep::Pay, items: items.clone() }, true).await;
    assert_eq!(codes, Outcome::Transfers(vec![ResultCode::Ok, ResultCode::Ok, ResultCode::InsufficientFunds]));
    // Resubmitting the paid items (a resume that went too far back) pays nothing twice.
    let again =
        run(&handle, Command::BatchItems { batch, step: BatchStep::Pay, items: items[..2].to_vec() }, true).await;
    assert_eq!(again, Outcome::Transfers(vec![ResultCode::Exists, ResultCode::Exists]));
    run(&handle, Command::EndBatch { batch, end: BatchEnd::Completed }, true).await;
    let stored = reader.batch(TENANT, batch).unwrap().unwrap();
    assert_eq!((stored.status.as_str(), stored.succeeded, stored.failed), ("completed", 2, 1));
    let failed = reader.batch_items(batch, &[ItemStatus::Failed], None, 10).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].index, failed[0].failure_code.as_deref()), (2, Some("insufficient_funds")));
    let balance = |id| reader.account(TENANT, AccountId(id)).unwrap().unwrap().balances;
    assert_eq!((balance(2).posted(), balance(3).posted()), (50, 200));

    // Atomic: hold 20 + 20 of the 50 left, the third (40) fails: void both holds, nothing moves.
    let atomic = BatchId(78 << 64);
    reader.create_batch(&record(atomic, "atomic")).unwrap();
    reader.insert_batch_items(atomic, &[row(0, 20), row(1, 20), row(2, 40)]).unwrap();
    let items = vec![item(0, 20), item(1, 20), item(2, 40)];
    let held =
        run(&handle, Command::BatchItems { batch: atomic, step: BatchStep::Hold, items: items.clone() }, true).await;
    assert_eq!(held, Outcome::Transfers(vec![ResultCode::Ok, ResultCode::Ok, ResultCode::InsufficientFunds]));
    assert_eq!(balance(2).debits_pending, 40);
    assert_eq!(reader.batch(TENANT, atomic).unwrap().unwrap().held, 2);
    let voided =
        run(&handle, Command::BatchItems { batch: atomic, step: BatchStep::Void, items: items[..2].to_vec() }, true)
            .await;
    assert_eq!(voided, Outcome::Transfers(vec![ResultCode::Ok, ResultCode::Ok]));
    run(&handle, Command::EndBatch { batch: atomic, end: BatchEnd::Completed }, true).await;
    let stored = reader.batch(TENANT, atomic).unwrap().unwrap();
    assert_eq!((stored.succeeded, stored.failed, stored.held), (0, 3, 0));
    let aborted = reader.batch_items(atomic, &[ItemStatus::Voided], None, 10).unwrap();
    assert_eq!(aborted.iter().map(|i| i.failure_code.as_deref()).collect::<Vec<_>>(), [Some("batch_aborted"); 2]);
    assert_eq!((balance(2).posted(), balance(2).debits_pending, balance(3).posted()), (50, 0, 200));

    drop(handle);
    thread.join().unwrap();
}

/// Item statuses are derived from the item rows and the result runs: every status filter,
/// paged with a small page, lists exactly the items with that status, in index order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_statuses_page_through_every_filter() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, reader, thread) = engine(dir.path()).await;
    run(&handle, Command::Transfers(vec![move_of(1, 1, 2, 20 * 10)]), false).await;

    // 60 items of 10: every 7th invalid; the payer has enough for the first 20 valid ones.
    // Sent in three chunks, the second one twice (nothing is recorded twice).
    let batch = BatchId(79 << 64);
    reader.create_batch(&record(batch, "best_effort")).unwrap();
    let rows: Vec<BatchItemRow> = (0..60)
        .map(|i| {
            let mut r = row(i, 10);
            if i % 7 == 3 {
                r.status = ItemStatus::Invalid;
                r.failure_code = Some("account_not_found".into());
            }
            r
        })
        .collect();
    reader.insert_batch_items(batch, &rows).unwrap();
    let valid: Vec<BatchItem> =
        rows.iter().filter(|r| r.status == ItemStatus::Pending).map(|r| item(r.index, 10)).collect();
    let invalid: Vec<u64> = rows.iter().filter(|r| r.status == ItemStatus::Invalid).map(|r| r.index).collect();
    let validated = Validated {
        status: BatchStatus::Processing,
        total: 60,
        invalid: invalid.len() as u64,
        totals: &[],
        variant: None,
        message_id: None,
        rejection: None,
        now: 2,
    };
    reader.finish_validation(batch, &validated).unwrap();
    let chunks: Vec<Vec<BatchItem>> = valid.chunks(17).map(<[BatchItem]>::to_vec).collect();
    for chunk in [&chunks[0], &chunks[1], &chunks[1]] {
        let items = chunk.clone();
        run(&handle, Command::BatchItems { batch, step: BatchStep::Pay, items }, true).await;
    }
    let succeeded: Vec<u64> = valid[..20].iter().map(|i| i.index).collect();
    let failed: Vec<u64> = valid[20..34].iter().map(|i| i.index).collect();
    let pending: Vec<u64> = valid[34..].iter().map(|i| i.index).collect();

    let page_through = |statuses: &[ItemStatus]| {
        let mut seen = Vec::new();
        let mut after = None;
        // As the API pages: one more than the page, to know whether there are more.
        loop {
            let mut page = reader.batch_items(batch, statuses, after, 4).unwrap();
            let more = page.len() == 4;
            page.truncate(3);
            for item in &page {
                assert!(statuses.is_empty() || statuses.contains(&item.status), "{item:?}");
                seen.push(item.index);
            }
            match page.last() {
                Some(last) if more => after = Some(last.index),
                _ => return seen,
            }
        }
    };
    assert_eq!(page_through(&[ItemStatus::Succeeded]), succeeded);
    assert_eq!(page_through(&[ItemStatus::Failed]), failed);
    assert_eq!(page_through(&[ItemStatus::Pending]), pending);
    assert_eq!(page_through(&[ItemStatus::Invalid]), invalid);
    assert_eq!(page_through(&[]), (0..60).collect::<Vec<u64>>());
    let stored = reader.batch(TENANT, batch).unwrap().unwrap();
    assert_eq!((stored.succeeded, stored.failed), (20, 14));
    let codes = reader.batch_items(batch, &[ItemStatus::Failed], None, 100).unwrap();
    assert!(codes.iter().all(|i| i.failure_code.as_deref() == Some("insufficient_funds")));

    // Cancelled: the items never sent read as cancelled and count as failed.
    run(&handle, Command::EndBatch { batch, end: BatchEnd::Cancelled }, true).await;
    let mut ended: Vec<u64> = failed.iter().chain(&pending).copied().collect();
    ended.sort_unstable();
    assert_eq!(page_through(&[ItemStatus::Failed, ItemStatus::Voided, ItemStatus::Cancelled]), ended);
    assert_eq!(page_through(&[ItemStatus::Cancelled]), pending);
    let stored = reader.batch(TENANT, batch).unwrap().unwrap();
    assert_eq!((stored.status.as_str(), stored.succeeded, stored.failed), ("cancelled", 20, 14 + 17));

    drop(handle);
    thread.join().unwrap();
}

/// A cross-currency batch (a USD payer, EUR items) killed after its first chunk was committed
/// and run again by the runner: the rest is paid from the item rows and the stored payer sides,
/// and every leg of every item exists once (sent again, each item is `exists`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_cross_currency_batch_pays_each_leg_once() {
    use paycore_ledger::fx::{batch_item_fx, batch_quote_id, fee_revenue_account, liquidity_account, Quote, Rate};
    use paycore_ledger::{Currency, ItemFx, NewAccount, NewTransfer, TransferId, TransferOp};
    let dir = tempfile::tempdir().unwrap();
    let (handle, reader, thread) = engine(dir.path()).await;
    let usd = Currency::from_code("USD").unwrap();
    for (id, overdraft) in [(20, Overdraft::Limit(0)), (21, Overdraft::Unlimited)] {
        let new = NewAccount { id: AccountId(id), currency: usd, overdraft, reference: None, metadata: None };
        run(&handle, Command::CreateAccount(new), false).await;
    }
    let funding = NewTransfer {
        id: TransferId(5),
        linked: false,
        op: TransferOp::Move {
            debit_account: AccountId(21),
            credit_account: AccountId(20),
            amount: 100_000,
            currency: usd,
            hold: None,
        },
    };
    run(&handle, Command::Transfers(vec![funding]), false).await;

    // 10.00 EUR at 0.9234 costs 10.83 USD, and 0.03 of fee at 25 bps.
    let rate = Rate::parse("0.9234").unwrap();
    let (source, fee) = batch_item_fx(1_000, rate, usd, eur(), 25).unwrap();
    assert_eq!((source, fee), (1_083, 3));
    let batch = BatchId(79 << 64);
    let quote = Quote {
        id: batch_quote_id(batch, usd, eur()),
        tenant: TENANT,
        from: usd,
        to: eur(),
        rate,
        source_amount: 4 * source,
        target_amount: 4_000,
        fee: 4 * fee,
        created_at: 1,
        expires_at: 1,
        used_by: None,
    };
    let fx = ItemFx { quote: quote.id, source_amount: source, fee };
    reader.create_batch(&record(batch, "best_effort")).unwrap();
    let rows: Vec<BatchItemRow> =
        (0..4).map(|i| BatchItemRow { payer: Some(AccountId(20)), ..row(i, 1_000) }).collect();
    reader.insert_batch_items(batch, &rows).unwrap();
    reader.insert_batch_fx(batch, std::slice::from_ref(&quote), &(0..4).map(|i| (i, fx)).collect::<Vec<_>>()).unwrap();
    let fx_item = |index| BatchItem { payer: AccountId(20), fx: Some(fx), ..item(index, 1_000) };

    // The first run committed its first chunk (items 0 and 1), then was killed.
    let first =
        run(&handle, Command::BatchItems { batch, step: BatchStep::Pay, items: vec![fx_item(0), fx_item(1)] }, true)
            .await;
    assert_eq!(first, Outcome::Transfers(vec![ResultCode::Ok; 2]));
    // The runner starts again from the items still pending.
    let store: Arc<dyn paycore_store::BatchStore> = reader.clone();
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    paycore_engine::batches::run(&handle, store, batch, TENANT, &stopping).await.unwrap();
    let stored = reader.batch(TENANT, batch).unwrap().unwrap();
    assert_eq!((stored.status, stored.succeeded, stored.failed), (BatchStatus::Completed, 4, 0));
    // Sent again, every item exists: no leg is made twice.
    let again =
        run(&handle, Command::BatchItems { batch, step: BatchStep::Pay, items: (0..4).map(fx_item).collect() }, true)
            .await;
    assert_eq!(again, Outcome::Transfers(vec![ResultCode::Exists; 4]));

    let posted = |id| reader.account(TENANT, id).unwrap().unwrap().balances.posted();
    assert_eq!(posted(AccountId(20)), 100_000 - 4 * (1_083 + 3));
    assert_eq!(posted(AccountId(3)), 4_000);
    assert_eq!(posted(liquidity_account(TENANT, usd)), 4 * 1_083);
    assert_eq!(posted(liquidity_account(TENANT, eur())), -4_000);
    assert_eq!(posted(fee_revenue_account(TENANT, usd)), 12);
    assert_eq!(reader.batch_quotes(batch).unwrap(), vec![quote]);
    let report = paycore_store::verify::verify(reader.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);

    drop(handle);
    thread.join().unwrap();
}
