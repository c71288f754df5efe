//! One storage test suite, run against every store implementation (the embedded one, a data
//! folder, and PostgreSQL, a `postgres://` URL) through `paycore_store::open`, the one way in.
//! The PostgreSQL cases create a database of their own on the test server and drop it at the
//! end (see `paycore_store::testing`); without a server they print `SKIPPED:` and pass, except
//! under `CI=true`. Each check drives the store
//! with changes made by the real ledger state machine. What only one backend has (its files,
//! its schema versions) is tested beside that backend's code.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{eur, mv, step};
use paycore_ledger::{
    AccountId, BatchEnd, BatchFormat, BatchId, BatchStatus, BatchStep, CaptureMethod, ClearingWindow, ClearingWindowId,
    Command, CommandError, Currency, EventKind, Hold, HoldStatus, ItemStatus, Merchant, NewAccount, NewPayment,
    NewTransfer, Outcome, Overdraft, PaymentId, PaymentStatus, Request, State, TenantId, TransferId, TransferOp,
    WebhookEndpointId,
};
use paycore_store::testing::TestDatabase;
use paycore_store::{
    ApiKeyRecord, Attempt, BatchItemRow, BatchRecord, BatchTotal, Claim, IdempotencyRecord, ItemLink, ItemReference,
    LinkKind, Opened, Page, RateGrant, StoreError, TenantRecord, Validated, WebhookEndpoint,
};
use std::sync::{Arc, Barrier};

const T1: TenantId = common::TENANT;
const T2: TenantId = TenantId(2);

fn open(id: u128, overdraft: Overdraft, reference: Option<&str>) -> Command {
    Command::CreateAccount(NewAccount {
        id: AccountId(id),
        currency: eur(),
        overdraft,
        reference: reference.map(str::to_owned),
        metadata: Some(r#"{"k":"v"}"#.into()),
    })
}

fn suite(open_store: &dyn Fn() -> Opened) {
    let Opened { mut store, api: reader } = open_store();
    let mut state = State::default();
    step(
        &mut state,
        store.as_mut(),
        10,
        vec![
            open(1, Overdraft::Unlimited, None),
            open(2, Overdraft::Limit(50), Some("DE89370400440532013000")),
            open(3, Overdraft::Limit(0), None),
        ],
    );
    step(
        &mut state,
        store.as_mut(),
        20,
        vec![
            Command::Transfers(vec![
                mv(100, 1, 2, 1000, None),
                mv(101, 2, 3, 300, Some(Hold { timeout_seconds: Some(60) })),
            ]),
            Command::CreatePayment(NewPayment {
                id: PaymentId(500),
                payer: Some(AccountId(2)),
                payee: AccountId(3),
                amount: 200,
                currency: eur(),
                capture_method: CaptureMethod::Manual,
                expires_in_seconds: 3600,
                description: Some("order 1".into()),
                fx_quote: None,
                merchant: None,
            }),
        ],
    );
    step(&mut state, store.as_mut(), 30, vec![Command::ConfirmPayment(PaymentId(500))]);

    // The reader sees committed balances, per tenant only.
    let row = reader.account(T1, AccountId(2)).unwrap().unwrap();
    assert_eq!(row.metadata.as_deref(), Some(r#"{"k":"v"}"#));
    assert_eq!(row.reference.as_deref(), Some("DE89370400440532013000"));
    assert_eq!((row.balances.posted(), row.balances.debits_pending), (1000, 500));
    assert_eq!(row.balances.available(row.overdraft), Some(550));
    assert!(reader.account(T2, AccountId(2)).unwrap().is_none());
    let payment = reader.payment(T1, PaymentId(500)).unwrap().unwrap();
    assert_eq!(payment.status, PaymentStatus::RequiresCapture);
    assert!(reader.payment(T2, PaymentId(500)).unwrap().is_none());
    let page = reader.account_transfers(T1, AccountId(2), Page { after: None, limit: 2 }).unwrap();
    assert_eq!(page.len(), 2);
    let rest = reader.account_transfers(T1, AccountId(2), Page { after: Some(page[1].id), limit: 10 }).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].id, TransferId(100));
    // Oldest first in a range of timestamps (a statement's read), paged on by timestamp; every
    // kind of transfer, the hold included; no other tenant's.
    let all = reader.account_transfers_between(T1, AccountId(2), 0..u64::MAX, 10).unwrap();
    let ids: Vec<TransferId> = all.iter().map(|t| t.id).collect();
    assert_eq!(ids, page.iter().chain(&rest).rev().map(|t| t.id).collect::<Vec<_>>());
    assert_eq!(ids[0], TransferId(100));
    assert!(all.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
    let first = reader.account_transfers_between(T1, AccountId(2), 0..u64::MAX, 1).unwrap();
    assert_eq!(first, all[..1].to_vec());
    let next = reader.account_transfers_between(T1, AccountId(2), first[0].timestamp + 1..u64::MAX, 10).unwrap();
    assert_eq!(next, all[1..].to_vec());
    let middle = reader.account_transfers_between(T1, AccountId(2), all[1].timestamp..all[2].timestamp, 10).unwrap();
    assert_eq!(middle, all[1..2].to_vec(), "the range's end is excluded");
    assert!(reader.account_transfers_between(T1, AccountId(2), 0..all[0].timestamp, 10).unwrap().is_empty());
    assert!(reader.account_transfers_between(T2, AccountId(2), 0..u64::MAX, 10).unwrap().is_empty());

    // Recovery gives back the same accounts, open holds and open payments.
    let recovered = store.recover().unwrap();
    let again =
        State::recover(recovered.accounts, recovered.open_holds, recovered.open_payments, recovered.last_timestamp);
    for id in [1, 2, 3] {
        assert_eq!(again.account(AccountId(id)), state.account(AccountId(id)), "account {id}");
    }
    assert_eq!(again.hold(TransferId(101)).map(|h| h.status), Some(HoldStatus::Pending));
    assert_eq!(again.payment(PaymentId(500)).map(|p| p.status), Some(PaymentStatus::RequiresCapture));
    assert_eq!(again.last_timestamp(), state.last_timestamp());
    again.check_invariants().unwrap();

    // A commit that fails leaves nothing behind: here the second record reuses a key.
    let record = |key: &str| IdempotencyRecord {
        tenant: T1,
        key: key.into(),
        fingerprint: [9; 32],
        status: 201,
        body: b"{}".to_vec(),
        created_at: 40,
    };
    let requests = vec![Request { tenant: T1, command: Command::Transfers(vec![mv(102, 1, 3, 7, None)]) }];
    state.execute(&requests, 40);
    let changes = state.take_changes();
    assert!(matches!(store.commit(&changes, &[record("a"), record("a")]), Err(StoreError::Conflict(_))));
    assert_eq!(reader.account(T1, AccountId(3)).unwrap().unwrap().balances.posted(), 0);
    assert!(reader.transfer(T1, TransferId(102)).unwrap().is_none());
    assert!(reader.idempotency(T1, "a").unwrap().is_none());
    store.commit(&changes, &[record("a")]).unwrap();
    assert_eq!(reader.account(T1, AccountId(3)).unwrap().unwrap().balances.posted(), 7);
    assert_eq!(reader.idempotency(T1, "a").unwrap(), Some(record("a")));
    assert!(reader.idempotency(T2, "a").unwrap().is_none());
    assert_eq!(store.idempotency(&[(T1, "a"), (T1, "b")]).unwrap(), vec![record("a")]);

    // Loading by id finds stored transfers, resolved holds and finished payments.
    let loaded = store
        .load(&paycore_ledger::Prefetch {
            transfers: vec![TransferId(100), TransferId(999)],
            holds: vec![TransferId(101)],
            payments: vec![PaymentId(500), PaymentId(501)],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(loaded.transfers.len(), 1);
    assert_eq!(loaded.holds.len(), 1);
    assert_eq!(loaded.payments.len(), 1);

    // Everything committed passes the offline check.
    let report = paycore_store::verify::verify(reader.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!((report.accounts, report.transfers, report.payments), (3, 4, 1));
}

/// A batch's life as the API and the engine write it: items taken in, a chunk paid, the batch
/// cancelled; then each item's status derived from the result runs, listed by status.
fn batches(open_store: &dyn Fn() -> Opened) {
    let Opened { mut store, api } = open_store();
    let mut state = State::default();
    step(
        &mut state,
        store.as_mut(),
        10,
        vec![
            open(1, Overdraft::Unlimited, None),
            open(2, Overdraft::Limit(0), None),
            open(3, Overdraft::Limit(0), Some("REF-3")),
        ],
    );
    let batch = BatchId(7 << 64);
    let mut record = BatchRecord::new(batch, T1, BatchFormat::Csv, 11);
    record.idempotency_key = Some("upload-1".into());
    record.fingerprint = Some([3; 32]);
    api.create_batch(&record).unwrap();
    assert!(matches!(api.create_batch(&record), Err(StoreError::Conflict(_))), "the same batch twice");
    let same_key = BatchRecord { id: BatchId(8 << 64), ..record.clone() };
    assert!(matches!(api.create_batch(&same_key), Err(StoreError::Conflict(_))), "the same upload key twice");
    let item = |index: u64, payer: u128, payee: u128, amount: u64| BatchItemRow {
        index,
        line: index + 2,
        location: format!("line {}", index + 2),
        reference: Some(format!("ref {index}")),
        instruction_id: None,
        payment_information_id: None,
        payer_text: Some(AccountId(payer).to_string()),
        payee_text: Some(AccountId(payee).to_string()),
        payer: Some(AccountId(payer)),
        payee: Some(AccountId(payee)),
        amount: Some(amount),
        currency: Some(eur()),
        status: ItemStatus::Pending,
        failure_code: None,
        message: None,
        remittance: (index == 0).then(|| "Invoice 0 & <co>".to_owned()),
    };
    let invalid = BatchItemRow {
        payee: None,
        status: ItemStatus::Invalid,
        failure_code: Some("account_not_found".into()),
        message: Some("no such payee".into()),
        ..item(2, 1, 9, 4)
    };
    api.insert_batch_items(batch, &[item(0, 1, 2, 10), item(1, 3, 2, 5), invalid.clone(), item(3, 1, 2, 1)]).unwrap();
    let totals = [BatchTotal { currency: eur(), count: 3, sum: 16 }];
    let validated = Validated {
        status: BatchStatus::Processing,
        total: 4,
        invalid: 1,
        totals: &totals,
        variant: None,
        message_id: None,
        rejection: None,
        now: 12,
    };
    api.finish_validation(batch, &validated).unwrap();
    assert_eq!(api.active_batches().unwrap().iter().map(|b| b.id).collect::<Vec<_>>(), [batch]);
    let work = api.batch_work(batch, ItemStatus::Pending, None, 10).unwrap();
    assert_eq!(work.iter().map(|i| i.index).collect::<Vec<_>>(), [0, 1, 3]);
    step(
        &mut state,
        store.as_mut(),
        20,
        vec![Command::BatchItems { batch, step: BatchStep::Pay, items: work[..2].to_vec() }],
    );
    assert_eq!(
        api.batch_work(batch, ItemStatus::Pending, None, 10).unwrap().iter().map(|i| i.index).collect::<Vec<_>>(),
        [3]
    );
    step(&mut state, store.as_mut(), 30, vec![Command::EndBatch { batch, end: BatchEnd::Cancelled }]);

    // The transfer that paid item 0 leads back to the item's reference (a statement's
    // end-to-end id); a transfer that only looks like one does not.
    let paid = api.transfer(T1, batch.item_transfer(0)).unwrap().unwrap();
    let posted = paycore_ledger::Transfer { id: batch.item_resolution(0, true), ..paid.clone() };
    let released = paycore_ledger::Transfer { id: batch.item_resolution(0, false), ..paid.clone() };
    let other_amount = paycore_ledger::Transfer { amount: 11, ..paid.clone() };
    let other_item = paycore_ledger::Transfer { id: batch.item_transfer(3), ..paid.clone() };
    let plain = paycore_ledger::Transfer { id: TransferId(100), ..paid.clone() };
    let found = api.item_references(T1, &[paid.clone(), posted, released, other_amount, other_item, plain]).unwrap();
    let item_0 = ItemReference { reference: Some("ref 0".to_owned()), remittance: Some("Invoice 0 & <co>".to_owned()) };
    assert_eq!(found, [Some(item_0.clone()), Some(item_0), None, None, None, None]);
    assert_eq!(api.batch_items(batch, &[], None, 1).unwrap()[0].remittance.as_deref(), Some("Invoice 0 & <co>"));
    assert_eq!(api.item_references(T2, &[paid]).unwrap(), [None], "another tenant's batch");

    let items = api.batch_items(batch, &[], None, 100).unwrap();
    let statuses: Vec<(u64, &str, Option<&str>)> =
        items.iter().map(|i| (i.index, i.status.as_str(), i.failure_code.as_deref())).collect();
    assert_eq!(
        statuses,
        [
            (0, "succeeded", None),
            (1, "failed", Some("insufficient_funds")),
            (2, "invalid", Some("account_not_found")),
            (3, "cancelled", Some("cancelled"))
        ]
    );
    assert_eq!(items[2], invalid, "an item row reads back as it was written");
    assert_eq!(items[0].location, "line 2");
    let by = |statuses: &[ItemStatus], after| -> Vec<u64> {
        api.batch_items(batch, statuses, after, 100).unwrap().iter().map(|i| i.index).collect()
    };
    assert_eq!(by(&[ItemStatus::Failed], None), [1]);
    assert_eq!(by(&[ItemStatus::Invalid], None), [2]);
    assert_eq!(by(&[ItemStatus::Cancelled, ItemStatus::Succeeded], None), [0, 3]);
    assert_eq!(by(&[], Some(1)), [2, 3]);
    assert_eq!(api.batch_items(batch, &[], None, 2).unwrap().len(), 2);
    let stored = api.batch(T1, batch).unwrap().unwrap();
    assert_eq!(stored.status, BatchStatus::Cancelled);
    assert_eq!((stored.total, stored.invalid, stored.succeeded, stored.failed, stored.held), (4, 1, 1, 2, 0));
    // The end commits at the engine's last timestamp: the one transfer, item 0's, at 20.
    assert_eq!(stored.completed_at, Some(20));
    assert_eq!(stored.fingerprint, Some([3; 32]));
    assert!(api.batch(T2, batch).unwrap().is_none());
    assert_eq!(api.batch_by_key(T1, "upload-1").unwrap().map(|b| b.id), Some(batch));
    assert!(api.batch_by_key(T2, "upload-1").unwrap().is_none());
    assert_eq!(api.batch_totals(batch).unwrap(), totals);
    assert!(api.active_batches().unwrap().is_empty());
    assert!(api.request_cancel(T1, batch).unwrap());
    assert!(!api.request_cancel(T2, batch).unwrap());
    // Accounts by id or by reference, as batch files name them.
    let by_reference = api.find_account(T1, "REF-3", Some(eur())).unwrap().map(|a| a.id);
    assert_eq!(by_reference, Some(AccountId(3)));
    assert_eq!(
        api.find_account(T1, &AccountId(2).to_string(), None).unwrap().map(|a| (a.id, a.balances.posted())),
        Some((AccountId(2), 10))
    );
    assert!(api.find_account(T2, "REF-3", None).unwrap().is_none());

    // A batch rejected at validation ends there, with its event in the outbox.
    let rejected = BatchId(9 << 64);
    api.create_batch(&BatchRecord::new(rejected, T1, BatchFormat::Csv, 40)).unwrap();
    let why = r#"{"code":"control_total_mismatch"}"#;
    let validated =
        Validated { status: BatchStatus::Rejected, rejection: Some(why), now: 41, totals: &[], ..validated };
    api.finish_validation(rejected, &validated).unwrap();
    let stored = api.batch(T1, rejected).unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.completed_at, stored.rejection.as_deref()),
        (BatchStatus::Rejected, Some(41), Some(why))
    );
    let endpoint = WebhookEndpoint {
        id: WebhookEndpointId(5),
        tenant: T1,
        url: "http://127.0.0.1:9/hook".into(),
        events: vec![EventKind::BatchRejected],
        secret: "whsec_test".into(),
        created_at: 42,
    };
    api.insert_webhook_endpoint(&endpoint).unwrap();
    assert_eq!(api.fan_out(50, 10).unwrap(), 2, "the cancelled batch's event and the rejected one's");
    let due = api.due_deliveries(50, 50, 10, &[]).unwrap();
    assert_eq!(due.len(), 1);
    let event = api.outbox_event(due[0].seq).unwrap().unwrap();
    assert_eq!((event.tenant, event.kind, event.object), (T1, EventKind::BatchRejected, rejected.0));

    let report = paycore_store::verify::verify(api.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.batch_items, 4);
}

/// A batch of 10 000 items, more than two of the embedded store's blocks (4 096 items each),
/// written in chunks that do not line up with them: every listing (all items, each status, from
/// any index, any page size) reads what a model of the items says, across the blocks'
/// boundaries, with invalid items at and around them and in their middle, failed items among
/// succeeded ones, and items never sent.
#[allow(clippy::cast_possible_truncation)]
fn batch_items_in_blocks(open_store: &dyn Fn() -> Opened) {
    let Opened { mut store, api } = open_store();
    let mut state = State::default();
    step(
        &mut state,
        store.as_mut(),
        10,
        vec![
            open(1, Overdraft::Unlimited, None),
            open(2, Overdraft::Limit(0), None),
            open(3, Overdraft::Limit(0), None),
        ],
    );
    let batch = BatchId(21 << 64);
    let mut record = BatchRecord::new(batch, T1, BatchFormat::Csv, 11);
    record.payer = Some(AccountId(1).to_string());
    api.create_batch(&record).unwrap();
    const N: u64 = 10_000;
    let invalid_at = [0, 100, 4_095, 4_096, 4_097, 6_000, 8_191, 8_192, 9_999];
    // Items from account 3 (no money) fail; the rest, from account 1, succeed.
    let from_3 = |index: u64| index % 97 == 5 || (4_090..4_100).contains(&index);
    let item = |index: u64| {
        let payer = if from_3(index) { 3 } else { 1 };
        let invalid = invalid_at.contains(&index);
        BatchItemRow {
            index,
            line: index + 2,
            location: if index % 10 == 3 { format!("record {index}") } else { format!("line {}", index + 2) },
            reference: Some(if index % 11 == 4 { format!("inv-{index}-äö€") } else { format!("inv-{index}") }),
            instruction_id: index.is_multiple_of(3).then(|| format!("instr-{index}")),
            payment_information_id: None,
            payer_text: Some(AccountId(payer).to_string()),
            payee_text: Some(if index.is_multiple_of(5) { "supplier-2".to_owned() } else { AccountId(2).to_string() }),
            payer: Some(AccountId(payer)),
            payee: (!invalid).then_some(AccountId(2)),
            amount: Some(1 + index % 1_000),
            currency: Some(eur()),
            status: if invalid { ItemStatus::Invalid } else { ItemStatus::Pending },
            failure_code: invalid.then(|| "account_not_found".to_owned()),
            message: invalid.then(|| format!("line {}: no such payee", index + 2)),
            remittance: index.is_multiple_of(7).then(|| format!("Invoice {index} & <co>")),
        }
    };
    let rows: Vec<BatchItemRow> = (0..N).map(item).collect();
    for chunk in [&rows[..1_000], &rows[1_000..5_500], &rows[5_500..9_999], &rows[9_999..]] {
        api.insert_batch_items(batch, chunk).unwrap();
    }
    // An index already stored, alone or among new ones, is refused and writes nothing.
    assert!(matches!(api.insert_batch_items(batch, &[item(4_500)]), Err(StoreError::Conflict(_))));
    let overlapping: Vec<BatchItemRow> = (9_990..10_010).map(item).collect();
    assert!(matches!(api.insert_batch_items(batch, &overlapping), Err(StoreError::Conflict(_))));
    let validated = Validated {
        status: BatchStatus::Processing,
        total: N,
        invalid: invalid_at.len() as u64,
        totals: &[],
        variant: None,
        message_id: None,
        rejection: None,
        now: 12,
    };
    api.finish_validation(batch, &validated).unwrap();
    // The runner's reads, across the blocks, then items up to 7 000 paid: the rest never sent.
    let sent_up_to = 7_000;
    let mut after = None;
    let mut now = 20;
    loop {
        let work = api.batch_work(batch, ItemStatus::Pending, after, 1_500).unwrap();
        let Some(last) = work.last() else { break };
        let expected: Vec<u64> =
            (after.map_or(0, |a| a + 1)..N).filter(|i| !invalid_at.contains(i)).take(1_500).collect();
        assert_eq!(work.iter().map(|i| i.index).collect::<Vec<_>>(), expected);
        assert!(work
            .iter()
            .all(|w| rows[w.index as usize].payer == Some(w.payer) && rows[w.index as usize].amount == Some(w.amount)));
        after = Some(last.index);
        let send: Vec<_> = work.into_iter().filter(|i| i.index < sent_up_to).collect();
        if send.is_empty() {
            break;
        }
        now += 10;
        step(&mut state, store.as_mut(), now, vec![Command::BatchItems { batch, step: BatchStep::Pay, items: send }]);
    }
    let status_of = |index: u64| -> (ItemStatus, Option<&str>) {
        if invalid_at.contains(&index) {
            (ItemStatus::Invalid, Some("account_not_found"))
        } else if index >= sent_up_to {
            (ItemStatus::Pending, None)
        } else if from_3(index) {
            (ItemStatus::Failed, Some("insufficient_funds"))
        } else {
            (ItemStatus::Succeeded, None)
        }
    };
    let model: Vec<BatchItemRow> = rows
        .iter()
        .map(|r| {
            let (status, code) = status_of(r.index);
            BatchItemRow { status, failure_code: code.map(str::to_owned), ..r.clone() }
        })
        .collect();
    assert_eq!(api.batch_items(batch, &[], None, 20_000).unwrap(), model, "every item, whole, in one read");
    // Pages of every size from anywhere, as the report follower and the listing read them.
    for (start, page) in
        [(None, 4_096), (Some(4_094), 1), (Some(4_094), 3), (Some(99), 4_097), (Some(8_000), 777), (None, 1)]
    {
        let mut after = start;
        let mut read = Vec::new();
        loop {
            let got = api.batch_items(batch, &[], after, page).unwrap();
            assert!(got.len() <= page);
            let Some(last) = got.last() else { break };
            after = Some(last.index);
            read.extend(got);
            if page == 1 && read.len() == 20 {
                break;
            }
        }
        let from = start.map_or(0, |a| a as usize + 1);
        assert_eq!(read[..], model[from..from + read.len()], "from {start:?} by {page}");
        assert!(page == 1 || from + read.len() == N as usize);
    }
    // The borrowed read shows each item as the listing reads it, in order, across the blocks
    // and windows, from anywhere and by any page; and stops where its visitor says.
    for (start, page) in [(None, 4_096), (Some(4_094), 3), (Some(99), 4_097), (Some(4_095), 1), (None, 20_000)] {
        let mut after = start;
        let mut read = 0;
        loop {
            let mut seen = Vec::new();
            let shown = api
                .visit_batch_items(batch, after, page, &mut |view| {
                    assert_eq!(*view, model[view.index as usize].view(), "item {}", view.index);
                    seen.push(view.index);
                    true
                })
                .unwrap();
            assert_eq!(shown, seen.len());
            let from = after.map_or(0, |a| a + 1);
            assert_eq!(seen, (from..N).take(page).collect::<Vec<_>>(), "after {after:?} by {page}");
            read += shown;
            let Some(last) = seen.last() else { break };
            after = Some(*last);
            if page == 1 && read == 20 {
                break;
            }
        }
        assert!(page == 1 || read == N as usize - start.map_or(0, |a| a as usize + 1));
    }
    let mut seen = Vec::new();
    let shown = api
        .visit_batch_items(batch, Some(4_093), 100, &mut |view| {
            seen.push(view.index);
            seen.len() < 5
        })
        .unwrap();
    assert_eq!((shown, seen), (5, vec![4_094, 4_095, 4_096, 4_097, 4_098]));
    // Each status, from around each boundary, a few at a time.
    let statuses: [&[ItemStatus]; 5] = [
        &[ItemStatus::Invalid],
        &[ItemStatus::Failed],
        &[ItemStatus::Pending],
        &[ItemStatus::Succeeded],
        &[ItemStatus::Failed, ItemStatus::Invalid],
    ];
    for wanted in statuses {
        for after in [None, Some(4_090), Some(4_095), Some(4_096), Some(5_499), Some(8_190), Some(9_998)] {
            for limit in [1, 3, 50, 20_000] {
                let got: Vec<(u64, ItemStatus)> =
                    api.batch_items(batch, wanted, after, limit).unwrap().iter().map(|i| (i.index, i.status)).collect();
                let expected: Vec<(u64, ItemStatus)> = (after.map_or(0, |a| a + 1)..N)
                    .map(|i| (i, status_of(i).0))
                    .filter(|(_, s)| wanted.contains(s))
                    .take(limit)
                    .collect();
                assert_eq!(got, expected, "{wanted:?} after {after:?}, {limit} at most");
            }
        }
    }
    // A statement's lookups, in order and out of it, across the blocks.
    let transfers: Vec<paycore_ledger::Transfer> = [1, 4_100, 4_101, 4_100, 6_999, 10, 5_500]
        .iter()
        .map(|i| api.transfer(T1, batch.item_transfer(*i)).unwrap().unwrap())
        .collect();
    let found = api.item_references(T1, &transfers).unwrap();
    let expected: Vec<Option<ItemReference>> = [1u64, 4_100, 4_101, 4_100, 6_999, 10, 5_500]
        .iter()
        .map(|i| {
            Some(ItemReference {
                reference: Some(format!("inv-{i}")),
                remittance: rows[*i as usize].remittance.clone(),
            })
        })
        .collect();
    assert_eq!(found, expected);
    let report = paycore_store::verify::verify(api.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.batch_items, N);
    // A takeover clears the items, and they can be written again.
    api.clear_batch_items(batch).unwrap();
    assert!(api.batch_items(batch, &[], None, 10).unwrap().is_empty());
    api.insert_batch_items(batch, &rows[..10]).unwrap();
    assert_eq!(
        api.batch_items(batch, &[ItemStatus::Invalid], None, 10).unwrap().iter().map(|i| i.index).collect::<Vec<_>>(),
        [0]
    );
}

#[test]
fn embedded_batch_items_in_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    batch_items_in_blocks(&move || paycore_store::open(&path).unwrap());
}

#[test]
fn postgres_batch_items_in_blocks() {
    on_postgres("postgres_batch_items_in_blocks", batch_items_in_blocks);
}

/// Tenants, API keys and webhooks: what the API writes outside the engine.
fn tenants_keys_and_webhooks(open_store: &dyn Fn() -> Opened) {
    let Opened { mut store, api } = open_store();
    let key = ApiKeyRecord {
        id: "key_1".into(),
        tenant: T2,
        hash: [7; 32],
        scopes: vec!["read".into(), "write".into()],
        created_at: 5,
        revoked: false,
        expires_at: None,
    };
    api.insert_api_key(&key).unwrap();
    assert_eq!(api.api_key(&[7; 32]).unwrap(), Some(key.clone()));
    assert!(api.api_key(&[8; 32]).unwrap().is_none());
    assert_eq!(api.tenant(T2).unwrap(), Some(TenantRecord { id: T2, name: None, created_at: 5 }));
    assert_eq!(api.api_key_count().unwrap(), 1);
    assert!(matches!(api.insert_api_key(&key), Err(StoreError::Conflict(_))));
    assert_eq!(api.revoke_api_key("key_1").unwrap(), Some([7; 32]));
    assert_eq!(api.revoke_api_key("key_2").unwrap(), None);
    assert_eq!(api.api_key_count().unwrap(), 0);
    assert!(api.api_key(&[7; 32]).unwrap().unwrap().revoked);
    // Expiry, and rotation with an overlap: the replaced secret is found with the end of its
    // overlap as its expiry, never past the key's own; a second rotation drops the first secret.
    let expiring = ApiKeyRecord {
        id: "key_3".into(),
        tenant: T2,
        hash: [9; 32],
        scopes: vec!["read".into()],
        created_at: 6,
        revoked: false,
        expires_at: Some(1_000),
    };
    api.insert_api_key(&expiring).unwrap();
    assert_eq!(api.api_key(&[9; 32]).unwrap(), Some(expiring.clone()));
    let rotated = api.rotate_api_key("key_3", &[10; 32], 400, 500).unwrap();
    assert_eq!(rotated, Some(ApiKeyRecord { hash: [10; 32], ..expiring.clone() }));
    assert_eq!(api.api_key(&[10; 32]).unwrap(), Some(ApiKeyRecord { hash: [10; 32], ..expiring.clone() }));
    assert_eq!(api.api_key(&[9; 32]).unwrap(), Some(ApiKeyRecord { expires_at: Some(500), ..expiring.clone() }));
    // At 600 the first secret's overlap is over: the second becomes the previous one.
    let again = api.rotate_api_key("key_3", &[11; 32], 600, 5_000).unwrap().unwrap();
    assert_eq!((again.hash, again.expires_at), ([11; 32], Some(1_000)));
    assert_eq!(api.api_key(&[10; 32]).unwrap().map(|k| (k.hash, k.expires_at)), Some(([10; 32], Some(1_000))));
    assert_eq!(api.api_key(&[9; 32]).unwrap(), None, "two rotations on, the first secret is gone");
    // A rotation while the previous secret is live (a retry): that one stays, the current goes.
    let retried = api.rotate_api_key("key_3", &[12; 32], 700, 900).unwrap().unwrap();
    assert_eq!(retried.hash, [12; 32]);
    assert_eq!(api.api_key(&[10; 32]).unwrap().map(|k| (k.hash, k.expires_at)), Some(([10; 32], Some(900))));
    assert_eq!(api.api_key(&[11; 32]).unwrap(), None);
    assert_eq!(api.rotate_api_key("key_nope", &[13; 32], 700, 800).unwrap(), None);
    assert_eq!(api.revoke_api_key("key_3").unwrap(), Some([12; 32]));
    assert_eq!(api.rotate_api_key("key_3", &[13; 32], 700, 800).unwrap(), None, "a revoked key does not rotate");
    assert!(api.api_key(&[10; 32]).unwrap().unwrap().revoked);
    assert_eq!(api.api_key_count().unwrap(), 0);

    // Shared rate-limit buckets: 5 a second, burst 10, in whole tokens, per key.
    let second = 1_000_000_000u64;
    let grant = |key: &str, now: u64, want: u32| api.take_rate_tokens(key, now, 5, 10, want, 0).unwrap();
    assert_eq!(grant("key_1", 10 * second, 4), RateGrant { granted: 4, left_micro_tokens: 6_000_000 });
    assert_eq!(grant("key_1", 10 * second, 100), RateGrant { granted: 6, left_micro_tokens: 0 });
    assert_eq!(grant("key_1", 10 * second, 1), RateGrant { granted: 0, left_micro_tokens: 0 });
    assert_eq!(grant("key_1", 10 * second + 300_000_000, 5), RateGrant { granted: 1, left_micro_tokens: 500_000 });
    assert_eq!(grant("key_1", 9 * second, 5), RateGrant { granted: 0, left_micro_tokens: 500_000 }, "time went back");
    assert_eq!(
        grant("key_1", 100 * second, 50),
        RateGrant { granted: 10, left_micro_tokens: 0 },
        "never past the burst"
    );
    assert_eq!(grant("key_2", 9 * second, 1), RateGrant { granted: 1, left_micro_tokens: 9_000_000 });
    // Tokens of a grant not spent go back before the take, never past the burst.
    let give_back =
        |returned: u32, want: u32| api.take_rate_tokens("key_2", 9 * second, 5, 10, want, returned).unwrap();
    assert_eq!(give_back(1, 0), RateGrant { granted: 0, left_micro_tokens: 10_000_000 });
    assert_eq!(give_back(0, 3), RateGrant { granted: 3, left_micro_tokens: 7_000_000 });
    assert_eq!(give_back(2, 1), RateGrant { granted: 1, left_micro_tokens: 8_000_000 });
    assert_eq!(give_back(5, 0), RateGrant { granted: 0, left_micro_tokens: 10_000_000 }, "never past the burst");
    let tenant = TenantRecord { id: TenantId(3), name: Some("Acme".into()), created_at: 6 };
    api.insert_tenant(&tenant).unwrap();
    assert_eq!(api.tenant(TenantId(3)).unwrap(), Some(tenant.clone()));
    assert!(matches!(api.insert_tenant(&tenant), Err(StoreError::Conflict(_))));

    let endpoint = |id: u128, tenant: TenantId, created_at: u64| WebhookEndpoint {
        id: WebhookEndpointId(id),
        tenant,
        url: format!("http://127.0.0.1:9/hook/{id}"),
        events: vec![EventKind::PaymentSucceeded, EventKind::PaymentFailed],
        secret: "whsec_test".into(),
        created_at,
    };
    api.insert_webhook_endpoint(&endpoint(1, T1, 8)).unwrap();
    api.insert_webhook_endpoint(&endpoint(2, T1, 9)).unwrap();
    api.insert_webhook_endpoint(&endpoint(3, T2, 9)).unwrap();
    let ids = |list: Vec<WebhookEndpoint>| list.iter().map(|e| e.id.0).collect::<Vec<_>>();
    assert_eq!(ids(api.webhook_endpoints(T1).unwrap()), [2, 1], "newest first");
    assert_eq!(api.webhook_endpoint(T1, WebhookEndpointId(1)).unwrap(), Some(endpoint(1, T1, 8)));
    assert!(api.webhook_endpoint(T2, WebhookEndpointId(1)).unwrap().is_none());

    // A payment that succeeds puts one event in the outbox, in the commit that makes it.
    let mut state = State::default();
    step(&mut state, store.as_mut(), 10, vec![open(1, Overdraft::Unlimited, None), open(2, Overdraft::Limit(0), None)]);
    let payment = NewPayment {
        id: PaymentId(600),
        payer: Some(AccountId(1)),
        payee: AccountId(2),
        amount: 25,
        currency: eur(),
        capture_method: CaptureMethod::Automatic,
        expires_in_seconds: 3600,
        description: None,
        fx_quote: None,
        merchant: None,
    };
    step(&mut state, store.as_mut(), 20, vec![Command::CreatePayment(payment)]);
    step(&mut state, store.as_mut(), 30, vec![Command::ConfirmPayment(PaymentId(600))]);
    assert_eq!(api.fan_out(100, 10).unwrap(), 1);
    assert_eq!(api.fan_out(100, 10).unwrap(), 0, "an event is fanned out once");
    let due = api.due_deliveries(100, 100, 10, &[]).unwrap();
    assert_eq!(due.iter().map(|d| (d.endpoint.0, d.tenant, d.attempts)).collect::<Vec<_>>(), [(1, T1, 0), (2, T1, 0)]);
    assert!(api.due_deliveries(99, 99, 10, &[]).unwrap().is_empty(), "not due before the fan-out's time");
    let event = api.outbox_event(due[0].seq).unwrap().unwrap();
    assert_eq!((event.tenant, event.kind, event.object), (T1, EventKind::PaymentSucceeded, 600));
    let attempt = Attempt { at: 110, status: Some(200), error: None, delivered: true, next_attempt_at: None };
    api.record_attempt(due[0].id, &attempt).unwrap();
    let delivered = api.delivery(T1, due[0].id).unwrap().unwrap();
    assert_eq!(
        (delivered.attempts, delivered.last_status, delivered.delivered_at, delivered.next_attempt_at),
        (1, Some(200), Some(110), None)
    );
    assert!(api.delivery(T2, due[0].id).unwrap().is_none());
    assert_eq!(api.due_deliveries(1000, 1000, 10, &[]).unwrap().iter().map(|d| d.id).collect::<Vec<_>>(), [due[1].id]);
    assert_eq!(api.deliveries(WebhookEndpointId(1), None, 10).unwrap().len(), 1);
    assert!(api.deliveries(WebhookEndpointId(1), Some(due[0].id), 10).unwrap().is_empty());
    assert!(api.replay_delivery(T1, due[0].id, 200).unwrap());
    assert!(!api.replay_delivery(T2, due[0].id, 200).unwrap());
    let skipping = api.due_deliveries(1000, 1000, 10, &[WebhookEndpointId(1)]).unwrap();
    assert_eq!(skipping.iter().map(|d| d.endpoint.0).collect::<Vec<_>>(), [2], "endpoint 1's delivery is left");
    let skipping_both = api.due_deliveries(1000, 1000, 10, &[WebhookEndpointId(2), WebhookEndpointId(1)]).unwrap();
    assert!(skipping_both.is_empty());
    assert_eq!(api.due_deliveries(1000, 1000, 10, &[]).unwrap().len(), 2);
    assert!(api.delete_webhook_endpoint(T1, WebhookEndpointId(1)).unwrap());
    assert!(!api.delete_webhook_endpoint(T1, WebhookEndpointId(1)).unwrap());
    assert!(!api.replay_delivery(T1, due[0].id, 300).unwrap(), "a deleted endpoint's deliveries stay stopped");
    assert_eq!(api.due_deliveries(1000, 1000, 10, &[]).unwrap().iter().map(|d| d.endpoint.0).collect::<Vec<_>>(), [2]);
    assert_eq!(ids(api.webhook_endpoints(T1).unwrap()), [2]);
}

/// A batch record of `T1` taken in at `created_at`, stored.
fn stored_batch(api: &dyn paycore_store::ApiStore, id: u128, created_at: u64) -> BatchId {
    let batch = BatchId(id << 64);
    api.create_batch(&BatchRecord::new(batch, T1, BatchFormat::Csv, created_at)).unwrap();
    batch
}

fn claim(owner: &str, now: u64, until: u64) -> Claim<'_> {
    Claim { owner, now, until }
}

/// Batch jobs are leased: the oldest free batch goes to one claimer, a lapsed lease is taken
/// over, the old owner's renewal then fails, and a released lease is free at once.
fn batch_leases(open_store: &dyn Fn() -> Opened) {
    let Opened { store: _store, api } = open_store();
    let (a, b, c) =
        (stored_batch(api.as_ref(), 1, 1), stored_batch(api.as_ref(), 2, 2), stored_batch(api.as_ref(), 3, 3));
    // A batch that is no longer active is never claimed.
    let rejected = stored_batch(api.as_ref(), 4, 0);
    let validated = Validated {
        status: BatchStatus::Rejected,
        total: 0,
        invalid: 0,
        totals: &[],
        variant: None,
        message_id: None,
        rejection: Some("{}"),
        now: 5,
    };
    api.finish_validation(rejected, &validated).unwrap();

    let id = |record: Option<BatchRecord>| record.map(|r| r.id);
    assert_eq!(id(api.claim_next_batch(&claim("n1", 100, 200)).unwrap()), Some(a), "the oldest first");
    assert_eq!(id(api.claim_next_batch(&claim("n2", 100, 200)).unwrap()), Some(b));
    assert_eq!(id(api.claim_batch(c, &claim("n1", 100, 300)).unwrap()), Some(c), "by id, as intake does");
    assert_eq!(id(api.claim_next_batch(&claim("n2", 150, 250)).unwrap()), None, "every active batch is leased");
    assert_eq!(id(api.claim_batch(a, &claim("n2", 150, 250)).unwrap()), None, "a's lease holds until 200");
    assert_eq!(id(api.claim_batch(rejected, &claim("n2", 150, 250)).unwrap()), None, "not active");
    assert_eq!(id(api.claim_batch(BatchId(99 << 64), &claim("n2", 150, 250)).unwrap()), None, "no such batch");

    // The owner renews; nobody else can.
    assert!(api.renew_batch_lease(a, "n1", 220).unwrap());
    assert!(!api.renew_batch_lease(a, "n2", 900).unwrap());
    assert_eq!(id(api.claim_next_batch(&claim("n3", 210, 400)).unwrap()), Some(b), "b lapsed at 200, a renewed");
    // a lapses at 220 and is taken over; its old owner's renewal then fails.
    assert_eq!(id(api.claim_next_batch(&claim("n3", 220, 400)).unwrap()), Some(a), "a lapsed lease is taken over");
    assert!(!api.renew_batch_lease(a, "n1", 500).unwrap(), "renewal after a takeover fails");
    assert!(!api.renew_batch_lease(b, "n2", 500).unwrap());
    assert!(!api.release_batch_lease(a, "n1").unwrap(), "only the owner releases");

    // A released lease is free at once, long before it would lapse.
    assert!(api.release_batch_lease(a, "n3").unwrap());
    assert!(!api.renew_batch_lease(a, "n3", 500).unwrap(), "released: the job has let it go");
    assert_eq!(id(api.claim_next_batch(&claim("n4", 230, 400)).unwrap()), Some(a));
    assert_eq!(id(api.claim_next_batch(&claim("n4", 230, 400)).unwrap()), None);
    // The claim returns the batch as stored, to run from.
    assert!(api.release_batch_lease(c, "n1").unwrap());
    let claimed = api.claim_batch(c, &claim("n4", 240, 400)).unwrap().unwrap();
    assert_eq!((claimed.status, claimed.tenant, claimed.created_at), (BatchStatus::Validating, T1, 3));
}

/// Claimers on several threads (each call its own connection) never get one batch twice.
fn batch_claims_race(open_store: &dyn Fn() -> Opened) {
    let Opened { store: _store, api } = open_store();
    let batches: Vec<BatchId> = (1..=24).map(|i| stored_batch(api.as_ref(), i, u64::try_from(i).unwrap())).collect();
    let start = Arc::new(Barrier::new(4));
    let claimers: Vec<_> = (0..4)
        .map(|n| {
            let (api, start) = (api.clone(), start.clone());
            std::thread::spawn(move || {
                let owner = format!("node-{n}");
                start.wait();
                let mut mine = Vec::new();
                while let Some(batch) = api.claim_next_batch(&claim(&owner, 100, 1000)).unwrap() {
                    mine.push(batch.id);
                }
                mine
            })
        })
        .collect();
    let mut claimed: Vec<BatchId> = claimers.into_iter().flat_map(|t| t.join().unwrap()).collect();
    claimed.sort();
    assert_eq!(claimed, batches, "every batch claimed exactly once");
}

/// Ten payments that succeed, and `endpoints` endpoints of `T1` subscribed to them: ten
/// outbox events, fanned out to ten deliveries per endpoint.
fn succeeded_payments(store: &mut dyn paycore_store::Store, api: &dyn paycore_store::ApiStore, endpoints: u128) {
    for id in 1..=endpoints {
        let endpoint = WebhookEndpoint {
            id: WebhookEndpointId(id),
            tenant: T1,
            url: format!("http://127.0.0.1:9/hook/{id}"),
            events: vec![EventKind::PaymentSucceeded],
            secret: "whsec_test".into(),
            created_at: 1,
        };
        api.insert_webhook_endpoint(&endpoint).unwrap();
    }
    let mut state = State::default();
    step(&mut state, store, 10, vec![open(1, Overdraft::Unlimited, None), open(2, Overdraft::Limit(0), None)]);
    let payment = |id: u128| {
        Command::CreatePayment(NewPayment {
            id: PaymentId(id),
            payer: Some(AccountId(1)),
            payee: AccountId(2),
            amount: 5,
            currency: eur(),
            capture_method: CaptureMethod::Automatic,
            expires_in_seconds: 3600,
            description: None,
            fx_quote: None,
            merchant: None,
        })
    };
    step(&mut state, store, 20, (700..710).map(payment).collect());
    step(&mut state, store, 30, (700..710).map(|id| Command::ConfirmPayment(PaymentId(id))).collect());
}

/// Fan-outs and delivery claims on several threads at once: every event fanned out once,
/// every due delivery claimed by one worker only; a claim lapses, and an attempt ends it.
fn delivery_claims(open_store: &dyn Fn() -> Opened) {
    let Opened { mut store, api } = open_store();
    succeeded_payments(store.as_mut(), api.as_ref(), 4);

    let start = Arc::new(Barrier::new(3));
    let fanners: Vec<_> = (0..3)
        .map(|_| {
            let (api, start) = (api.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut taken = 0;
                loop {
                    match api.fan_out(100, 3).unwrap() {
                        0 => return taken,
                        n => taken += n,
                    }
                }
            })
        })
        .collect();
    let taken: usize = fanners.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(taken, 10, "each of the ten events fanned out by one fan-out only");
    let mut all: Vec<(u128, u64)> = (1..=4)
        .flat_map(|e| api.deliveries(WebhookEndpointId(e), None, 100).unwrap())
        .map(|d| (d.endpoint.0, d.seq))
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 40, "one delivery per event and endpoint");

    let start = Arc::new(Barrier::new(4));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (api, start) = (api.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut mine = Vec::new();
                loop {
                    let due = api.due_deliveries(200, 1000, 3, &[]).unwrap();
                    if due.is_empty() {
                        return mine;
                    }
                    assert!(due.windows(2).all(|w| (w[0].seq, w[0].id) < (w[1].seq, w[1].id)), "oldest event first");
                    mine.extend(due.iter().map(|d| d.id));
                }
            })
        })
        .collect();
    let mut claimed: Vec<u64> = workers.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let count = claimed.len();
    claimed.sort_unstable();
    claimed.dedup();
    assert_eq!((count, claimed.len()), (40, 40), "the workers split the due rows, none twice");
    assert!(api.due_deliveries(999, 1999, 100, &[]).unwrap().is_empty(), "claimed until 1000");

    // An attempt ends the claim: the delivery is due again at its next attempt, before the
    // claims of the others lapse.
    let retry = Attempt {
        at: 300,
        status: Some(500),
        error: Some("down".into()),
        delivered: false,
        next_attempt_at: Some(400),
    };
    api.record_attempt(claimed[0], &retry).unwrap();
    let again = api.due_deliveries(400, 2000, 100, &[]).unwrap();
    assert_eq!(again.iter().map(|d| (d.id, d.attempts)).collect::<Vec<_>>(), [(claimed[0], 1)]);
    // A lapsed claim (its worker died) is claimed again.
    assert_eq!(api.due_deliveries(1000, 2000, 100, &[]).unwrap().len(), 39);
    assert!(api.due_deliveries(1500, 2500, 100, &[]).unwrap().is_empty());
}

#[test]
fn embedded_batch_leases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    batch_leases(&move || paycore_store::open(&path).unwrap());
}

#[test]
fn embedded_batch_claims_race() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    batch_claims_race(&move || paycore_store::open(&path).unwrap());
}

#[test]
fn embedded_delivery_claims() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    delivery_claims(&move || paycore_store::open(&path).unwrap());
}

#[test]
fn embedded_leases_are_freed_when_the_folder_opens_again() {
    // The folder's lock says its previous process is gone: its leases do not hold a restart up.
    let dir = tempfile::tempdir().unwrap();
    let (store, api) = common::open_store(dir.path()).unwrap();
    let batch = stored_batch(api.as_ref(), 1, 1);
    assert!(api.claim_next_batch(&claim("gone", 10, u64::MAX)).unwrap().is_some());
    drop((store, api));
    let (_store, api) = common::open_store(dir.path()).unwrap();
    assert_eq!(api.claim_next_batch(&claim("next", 20, 30)).unwrap().map(|b| b.id), Some(batch));
}

#[test]
fn postgres_batch_leases() {
    on_postgres("postgres_batch_leases", batch_leases);
}

#[test]
fn postgres_batch_claims_race() {
    on_postgres("postgres_batch_claims_race", batch_claims_race);
}

#[test]
fn postgres_delivery_claims() {
    on_postgres("postgres_delivery_claims", delivery_claims);
}

/// Uploaded batch files: written in chunks, readable only once finished, read back whole
/// across chunk borders and after the store is opened again; aborted and removed ones gone.
fn batch_files(open_store: &dyn Fn() -> Opened) {
    use std::io::Read;
    let read_all = |api: &dyn paycore_store::BatchStore, file: &str| {
        let mut bytes = Vec::new();
        api.open_file(file).unwrap().map(|mut r| r.read_to_end(&mut bytes).unwrap()).map(|_| bytes)
    };
    // 2.5 chunks of the backend's size, in pieces that do not divide it.
    let content: Vec<u8> =
        (0..paycore_store::files::FILE_CHUNK_BYTES * 5 / 2).map(|i| u8::try_from(i % 251).unwrap()).collect();
    {
        let Opened { store: _store, api } = open_store();
        let mut sink = api.file_writer("batches/bat_1.csv").unwrap();
        for piece in content.chunks(100_003) {
            sink.write_chunk(piece).unwrap();
        }
        assert_eq!(read_all(api.as_ref(), "batches/bat_1.csv"), None, "not readable before it is finished");
        assert_eq!(sink.finish().unwrap(), content.len() as u64);
        assert_eq!(read_all(api.as_ref(), "batches/bat_1.csv").as_deref(), Some(&content[..]));

        let mut aborted = api.file_writer("batches/bat_2.csv").unwrap();
        aborted.write_chunk(b"payee,amount\n").unwrap();
        aborted.abort().unwrap();
        assert_eq!(read_all(api.as_ref(), "batches/bat_2.csv"), None);

        // A writer that never finishes (its process died) leaves nothing readable.
        let mut cut = api.file_writer("batches/bat_3.csv").unwrap();
        cut.write_chunk(&content[..1000]).unwrap();
        drop(cut);
        assert_eq!(read_all(api.as_ref(), "batches/bat_3.csv"), None);

        let mut small = api.file_writer("batches/bat_4.jsonl").unwrap();
        small.write_chunk(b"{}\n").unwrap();
        assert_eq!(small.finish().unwrap(), 3);
        api.remove_file("batches/bat_4.jsonl").unwrap();
        assert_eq!(read_all(api.as_ref(), "batches/bat_4.jsonl"), None);
        api.remove_file("batches/bat_4.jsonl").unwrap();

        for bad in ["../paycore.db", "batches/../LOCK", "batches/a/b"] {
            assert!(matches!(api.file_writer(bad).err(), Some(StoreError::Internal(_))), "{bad}");
            assert!(matches!(api.open_file(bad).err(), Some(StoreError::Internal(_))), "{bad}");
        }
    }
    let Opened { store: _store, api } = open_store();
    assert_eq!(read_all(api.as_ref(), "batches/bat_1.csv").as_deref(), Some(&content[..]), "durable");
    assert_eq!(read_all(api.as_ref(), "batches/bat_3.csv"), None);
}

/// Rates, the fee and quotes through the FX side; a quote loaded with a batch, used by a payment
/// and marked used in its commit (a second mark is a conflict); `verify` checks the pair.
fn fx_rates_quotes_and_payments(open_store: &dyn Fn() -> Opened) {
    use paycore_ledger::fx::{Quote, Rate};
    use paycore_ledger::QuoteId;
    use paycore_store::RateRecord;
    let Opened { mut store, api } = open_store();
    let usd = paycore_ledger::Currency::from_code("USD").unwrap();
    let rate = |text: &str, at: u64| RateRecord {
        tenant: T1,
        base: usd,
        quote: eur(),
        rate: Rate::parse(text).unwrap(),
        updated_at: at,
    };
    api.set_rate(&rate("0.92", 1)).unwrap();
    api.set_rate(&rate("0.9234", 2)).unwrap();
    api.set_rate(&RateRecord { base: eur(), quote: usd, ..rate("1.08", 3) }).unwrap();
    let rates = api.rates(T1).unwrap();
    assert_eq!(rates, vec![RateRecord { base: eur(), quote: usd, ..rate("1.08", 3) }, rate("0.9234", 2)]);
    assert_eq!(api.rate(T1, usd, eur()).unwrap(), Some(rate("0.9234", 2)));
    assert_eq!(api.rate(T2, usd, eur()).unwrap(), None);
    assert_eq!(api.fee_bps(T1).unwrap(), 0);
    api.set_fee_bps(T1, 25, 4).unwrap();
    api.set_fee_bps(T1, 30, 5).unwrap();
    assert_eq!((api.fee_bps(T1).unwrap(), api.fee_bps(T2).unwrap()), (30, 0));

    let quote = Quote {
        id: QuoteId(900),
        tenant: T1,
        from: usd,
        to: eur(),
        rate: Rate::parse("0.9234").unwrap(),
        source_amount: 10_000,
        target_amount: 9_234,
        fee: 30,
        created_at: 10,
        expires_at: 1_000,
        used_by: None,
    };
    let saved = IdempotencyRecord {
        tenant: T1,
        key: "quote-1".into(),
        fingerprint: [7; 32],
        status: 201,
        body: b"{}".to_vec(),
        created_at: 10,
    };
    api.insert_quote(&quote, Some(&saved)).unwrap();
    assert_eq!(api.idempotency(T1, "quote-1").unwrap(), Some(saved.clone()));
    // The same id or the same key again: a conflict, and nothing of it written.
    let other = Quote { id: QuoteId(901), ..quote.clone() };
    assert!(matches!(api.insert_quote(&quote, None), Err(StoreError::Conflict(_))));
    assert!(matches!(api.insert_quote(&other, Some(&saved)), Err(StoreError::Conflict(_))));
    assert_eq!(api.quote(T1, QuoteId(901)).unwrap(), None);
    assert_eq!(api.quote(T1, QuoteId(900)).unwrap(), Some(quote.clone()));
    assert_eq!(api.quote(T2, QuoteId(900)).unwrap(), None);

    // A USD payer, funded, and a EUR payee; the payment uses the quote.
    let mut state = State::default();
    let account = |id: u128, currency, overdraft| {
        Command::CreateAccount(NewAccount { id: AccountId(id), currency, overdraft, reference: None, metadata: None })
    };
    step(
        &mut state,
        store.as_mut(),
        20,
        vec![
            account(1, usd, Overdraft::Unlimited),
            account(2, usd, Overdraft::Limit(0)),
            account(3, eur(), Overdraft::Limit(0)),
        ],
    );
    let fund = paycore_ledger::NewTransfer {
        id: TransferId(50),
        linked: false,
        op: paycore_ledger::TransferOp::Move {
            debit_account: AccountId(1),
            credit_account: AccountId(2),
            amount: 20_000,
            currency: usd,
            hold: None,
        },
    };
    let payment = |id: u128| NewPayment {
        id: PaymentId(id),
        payer: Some(AccountId(2)),
        payee: AccountId(3),
        amount: 10_000,
        currency: usd,
        capture_method: CaptureMethod::Automatic,
        expires_in_seconds: 60,
        description: None,
        fx_quote: Some(QuoteId(900)),
        merchant: None,
    };
    step(&mut state, store.as_mut(), 30, vec![Command::Transfer(fund), Command::CreatePayment(payment(700))]);
    step(&mut state, store.as_mut(), 40, vec![Command::ConfirmPayment(PaymentId(700))]);
    let stored = api.payment(T1, PaymentId(700)).unwrap().unwrap();
    assert_eq!(stored.status, PaymentStatus::Succeeded);
    assert_eq!(stored.fx.as_ref().map(|fx| (fx.quote, fx.target_amount, fx.fee)), Some((QuoteId(900), 9_234, 30)));
    assert_eq!(api.quote(T1, QuoteId(900)).unwrap().unwrap().used_by, Some(PaymentId(700)));
    assert_eq!(api.account(T1, AccountId(3)).unwrap().unwrap().balances.posted(), 9_234);

    // Loaded again, the quote says it is used: a second payment is refused and marks nothing.
    let loaded = store
        .load(&paycore_ledger::Prefetch { quotes: vec![QuoteId(900), QuoteId(999)], ..Default::default() })
        .unwrap();
    assert_eq!(
        loaded.quotes.iter().map(|q| (q.id, q.used_by)).collect::<Vec<_>>(),
        vec![(QuoteId(900), Some(PaymentId(700)))]
    );
    step(&mut state, store.as_mut(), 50, vec![Command::CreatePayment(payment(701))]);
    assert_eq!(api.payment(T1, PaymentId(701)).unwrap(), None);
    // A change set that marks a used quote again is refused whole.
    let twice = paycore_ledger::ChangeSet {
        quotes_used: vec![(QuoteId(900), PaymentId(702))],
        last_timestamp: 60,
        ..Default::default()
    };
    assert!(matches!(store.commit(&twice, &[]), Err(StoreError::Conflict(_))));
    assert_eq!(api.quote(T1, QuoteId(900)).unwrap().unwrap().used_by, Some(PaymentId(700)));

    let report = paycore_store::verify::verify(api.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!((report.quotes, report.payments), (1, 1));
}

#[test]
fn embedded_fx_rates_quotes_and_payments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    fx_rates_quotes_and_payments(&move || paycore_store::open(&path).unwrap());
}

#[test]
fn postgres_fx_rates_quotes_and_payments() {
    on_postgres("postgres_fx_rates_quotes_and_payments", fx_rates_quotes_and_payments);
}

/// A cross-currency batch: its quotes and its items' payer sides are stored, read by range,
/// cleared for a new validation; its items held then posted through the FX accounts; and
/// `verify` checks the legs against the quote, finding a quote that is not its items' sum.
fn fx_batches(open_store: &dyn Fn() -> Opened) {
    use paycore_ledger::fx::{batch_item_fx, batch_quote_id, liquidity_account, Quote, Rate};
    use paycore_ledger::{BatchItem, ItemFx};
    let Opened { mut store, api } = open_store();
    let usd = Currency::from_code("USD").unwrap();
    let mut state = State::default();
    let account = |id: u128, currency, overdraft| {
        Command::CreateAccount(NewAccount { id: AccountId(id), currency, overdraft, reference: None, metadata: None })
    };
    step(
        &mut state,
        store.as_mut(),
        20,
        vec![
            account(1, usd, Overdraft::Unlimited),
            account(2, usd, Overdraft::Limit(0)),
            account(3, eur(), Overdraft::Limit(0)),
        ],
    );
    step(
        &mut state,
        store.as_mut(),
        30,
        vec![Command::Transfers(vec![NewTransfer {
            id: TransferId(50),
            linked: false,
            op: TransferOp::Move {
                debit_account: AccountId(1),
                credit_account: AccountId(2),
                amount: 20_000,
                currency: usd,
                hold: None,
            },
        }])],
    );

    let batch = stored_batch(api.as_ref(), 42, 1);
    let rate = Rate::parse("0.9234").unwrap();
    let amounts = [9_234u64, 1_000];
    let sides: Vec<(u64, ItemFx)> = amounts
        .iter()
        .enumerate()
        .map(|(i, &amount)| {
            let (source_amount, fee) = batch_item_fx(amount, rate, usd, eur(), 25).unwrap();
            (i as u64, ItemFx { quote: batch_quote_id(batch, usd, eur()), source_amount, fee })
        })
        .collect();
    assert_eq!(sides.iter().map(|(_, s)| (s.source_amount, s.fee)).collect::<Vec<_>>(), [(10_000, 25), (1_083, 3)]);
    let quote = Quote {
        id: batch_quote_id(batch, usd, eur()),
        tenant: T1,
        from: usd,
        to: eur(),
        rate,
        source_amount: 11_083,
        target_amount: 10_234,
        fee: 28,
        created_at: 5,
        expires_at: 5,
        used_by: None,
    };
    let rows: Vec<BatchItemRow> = amounts
        .iter()
        .enumerate()
        .map(|(i, &amount)| BatchItemRow {
            index: i as u64,
            line: i as u64 + 2,
            location: format!("line {}", i + 2),
            reference: None,
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
        })
        .collect();
    api.insert_batch_items(batch, &rows).unwrap();
    // A first validation stored a wrong quote; the next one clears it and stores its own.
    let wrong = Quote { source_amount: 1, ..quote.clone() };
    api.insert_batch_fx(batch, &[wrong], &sides[..1]).unwrap();
    api.clear_batch_fx(batch).unwrap();
    assert_eq!(api.batch_quotes(batch).unwrap(), vec![]);
    api.insert_batch_fx(batch, std::slice::from_ref(&quote), &sides).unwrap();
    assert_eq!(api.batch_quotes(batch).unwrap(), vec![quote.clone()]);
    assert_eq!(api.batch_quotes(BatchId(43 << 64)).unwrap(), vec![]);
    assert_eq!(api.batch_item_fx(batch, 1, 5).unwrap(), sides[1..].to_vec());
    assert_eq!(api.batch_item_fx(batch, 0, 1).unwrap(), sides);
    // The quote exists for the batch alone: it expired when it was made.
    assert_eq!(api.quote(T1, quote.id).unwrap().map(|q| (q.used_by, q.expires_at)), Some((None, 5)));

    let items: Vec<BatchItem> = sides
        .iter()
        .zip(amounts)
        .map(|(&(index, fx), amount)| BatchItem {
            index,
            payer: AccountId(2),
            payee: AccountId(3),
            amount,
            currency: eur(),
            fx: Some(fx),
            refund: None,
        })
        .collect();
    for (now, step_) in [(40, BatchStep::Hold), (50, BatchStep::Post)] {
        let out = step(
            &mut state,
            store.as_mut(),
            now,
            vec![Command::BatchItems { batch, step: step_, items: items.clone() }],
        );
        assert_eq!(out, vec![Outcome::Transfers(vec![paycore_ledger::ResultCode::Ok; 2])]);
    }
    let posted = |id| api.account(T1, id).unwrap().unwrap().balances.posted();
    assert_eq!(posted(AccountId(2)), 20_000 - 11_083 - 28);
    assert_eq!(posted(AccountId(3)), 10_234);
    assert_eq!(posted(liquidity_account(T1, usd)), 11_083);
    assert_eq!(posted(liquidity_account(T1, eur())), -10_234);
    let report = paycore_store::verify::verify(api.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);

    // A quote that is not the sum of its items, and an item whose payer side is not its legs.
    let forged = Quote { fee: 27, ..quote.clone() };
    let mut sides_forged = sides.clone();
    sides_forged[1].1.source_amount += 1;
    api.clear_batch_fx(batch).unwrap();
    api.insert_batch_fx(batch, &[forged], &sides_forged).unwrap();
    let report = paycore_store::verify::verify(api.as_ref()).unwrap();
    let problems = report.problems.join("\n");
    assert!(problems.contains("item 1: 1000") && problems.contains("does not cost 1084 USD"), "{problems}");
    assert!(problems.contains("item 1: its payer did not pay 1084"), "{problems}");
    assert!(problems.contains("its items add up to (11084, 10234, 28)"), "{problems}");
    assert_eq!(report.problems.len(), 3, "{problems}");
}

#[test]
fn embedded_fx_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    fx_batches(&move || paycore_store::open(&path).unwrap());
}

#[test]
fn postgres_fx_batches() {
    on_postgres("postgres_fx_batches", fx_batches);
}

/// Scan to pay: a payment without a payer is stored and recovered as one (open, no payer, its
/// merchant), the scan's commit stores the payer it bound, and `verify` accepts both.
fn scan_to_pay(open_store: &dyn Fn() -> Opened) {
    let Opened { mut store, api } = open_store();
    let mut state = State::default();
    step(&mut state, store.as_mut(), 10, vec![open(1, Overdraft::Unlimited, None), open(2, Overdraft::Limit(0), None)]);
    let merchant = Merchant {
        name: "Cafe de Flore".into(),
        city: "Paris".into(),
        country: "FR".into(),
        category_code: "5812".into(),
    };
    let payment = NewPayment {
        id: PaymentId(800),
        payer: None,
        payee: AccountId(2),
        amount: 1250,
        currency: eur(),
        capture_method: CaptureMethod::Automatic,
        expires_in_seconds: 3600,
        description: None,
        fx_quote: None,
        merchant: Some(merchant.clone()),
    };
    step(&mut state, store.as_mut(), 20, vec![Command::CreatePayment(payment)]);
    let stored = api.payment(T1, PaymentId(800)).unwrap().unwrap();
    assert_eq!((stored.payer, stored.merchant.as_ref()), (None, Some(&merchant)));
    assert_eq!(api.payment(T2, PaymentId(800)).unwrap(), None);
    drop((store, api));

    // The open payment comes back without a payer after a restart, and the scan pays it.
    let Opened { mut store, api } = open_store();
    let recovered = store.recover().unwrap();
    assert_eq!(recovered.open_payments.iter().map(|p| (p.id, p.payer)).collect::<Vec<_>>(), [(PaymentId(800), None)]);
    let mut state = State::recover(recovered.accounts, recovered.open_holds, recovered.open_payments, 20);
    let outcomes = step(&mut state, store.as_mut(), 30, vec![Command::ConfirmPayment(PaymentId(800))]);
    assert_eq!(outcomes, [Outcome::Payment(Err(CommandError::PayerRequired))]);
    let outcomes = step(
        &mut state,
        store.as_mut(),
        40,
        vec![Command::ScanPayment { payment: PaymentId(800), payer: AccountId(1) }],
    );
    assert!(matches!(&outcomes[0], Outcome::Payment(Ok(p)) if p.status == PaymentStatus::Succeeded), "{outcomes:?}");
    let stored = api.payment(T1, PaymentId(800)).unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.payer, stored.merchant),
        (PaymentStatus::Succeeded, Some(AccountId(1)), Some(merchant))
    );
    assert_eq!(api.account(T1, AccountId(2)).unwrap().unwrap().balances.credits_posted, 1250);

    let report = paycore_store::verify::verify(api.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}

#[test]
fn embedded_scan_to_pay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    scan_to_pay(&move || paycore_store::open(&path).unwrap());
}

#[test]
fn postgres_scan_to_pay() {
    on_postgres("postgres_scan_to_pay", scan_to_pay);
}

#[test]
fn embedded_store_in_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    suite(&move || paycore_store::open(&path).unwrap());
}

/// Clearing windows: a close loads the open window (the transfers committed since it opened),
/// commits the closed window with its positions, and the next close starts where it ended,
/// across a restart; the reads keep tenants and currencies apart; `verify` checks them.
fn clearing(open_store: &dyn Fn() -> Opened) {
    let Opened { mut store, api } = open_store();
    let mut state = State::default();
    let unlimited = |id| open(id, Overdraft::Unlimited, None);
    let close = |id: u128, currency| Command::CloseClearingWindow { window: ClearingWindowId(id), currency };
    let window = |outcome: &Outcome| match outcome {
        Outcome::ClearingWindow(Ok(w)) => w.clone(),
        other => panic!("expected a closed window, got {other:?}"),
    };
    step(&mut state, store.as_mut(), 10, vec![unlimited(1), unlimited(2), unlimited(3)]);
    step(
        &mut state,
        store.as_mut(),
        20,
        vec![Command::Transfers(vec![
            mv(100, 1, 2, 100, None),
            mv(101, 2, 3, 60, None),
            mv(102, 3, 1, 30, None),
            mv(103, 1, 3, 20, None),
            mv(104, 1, 2, 50, Some(Hold { timeout_seconds: None })),
        ])],
    );
    // The post of the hold and a transfer after the close share the close's batch.
    let post = NewTransfer {
        id: TransferId(105),
        linked: false,
        op: TransferOp::Post { pending_id: TransferId(104), amount: Some(20) },
    };
    let outcomes = step(
        &mut state,
        store.as_mut(),
        30,
        vec![Command::Transfer(post), close(900, eur()), Command::Transfer(mv(106, 2, 1, 7, None))],
    );
    let first = window(&outcomes[1]);
    let figures = |w: &ClearingWindow| -> Vec<(u128, i64, u64, u64, i64, i64)> {
        w.positions.iter().map(|p| (p.account.0, p.opening, p.debits, p.credits, p.net, p.closing)).collect()
    };
    assert_eq!(figures(&first), vec![(1, 0, 140, 30, -110, -110), (2, 0, 60, 120, 60, 60), (3, 0, 30, 80, 50, 50)]);
    assert_eq!((first.sequence, first.opened_at, first.gross_volume), (1, 0, 230));
    assert_eq!(api.clearing_window(T1, ClearingWindowId(900)).unwrap(), Some(first.clone()));
    assert_eq!(api.clearing_window(T2, ClearingWindowId(900)).unwrap(), None);
    drop(store);

    // A restart: the open window is what the store holds since the close.
    let Opened { mut store, api } = open_store();
    let recovered = store.recover().unwrap();
    let mut state =
        State::recover(recovered.accounts, recovered.open_holds, recovered.open_payments, recovered.last_timestamp);
    let outcomes = step(&mut state, store.as_mut(), 40, vec![close(901, eur()), close(902, eur()), close(900, eur())]);
    let second = window(&outcomes[0]);
    assert_eq!(figures(&second), vec![(1, -110, 0, 7, 7, -103), (2, 60, 7, 0, -7, 53)]);
    assert_eq!((second.sequence, second.opened_at, second.gross_volume), (2, first.closed_at, 7));
    assert_eq!(outcomes[1], Outcome::ClearingWindow(Err(CommandError::WindowEmpty)));
    assert_eq!(outcomes[2], Outcome::ClearingWindow(Err(CommandError::AlreadyExists)));

    // Listings: last closed first, by cursor, per currency and tenant.
    let list = |currency, after, limit| -> Vec<(u128, u64)> {
        api.clearing_windows(T1, currency, Page { after, limit })
            .unwrap()
            .into_iter()
            .map(|s| (s.window.id.0, s.accounts))
            .collect()
    };
    assert_eq!(list(None, None, 10), vec![(901, 2), (900, 3)]);
    assert_eq!(list(None, None, 1), vec![(901, 2)]);
    assert_eq!(list(None, Some(ClearingWindowId(901)), 10), vec![(900, 3)]);
    assert_eq!(list(Some(eur()), None, 10).len(), 2);
    assert!(list(Some(Currency::from_code("USD").unwrap()), None, 10).is_empty());
    assert!(list(None, Some(ClearingWindowId(12345)), 10).is_empty());
    assert!(api.clearing_windows(T2, None, Page { after: None, limit: 10 }).unwrap().is_empty());
    let summary = &api.clearing_windows(T1, None, Page { after: None, limit: 1 }).unwrap()[0];
    assert_eq!(summary.window, ClearingWindow { positions: Vec::new(), ..second.clone() });

    let report = paycore_store::verify::verify(api.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.clearing_windows, 2);
}

#[test]
fn embedded_clearing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    clearing(&move || paycore_store::open(&path).unwrap());
}

#[test]
fn postgres_clearing() {
    on_postgres("postgres_clearing", clearing);
}

#[test]
fn embedded_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    batches(&move || paycore_store::open(&path).unwrap());
}

#[test]
fn embedded_tenants_keys_and_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    tenants_keys_and_webhooks(&move || paycore_store::open(&path).unwrap());
}

#[test]
fn embedded_batch_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    batch_files(&move || paycore_store::open(&path).unwrap());
}

/// Account status and limits: the settings an update commits are read and recovered, its
/// audit row is listed per tenant and page, the debits the limits need load by account and
/// time, and `verify` passes, then finds a closed account that still moved money.
fn limits(open_store: &dyn Fn() -> Opened) {
    use paycore_ledger::{AccountStatus, AccountUpdate, Change, Limits, Prefetch, Velocity};
    const SECOND: u64 = 1_000_000_000;
    let Opened { mut store, api } = open_store();
    let mut state = State::default();
    let t0 = 1_700_000_000 * SECOND;
    step(
        &mut state,
        store.as_mut(),
        t0,
        vec![
            open(1, Overdraft::Unlimited, None),
            open(2, Overdraft::Limit(0), None),
            open(3, Overdraft::Limit(0), None),
        ],
    );
    step(
        &mut state,
        store.as_mut(),
        t0 + SECOND,
        vec![Command::Transfers(vec![mv(100, 1, 2, 1000, None), mv(101, 2, 3, 100, None)])],
    );
    let update =
        |account, update| Command::UpdateAccount { account: AccountId(account), update, actor: "key_a".into() };
    let limited = AccountUpdate {
        daily_outflow: Change::Set(500),
        velocity: Change::Set(Velocity { count: 4, window_seconds: 600 }),
        ..AccountUpdate::default()
    };
    step(&mut state, store.as_mut(), t0 + 2 * SECOND, vec![update(2, limited)]);
    step(
        &mut state,
        store.as_mut(),
        t0 + 3 * SECOND,
        vec![Command::Transfers(vec![
            mv(102, 2, 3, 300, Some(Hold { timeout_seconds: None })),
            mv(103, 2, 3, 100, None),
        ])],
    );
    step(
        &mut state,
        store.as_mut(),
        t0 + 4 * SECOND,
        vec![update(3, AccountUpdate { status: Some(AccountStatus::Frozen), ..AccountUpdate::default() })],
    );

    let row = api.account(T1, AccountId(2)).unwrap().unwrap();
    assert_eq!(
        row.limits,
        Limits {
            max_payment: None,
            daily_outflow: Some(500),
            velocity: Some(Velocity { count: 4, window_seconds: 600 })
        }
    );
    assert_eq!(row.status, AccountStatus::Active);
    assert_eq!(api.account(T1, AccountId(3)).unwrap().unwrap().status, AccountStatus::Frozen);
    assert_eq!(row, state.account(AccountId(2)).unwrap().clone());

    // The audit: newest first, per tenant, in pages.
    let audit = api.account_audit(T1, AccountId(2), Page { after: None, limit: 10 }).unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].actor.as_str(), audit[0].before.as_str()),
        ("key_a", r#"{"limits":{"daily_outflow":null,"velocity":null}}"#)
    );
    assert_eq!(audit[0].after, r#"{"limits":{"daily_outflow":500,"velocity":{"count":4,"window_seconds":600}}}"#);
    assert!(api.account_audit(T2, AccountId(2), Page { after: None, limit: 10 }).unwrap().is_empty());
    assert!(api.account_audit(T1, AccountId(2), Page { after: Some(audit[0].at), limit: 10 }).unwrap().is_empty());

    // The debits of an account since a time: single transfers and holds (101 is before it).
    let wanted = Prefetch { debits_of: vec![AccountId(2)], debits_since: t0 + 2 * SECOND, ..Prefetch::default() };
    let mut loaded: Vec<u128> = store.load(&wanted).unwrap().debits.iter().map(|t| t.id.0).collect();
    loaded.sort_unstable();
    assert_eq!(loaded, vec![102, 103]);

    // Recovery keeps the settings, and rebuilds the day's outflow from the transfers.
    let recovered = store.recover().unwrap();
    let mut again =
        State::recover(recovered.accounts, recovered.open_holds, recovered.open_payments, recovered.last_timestamp);
    let wanted = again.history_wanted();
    assert_eq!(wanted.debits_of, vec![AccountId(2)]);
    again.insert_debit_history(store.load(&wanted).unwrap().debits);
    again.rebuild_limit_history();
    let at = t0 + 5 * SECOND;
    assert_eq!(again.outflow_on(AccountId(2), at), state.outflow_on(AccountId(2), at));
    assert_eq!(again.outflow_on(AccountId(2), at), 100 + 300 + 100); // the limit, reached
    assert_eq!(again.account(AccountId(3)).unwrap().status, AccountStatus::Frozen);
    let report = paycore_store::verify::verify(api.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);

    // Account 1 is unlimited: closing it needs a zero balance, which it cannot reach here;
    // account 4, empty, closes. A transfer forged into it afterwards is found by verify.
    step(&mut state, store.as_mut(), t0 + 6 * SECOND, vec![open(4, Overdraft::Limit(0), None)]);
    step(
        &mut state,
        store.as_mut(),
        t0 + 7 * SECOND,
        vec![update(4, AccountUpdate { status: Some(AccountStatus::Closed), ..AccountUpdate::default() })],
    );
    assert_eq!(api.account(T1, AccountId(4)).unwrap().unwrap().status, AccountStatus::Closed);
    let report = paycore_store::verify::verify(api.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    let mut forged = state.take_changes();
    forged.transfers.push(paycore_ledger::Transfer {
        id: TransferId(900),
        tenant: T1,
        debit_account: AccountId(1),
        credit_account: AccountId(4),
        amount: 5,
        currency: eur(),
        kind: paycore_ledger::TransferKind::Single,
        pending_id: None,
        expires_at: None,
        timestamp: t0 + 8 * SECOND,
    });
    forged.last_timestamp = t0 + 8 * SECOND;
    store.commit(&forged, &[]).unwrap();
    let report = paycore_store::verify::verify(api.as_ref()).unwrap();
    assert!(report.problems.iter().any(|p| p.contains("closed before it")), "{:?}", report.problems);
    assert!(!report.problems.iter().any(|p| p.contains("daily limit")), "{:?}", report.problems);

    // A debit forged past account 2's daily limit (its 500 are spent) is found too.
    let mut forged = paycore_ledger::ChangeSet::default();
    forged.transfers.push(paycore_ledger::Transfer {
        id: TransferId(901),
        tenant: T1,
        debit_account: AccountId(2),
        credit_account: AccountId(1),
        amount: 1,
        currency: eur(),
        kind: paycore_ledger::TransferKind::Single,
        pending_id: None,
        expires_at: None,
        timestamp: t0 + 9 * SECOND,
    });
    forged.last_timestamp = t0 + 9 * SECOND;
    store.commit(&forged, &[]).unwrap();
    let report = paycore_store::verify::verify(api.as_ref()).unwrap();
    assert!(
        report.problems.iter().any(|p| p.contains("tr_") && p.contains("past its daily limit of 500")),
        "{:?}",
        report.problems
    );
}

#[test]
fn embedded_limits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    limits(&move || paycore_store::open(&path).unwrap());
}

#[test]
fn postgres_limits() {
    on_postgres("postgres_limits", limits);
}

/// Runs `case` on a fresh PostgreSQL database, dropped afterwards (or skips loudly).
fn on_postgres(test: &str, case: fn(&dyn Fn() -> Opened)) {
    let Some(database) = TestDatabase::create(test) else { return };
    let url = database.url().to_owned();
    case(&move || paycore_store::open(&url).unwrap());
}

#[test]
fn postgres_store() {
    on_postgres("postgres_store", suite);
}

#[test]
fn postgres_batches() {
    on_postgres("postgres_batches", batches);
}

#[test]
fn postgres_batch_files() {
    on_postgres("postgres_batch_files", batch_files);
}

#[test]
fn postgres_tenants_keys_and_webhooks() {
    on_postgres("postgres_tenants_keys_and_webhooks", tenants_keys_and_webhooks);
}

#[test]
fn a_folder_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = paycore_store::open(dir.path()).unwrap();
    assert!(matches!(paycore_store::open(dir.path()), Err(StoreError::InUse(_))));
}

#[test]
fn a_postgres_database_in_use_is_refused_until_its_writer_closes() {
    let Some(database) = TestDatabase::create("a_postgres_database_in_use_is_refused") else { return };
    let first = paycore_store::open(database.url()).unwrap();
    assert!(matches!(paycore_store::open(database.url()), Err(StoreError::InUse(_))));
    // The API side of a store in use still opens for checks.
    assert!(paycore_store::verify::verify(paycore_store::open_for_verify(database.url()).unwrap().as_ref())
        .unwrap()
        .ok());
    drop(first);
    // The server frees a closed session's locks a moment after the client goes: retry a while.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match paycore_store::open(database.url()) {
            Ok(_) => break,
            Err(StoreError::InUse(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(error) => panic!("the writer's lock outlived it: {error}"),
        }
    }
}

#[test]
fn a_postgres_server_that_is_not_there_is_unavailable() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let error = paycore_store::open("postgres://postgres@127.0.0.1:1/paycore?connect_timeout=5").err().unwrap();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
    assert!(error.is_transient());
}

#[test]
fn verify_refuses_a_folder_without_a_store() {
    let dir = tempfile::tempdir().unwrap();
    assert!(paycore_store::open_for_verify(dir.path()).is_err());
    assert!(!dir.path().join("paycore.db").exists(), "verify creates nothing");
}

#[test]
fn verify_refuses_a_postgres_database_without_a_store() {
    let Some(database) = TestDatabase::create("verify_refuses_a_postgres_database_without_a_store") else { return };
    let error = paycore_store::open_for_verify(database.url()).err().unwrap();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
    assert!(error.to_string().contains("has no paycore database"), "{error}");
}

/// Interest terms, the closing balances a run reads, and a run's one transaction: written
/// once, refused as a whole when the accrual moved meanwhile.
fn interest(open_store: &dyn Fn() -> Opened) {
    use paycore_ledger::interest::{parse_rate, Accrual, Compounding, Date, DayCount, Posting, Terms};
    use paycore_store::{InterestAdvance, InterestRecord, InterestRun};
    let Opened { mut store, api } = open_store();
    let day = |text: &str| Date::parse(text).unwrap();
    let mut state = State::default();
    let at = |text: &str| day(text).end_ns() - 1_000_000;
    step(
        &mut state,
        store.as_mut(),
        at("2026-10-30"),
        vec![
            open(1, Overdraft::Unlimited, None),
            open(2, Overdraft::Limit(0), None),
            open(3, Overdraft::Limit(0), None),
        ],
    );
    step(&mut state, store.as_mut(), at("2026-11-01"), vec![Command::Transfers(vec![mv(100, 1, 2, 1000, None)])]);
    step(&mut state, store.as_mut(), at("2026-11-03"), vec![Command::Transfers(vec![mv(101, 2, 3, 300, None)])]);
    // A hold moves no posted money.
    step(
        &mut state,
        store.as_mut(),
        at("2026-11-04"),
        vec![Command::Transfers(vec![mv(102, 2, 3, 50, Some(Hold { timeout_seconds: None }))])],
    );

    let terms = Terms {
        annual_rate: parse_rate("0.035").unwrap(),
        day_count: DayCount::Act365,
        compounding: Compounding::Daily,
        posting: Posting::Monthly,
        min_balance: 0,
        debit_rate: None,
    };
    let record = InterestRecord {
        account: AccountId(2),
        tenant: T1,
        currency: eur(),
        terms,
        since: day("2026-10-31"),
        accrued_through: day("2026-10-30"),
        accrual: Accrual::default(),
        last_batch: None,
        updated_at: 5,
    };
    assert_eq!(api.set_interest(&record).unwrap(), record);
    assert_eq!(api.interest(T1, AccountId(2)).unwrap(), Some(record.clone()));
    assert_eq!(api.interest(T2, AccountId(2)).unwrap(), None, "another tenant's");
    assert!(!api.remove_interest(T2, AccountId(2)).unwrap());

    // Closing balances: now minus what moved after each day.
    let history = api.balance_history(T1, &[AccountId(2)], &[], day("2026-10-30")).unwrap();
    let closing = |h: &paycore_store::BalanceHistory, d: &str| h.closing(AccountId(2), day(d));
    assert_eq!(
        [closing(&history, "2026-10-31"), closing(&history, "2026-11-01"), closing(&history, "2026-11-02")],
        [0, 1000, 1000]
    );
    assert_eq!([closing(&history, "2026-11-03"), closing(&history, "2026-11-30")], [700, 700]);
    // Transfers with an excluded account (the interest accounts) count as if made before.
    let history = api.balance_history(T1, &[AccountId(2)], &[AccountId(1)], day("2026-10-30")).unwrap();
    assert_eq!([closing(&history, "2026-10-31"), closing(&history, "2026-11-03")], [1000, 700]);
    assert_eq!(api.balance_history(T2, &[AccountId(2)], &[], day("2026-10-30")).unwrap(), Default::default());

    // A run: its batch, items and the accrual in one transaction.
    let batch_id = BatchId(77 << 64);
    let mut batch = BatchRecord::new(batch_id, T1, BatchFormat::Interest, 9);
    batch.status = BatchStatus::Processing;
    batch.total = 1;
    batch.validated_at = Some(9);
    let item = BatchItemRow {
        index: 0,
        line: 1,
        location: "acct 2026-11".into(),
        reference: Some("interest 2026-11".into()),
        instruction_id: None,
        payment_information_id: None,
        payer_text: Some("acct_1".into()),
        payee_text: Some("acct_2".into()),
        payer: Some(AccountId(1)),
        payee: Some(AccountId(2)),
        amount: Some(2),
        currency: Some(eur()),
        status: ItemStatus::Pending,
        failure_code: None,
        message: None,
        remittance: None,
    };
    let mut accrual = Accrual::default();
    accrual.credit.posted = 2;
    accrual.credit.exact = "2.0123".parse().unwrap();
    let advance =
        InterestAdvance { account: AccountId(2), from: day("2026-10-30"), accrued_through: day("2026-11-30"), accrual };
    let totals = [BatchTotal { currency: eur(), count: 1, sum: 2 }];
    let run = InterestRun {
        batch: &batch,
        items: std::slice::from_ref(&item),
        totals: &totals,
        advances: std::slice::from_ref(&advance),
    };
    api.create_interest_run(&run).unwrap();
    let stored = api.batch(T1, batch_id).unwrap().unwrap();
    assert_eq!((stored.status, stored.format, stored.total), (BatchStatus::Processing, BatchFormat::Interest, 1));
    assert_eq!(api.batch_items(batch_id, &[], None, 10).unwrap(), vec![item.clone()]);
    assert_eq!(api.batch_totals(batch_id).unwrap(), totals.to_vec());
    let after = api.interest(T1, AccountId(2)).unwrap().unwrap();
    assert_eq!((after.accrued_through, after.accrual, after.last_batch), (day("2026-11-30"), accrual, Some(batch_id)));

    // The same run again: the accrual moved, so nothing of it is written.
    let mut again = batch.clone();
    again.id = BatchId(78 << 64);
    let run = InterestRun { batch: &again, ..run };
    assert!(matches!(api.create_interest_run(&run), Err(StoreError::Conflict(_))));
    assert_eq!(api.batch(T1, again.id).unwrap(), None);
    assert_eq!(api.interest(T1, AccountId(2)).unwrap().unwrap(), after);

    let report = paycore_store::verify::verify(api.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    // `verify` finds a posted amount that is not the rounded exact total.
    let mut broken = Accrual::default();
    broken.credit.exact = "1.6".parse().unwrap();
    broken.credit.compounded = broken.credit.exact;
    broken.credit.posted = 1;
    let odd = InterestRecord { account: AccountId(3), accrual: broken, ..record.clone() };
    api.set_interest(&odd).unwrap();
    let report = paycore_store::verify::verify(api.as_ref()).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].contains("credit interest posted 1"), "{:?}", report.problems);
    assert!(api.remove_interest(T1, AccountId(3)).unwrap());

    // New terms keep the accrual where it stands.
    let changed = InterestRecord { terms: Terms { min_balance: 500, ..terms }, updated_at: 10, ..record.clone() };
    let stored = api.set_interest(&changed).unwrap();
    assert_eq!((stored.terms.min_balance, stored.accrued_through, stored.accrual), (500, day("2026-11-30"), accrual));
    assert_eq!(api.interest_accounts(T1).unwrap(), vec![stored]);
    assert!(api.remove_interest(T1, AccountId(2)).unwrap());
    assert_eq!(api.interest_accounts(T1).unwrap(), vec![]);
}

#[test]
fn embedded_interest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    interest(&move || paycore_store::open(&path).unwrap());
}

#[test]
fn postgres_interest() {
    on_postgres("postgres_interest", interest);
}

/// Retention: `prune` removes, in chunks of at most `limit` per kind, the saved idempotent
/// responses, finished deliveries, fanned-out events without deliveries and ended batches'
/// files older than their windows, and nothing else: the ledger, open deliveries and their
/// events, running batches' files and younger records stay, and `verify` still passes.
fn retention(open_store: &dyn Fn() -> Opened) {
    use paycore_store::{PruneCounts, Retention};
    use std::io::Read;
    use std::time::Duration;
    let Opened { mut store, api } = open_store();
    succeeded_payments(store.as_mut(), api.as_ref(), 1);
    let record = |key: &str, created_at: u64| IdempotencyRecord {
        tenant: T1,
        key: key.into(),
        fingerprint: [7; 32],
        status: 201,
        body: b"{}".to_vec(),
        created_at,
    };
    let mut records: Vec<IdempotencyRecord> = (0..25).map(|i| record(&format!("old-{i}"), 100 + i)).collect();
    records.extend((0..3).map(|i| record(&format!("young-{i}"), 5000 + i)));
    store.commit(&paycore_ledger::ChangeSet::default(), &records).unwrap();

    // Ten deliveries: nine delivered, one failing and due again later.
    assert_eq!(api.fan_out(40, 100).unwrap(), 10);
    let claimed = api.due_deliveries(40, 1000, 100, &[]).unwrap();
    assert_eq!(claimed.len(), 10);
    let pending = claimed[0].clone();
    for delivery in &claimed {
        let delivered = delivery.id != pending.id;
        let attempt = Attempt {
            at: 50,
            status: Some(if delivered { 200 } else { 500 }),
            error: None,
            delivered,
            next_attempt_at: (!delivered).then_some(7000),
        };
        api.record_attempt(delivery.id, &attempt).unwrap();
    }

    // Batches with files: ended and old, running and old, ended and young.
    let with_file = |id: u128, status: BatchStatus, created_at: u64| {
        let name = format!("batches/bat_{id}.csv");
        let mut sink = api.file_writer(&name).unwrap();
        sink.write_chunk(b"payee,amount\n").unwrap();
        sink.finish().unwrap();
        let mut batch = BatchRecord::new(BatchId(id << 64), T1, BatchFormat::Csv, created_at);
        batch.status = status;
        batch.file = Some(name.clone());
        api.create_batch(&batch).unwrap();
        (batch.id, name)
    };
    let ended_old = with_file(1, BatchStatus::Completed, 60);
    let running_old = with_file(2, BatchStatus::Processing, 60);
    let ended_young = with_file(3, BatchStatus::Rejected, 5000);

    let balances =
        |api: &dyn paycore_store::ApiStore| [1, 2].map(|id| api.account(T1, AccountId(id)).unwrap().unwrap().balances);
    let before = balances(api.as_ref());
    let retention = Retention {
        idempotency: Duration::from_nanos(1000),
        deliveries: Duration::from_nanos(5000),
        files: Duration::from_nanos(1000),
    };
    // At 6000: idempotency and files before 5000 go, deliveries and events before 1000.
    let mut total = PruneCounts::default();
    let mut calls = 0;
    loop {
        let counts = api.prune(6000, &retention, 10).unwrap();
        assert!(counts.idempotency <= 10 && counts.deliveries <= 10 && counts.outbox <= 10 && counts.files <= 10);
        total.idempotency += counts.idempotency;
        total.deliveries += counts.deliveries;
        total.outbox += counts.outbox;
        total.files += counts.files;
        calls += 1;
        if !counts.more_waiting(10) {
            break;
        }
    }
    assert_eq!(total, PruneCounts { idempotency: 25, deliveries: 9, outbox: 9, files: 1, console_sessions: 0 });
    assert_eq!(calls, 3, "25 records in chunks of 10");
    assert_eq!(api.prune(6000, &retention, 10).unwrap(), PruneCounts::default(), "nothing twice");

    assert!(api.idempotency(T1, "old-0").unwrap().is_none());
    assert!(api.idempotency(T1, "old-24").unwrap().is_none());
    assert_eq!(api.idempotency(T1, "young-0").unwrap(), Some(record("young-0", 5000)));
    let left = api.deliveries(WebhookEndpointId(1), None, 100).unwrap();
    assert_eq!(left.iter().map(|d| d.id).collect::<Vec<_>>(), [pending.id], "an open delivery stays");
    assert!(api.outbox_event(pending.seq).unwrap().is_some(), "and so does its event");
    for delivery in claimed.iter().filter(|d| d.id != pending.id) {
        assert!(api.outbox_event(delivery.seq).unwrap().is_none(), "event {}", delivery.seq);
    }
    let file_of = |id: BatchId| api.batch(T1, id).unwrap().unwrap().file;
    let readable = |name: &str| api.open_file(name).unwrap().map(|mut r| r.read_to_end(&mut Vec::new()).unwrap());
    assert_eq!(file_of(ended_old.0), None);
    assert_eq!(readable(&ended_old.1), None);
    assert_eq!(file_of(running_old.0), Some(running_old.1.clone()));
    assert_eq!(readable(&running_old.1), Some(13));
    assert_eq!(file_of(ended_young.0), Some(ended_young.1.clone()));
    assert_eq!(readable(&ended_young.1), Some(13));

    // The ledger is untouched: balances, payments, and every check of `verify`.
    assert_eq!(balances(api.as_ref()), before);
    for id in 700..710 {
        let payment = api.payment(T1, PaymentId(id)).unwrap().unwrap();
        assert_eq!(payment.status, PaymentStatus::Succeeded);
    }
    let report = paycore_store::verify::verify(api.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.payments, 10);

    // A new event is still fanned out after the cursor.
    assert_eq!(api.fan_out(6000, 100).unwrap(), 0);
}

#[test]
fn embedded_retention() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    retention(&move || paycore_store::open(&path).unwrap());
}

#[test]
fn postgres_retention() {
    on_postgres("postgres_retention", retention);
}

/// NACHA returns and notifications of change: the trace index, the links (one active return
/// per original), and the commit that marks an original `returned` with its event when its
/// reversal succeeds.
fn returns(open_store: &dyn Fn() -> Opened) {
    let Opened { mut store, api } = open_store();
    let mut state = State::default();
    step(&mut state, store.as_mut(), 10, vec![open(1, Overdraft::Unlimited, None), open(2, Overdraft::Limit(0), None)]);
    let row = |index: u64, payer: u128, payee: u128, amount: u64, trace: &str| BatchItemRow {
        index,
        line: index + 3,
        location: format!("line {}", index + 3),
        reference: Some(trace.to_owned()),
        instruction_id: None,
        payment_information_id: None,
        payer_text: Some(AccountId(payer).to_string()),
        payee_text: Some(AccountId(payee).to_string()),
        payer: Some(AccountId(payer)),
        payee: Some(AccountId(payee)),
        amount: Some(amount),
        currency: Some(eur()),
        status: ItemStatus::Pending,
        failure_code: None,
        message: None,
        remittance: None,
    };
    let processing = |batch: BatchId, total: u64, now: u64| {
        let validated = Validated {
            status: BatchStatus::Processing,
            total,
            invalid: 0,
            totals: &[],
            variant: None,
            message_id: None,
            rejection: None,
            now,
        };
        api.finish_validation(batch, &validated).unwrap();
    };
    // The original: two items paid.
    let original = BatchId(20 << 64);
    api.create_batch(&BatchRecord::new(original, T1, BatchFormat::Nacha, 11)).unwrap();
    api.insert_batch_items(original, &[row(0, 1, 2, 700, "121042880000001"), row(1, 1, 2, 300, "121042880000002")])
        .unwrap();
    processing(original, 2, 12);
    api.index_traces(T1, original).unwrap();
    api.index_traces(T1, original).unwrap();
    let work = api.batch_work(original, ItemStatus::Pending, None, 10).unwrap();
    step(
        &mut state,
        store.as_mut(),
        20,
        vec![Command::BatchItems { batch: original, step: BatchStep::Pay, items: work }],
    );
    step(&mut state, store.as_mut(), 21, vec![Command::EndBatch { batch: original, end: BatchEnd::Completed }]);
    assert_eq!(api.items_by_trace(T1, "121042880000001").unwrap(), [(original, 0)]);
    assert!(api.items_by_trace(T2, "121042880000001").unwrap().is_empty(), "another tenant's");
    assert!(api.items_by_trace(T1, "121042880000009").unwrap().is_empty());

    // The returns' batch: item 0 returns original item 0 (paying it back), item 1 is a
    // notification about original item 1.
    let back = BatchId(21 << 64);
    api.create_batch(&BatchRecord::new(back, T1, BatchFormat::Nacha, 30)).unwrap();
    api.insert_batch_items(back, &[row(0, 2, 1, 700, "231380100000001")]).unwrap();
    let link = |batch: BatchId, index: u64, kind: LinkKind, original_index: u64, code: &str| ItemLink {
        batch,
        index,
        tenant: T1,
        kind,
        original_batch: original,
        original_index,
        code: code.to_owned(),
        detail: (kind == LinkKind::Change).then(|| "1918171614".to_owned()),
        amount: if kind == LinkKind::Return { 700 } else { 0 },
        currency: eur(),
        active: kind == LinkKind::Return,
        created_at: 31,
    };
    let links = [link(back, 0, LinkKind::Return, 0, "R01"), link(back, 1, LinkKind::Change, 1, "C01")];
    api.record_links(back, &links, &[]).unwrap();
    api.record_links(back, &links, &[]).unwrap();
    processing(back, 2, 32);
    api.index_traces(T1, back).unwrap();
    assert_eq!(api.active_return(original, 0).unwrap(), Some(links[0].clone()));
    assert_eq!(api.active_return(original, 1).unwrap(), None, "a notification holds nothing");
    // A second active return of the same original is refused, whatever batch it comes in.
    let other = BatchId(22 << 64);
    let twice = link(other, 0, LinkKind::Return, 0, "R01");
    assert!(matches!(api.record_links(other, std::slice::from_ref(&twice), &[]), Err(StoreError::Conflict(_))));
    assert!(api.item_links(other, 0, 10).unwrap().is_empty(), "nothing written");
    // Both ways: what the returns' items are, and what is said about the originals.
    assert_eq!(api.item_links(back, 0, 1).unwrap(), links);
    assert_eq!(api.item_links(original, 0, 1).unwrap(), links);
    assert_eq!(api.item_links(original, 1, 1).unwrap(), [links[1].clone()]);

    // The reversal commits: the original is `returned` with its R-code, and its event is out.
    let work = api.batch_work(back, ItemStatus::Pending, None, 10).unwrap();
    step(
        &mut state,
        store.as_mut(),
        40,
        vec![Command::BatchItems { batch: back, step: BatchStep::Pay, items: work.clone() }],
    );
    let statuses = |batch| -> Vec<(String, Option<String>)> {
        api.batch_items(batch, &[], None, 10)
            .unwrap()
            .into_iter()
            .map(|i| (i.status.as_str().to_owned(), i.failure_code))
            .collect()
    };
    assert_eq!(statuses(original), [("returned".to_owned(), Some("R01".to_owned())), ("succeeded".to_owned(), None)]);
    assert_eq!(statuses(back), [("succeeded".to_owned(), None)]);
    let returned: Vec<u64> =
        api.batch_items(original, &[ItemStatus::Returned], None, 10).unwrap().iter().map(|i| i.index).collect();
    assert_eq!(returned, [0]);
    assert_eq!(api.return_link(T1, back.item_transfer(0)).unwrap(), Some(links[0].clone()));
    assert_eq!(api.return_link(T2, back.item_transfer(0)).unwrap(), None, "another tenant's");
    assert_eq!(api.return_link(T1, back.item_transfer(1)).unwrap(), None, "a notification is no return");
    // The same chunk sent again (a resumed run) moves nothing and marks nothing twice.
    step(&mut state, store.as_mut(), 41, vec![Command::BatchItems { batch: back, step: BatchStep::Pay, items: work }]);
    let endpoint = WebhookEndpoint {
        id: WebhookEndpointId(6),
        tenant: T1,
        url: "http://127.0.0.1:9/hook".into(),
        events: vec![EventKind::BatchItemReturned],
        secret: "whsec_test".into(),
        created_at: 42,
    };
    api.insert_webhook_endpoint(&endpoint).unwrap();
    api.fan_out(50, 100).unwrap();
    let due = api.due_deliveries(50, 50, 10, &[]).unwrap();
    assert_eq!(due.len(), 1, "one event for one return");
    let event = api.outbox_event(due[0].seq).unwrap().unwrap();
    assert_eq!((event.tenant, event.kind, event.object), (T1, EventKind::BatchItemReturned, back.item_transfer(0).0));
    // A released return gives its original up to a later one.
    api.record_links(other, std::slice::from_ref(&twice), &[(back, 0)]).unwrap();
    assert_eq!(api.active_return(original, 0).unwrap(), Some(twice));
    assert!(!api.item_links(back, 0, 0).unwrap()[0].active);

    assert_eq!(api.account(T1, AccountId(2)).unwrap().map(|a| a.balances.posted()), Some(300));
    let report = paycore_store::verify::verify(api.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}

#[test]
fn embedded_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    returns(&move || paycore_store::open(&path).unwrap());
}

#[test]
fn postgres_returns() {
    on_postgres("postgres_returns", returns);
}

/// `Reader::payments`: a tenant's payments newest first, filtered by status, paged by id.
fn payment_listing(open_store: &dyn Fn() -> Opened) {
    let Opened { mut store, api } = open_store();
    let mut state = State::default();
    step(&mut state, store.as_mut(), 10, vec![open(1, Overdraft::Unlimited, None), open(2, Overdraft::Limit(0), None)]);
    let payment = |id: u128| {
        Command::CreatePayment(NewPayment {
            id: PaymentId(id),
            payer: Some(AccountId(1)),
            payee: AccountId(2),
            amount: 100,
            currency: eur(),
            capture_method: CaptureMethod::Automatic,
            expires_in_seconds: 3600,
            description: None,
            fx_quote: None,
            merchant: None,
        })
    };
    step(&mut state, store.as_mut(), 20, vec![payment(901), payment(902)]);
    step(&mut state, store.as_mut(), 30, vec![payment(903), Command::ConfirmPayment(PaymentId(902))]);
    let ids = |status: Option<PaymentStatus>, after: Option<u128>, limit: usize| -> Vec<u128> {
        let page = paycore_store::Page { after: after.map(PaymentId), limit };
        api.payments(T1, status, page).unwrap().iter().map(|p| p.id.0).collect()
    };
    assert_eq!(ids(None, None, 10), [903, 902, 901]);
    assert_eq!(ids(None, None, 2), [903, 902]);
    assert_eq!(ids(None, Some(902), 2), [901]);
    assert_eq!(ids(Some(PaymentStatus::RequiresConfirmation), None, 10), [903, 901]);
    assert_eq!(ids(Some(PaymentStatus::Succeeded), None, 10), [902]);
    assert_eq!(ids(Some(PaymentStatus::Cancelled), None, 10), Vec::<u128>::new());
    assert_eq!(api.payments(T2, None, paycore_store::Page { after: None, limit: 10 }).unwrap(), []);
}

#[test]
fn embedded_payment_listing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    payment_listing(&move || paycore_store::open(&path).unwrap());
}

#[test]
fn postgres_payment_listing() {
    on_postgres("postgres_payment_listing", payment_listing);
}

/// `BatchStore::batches`: a tenant's batches newest first, filtered by status, paged by id;
/// another tenant's never.
fn batch_listing(open_store: &dyn Fn() -> Opened) {
    let Opened { api, .. } = open_store();
    for (id, at) in [(1, 10), (2, 20), (3, 30)] {
        stored_batch(api.as_ref(), id, at);
    }
    api.create_batch(&BatchRecord::new(BatchId(4 << 64), T2, BatchFormat::Csv, 40)).unwrap();
    let rejected = Validated {
        status: BatchStatus::Rejected,
        total: 0,
        invalid: 0,
        totals: &[],
        variant: None,
        message_id: None,
        rejection: Some(r#"{"code":"control_total_mismatch"}"#),
        now: 25,
    };
    api.finish_validation(BatchId(2 << 64), &rejected).unwrap();
    let ids = |tenant: TenantId, status: Option<BatchStatus>, after: Option<u128>, limit: usize| -> Vec<u128> {
        let page = Page { after: after.map(|a| BatchId(a << 64)), limit };
        api.batches(tenant, status, page).unwrap().iter().map(|b| b.id.0 >> 64).collect()
    };
    assert_eq!(ids(T1, None, None, 10), [3, 2, 1]);
    assert_eq!(ids(T1, None, None, 2), [3, 2]);
    assert_eq!(ids(T1, None, Some(2), 2), [1]);
    assert_eq!(ids(T1, Some(BatchStatus::Validating), None, 10), [3, 1]);
    assert_eq!(ids(T1, Some(BatchStatus::Rejected), None, 10), [2]);
    assert_eq!(ids(T1, Some(BatchStatus::Completed), None, 10), Vec::<u128>::new());
    assert_eq!(ids(T2, None, None, 10), [4]);
    let listed = api.batches(T1, None, Page { after: None, limit: 1 }).unwrap();
    assert_eq!(listed, [api.batch(T1, BatchId(3 << 64)).unwrap().unwrap()], "a listed batch reads as `batch` does");
}

#[test]
fn embedded_batch_listing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    batch_listing(&move || paycore_store::open(&path).unwrap());
}

#[test]
fn postgres_batch_listing() {
    on_postgres("postgres_batch_listing", batch_listing);
}

/// `AdminStore::end_console_session`: a signed-out console session is seen as such by every
/// handle on the store (and after a reopen), a repeat changes nothing, and the record is pruned
/// once the cookie would have expired.
fn console_sessions_ended(open_store: &dyn Fn() -> Opened) {
    use paycore_store::{PruneCounts, Retention};
    let (signed_out, other) = ([7u8; 16], [8u8; 16]);
    {
        let Opened { store: _store, api } = open_store();
        assert!(!api.console_session_ended(&signed_out).unwrap());
        api.end_console_session(&signed_out, 5000).unwrap();
        api.end_console_session(&signed_out, 5000).unwrap();
        api.end_console_session(&[9u8; 16], 9000).unwrap();
        assert!(api.console_session_ended(&signed_out).unwrap());
        assert!(!api.console_session_ended(&other).unwrap());
    }
    let Opened { store: _store, api } = open_store();
    assert!(api.console_session_ended(&signed_out).unwrap(), "recorded in the store, not in a handle");
    let retention = Retention::default();
    // Not before the cookie expires: it could still be sent.
    assert_eq!(api.prune(5000, &retention, 10).unwrap().console_sessions, 0);
    assert!(api.console_session_ended(&signed_out).unwrap());
    assert_eq!(api.prune(5001, &retention, 10).unwrap().console_sessions, 1);
    assert!(!api.console_session_ended(&signed_out).unwrap(), "pruned once expired");
    assert!(api.console_session_ended(&[9u8; 16]).unwrap(), "a later expiry is kept");
    assert_eq!(api.prune(5001, &retention, 10).unwrap(), PruneCounts::default(), "nothing twice");
}

#[test]
fn embedded_console_sessions_ended() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    console_sessions_ended(&move || paycore_store::open(&path).unwrap());
}

#[test]
fn postgres_console_sessions_ended() {
    on_postgres("postgres_console_sessions_ended", console_sessions_ended);
}

/// Polls `read` until `done` holds of what it returns (up to ten seconds); returns the last read.
fn eventually<T: std::fmt::Debug>(read: impl Fn() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let value = read();
        if done(&value) || std::time::Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `Reader::lag`: a partition's clock is its last commit's; the history's index catches up
/// with it off the commit, and so do the stored balances (by the next start at the latest).
fn lag(open_store: &dyn Fn() -> Opened) {
    use std::time::Duration;
    let mut state = State::default();
    let last = {
        let Opened { mut store, api } = open_store();
        let fresh = api.lag().unwrap();
        assert_eq!(fresh.len(), 1, "{fresh:?}");
        assert_eq!(
            (fresh[0].partition, fresh[0].history_behind(), fresh[0].balances_behind()),
            (0, Duration::ZERO, Duration::ZERO)
        );
        step(
            &mut state,
            store.as_mut(),
            10,
            vec![open(1, Overdraft::Unlimited, None), open(2, Overdraft::Limit(0), None)],
        );
        step(
            &mut state,
            store.as_mut(),
            20,
            vec![Command::Transfers(vec![mv(100, 1, 2, 1000, None), mv(101, 1, 2, 5, None)])],
        );
        let last = api.transfer(T1, TransferId(101)).unwrap().unwrap().timestamp;
        let lag = api.lag().unwrap()[0];
        assert_eq!(lag.clock, last, "the clock is the last commit's");
        assert!(lag.history_through <= last && lag.balances_through <= last, "{lag:?}");
        let indexed = eventually(|| api.lag().unwrap()[0], |lag| lag.history_through == last);
        assert_eq!(indexed.history_behind(), Duration::ZERO, "the history's index caught up: {indexed:?}");
        last
    };
    // The previous writer is gone; the next one starts as the engine does.
    let Opened { mut store, api } = open_store();
    store.recover().unwrap();
    let checkpointed = eventually(|| api.lag().unwrap()[0], |lag| lag.balances_through == last);
    assert_eq!((checkpointed.clock, checkpointed.balances_behind()), (last, Duration::ZERO), "{checkpointed:?}");
    assert_eq!(api.account(T1, AccountId(2)).unwrap().unwrap().balances.credits_posted, 1005);
}

#[test]
fn embedded_lag() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    lag(&move || paycore_store::open(&path).unwrap());
}

#[test]
fn postgres_lag() {
    on_postgres("postgres_lag", lag);
}
