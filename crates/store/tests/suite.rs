//! One storage test suite, run against every store implementation (today: the embedded one,
//! a data folder) through `paycore_store::open`, the one way in. Each check drives the store
//! with changes made by the real ledger state machine. What only one backend has (its files,
//! its schema versions) is tested beside that backend's code.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{eur, mv, step};
use paycore_ledger::{
    AccountId, CaptureMethod, Command, Hold, HoldStatus, NewAccount, NewPayment, Overdraft, PaymentId, PaymentStatus,
    Request, State, TenantId, TransferId,
};
use paycore_store::{IdempotencyRecord, Opened, Page, StoreError};

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
                payer: AccountId(2),
                payee: AccountId(3),
                amount: 200,
                currency: eur(),
                capture_method: CaptureMethod::Manual,
                expires_in_seconds: 3600,
                description: Some("order 1".into()),
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

#[test]
fn embedded_store_in_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    suite(&move || paycore_store::open(&path).unwrap());
}

#[test]
fn a_folder_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = paycore_store::open(dir.path()).unwrap();
    assert!(matches!(paycore_store::open(dir.path()), Err(StoreError::InUse(_))));
}

#[test]
fn a_postgres_location_says_cluster_mode_is_not_built_yet() {
    let error = paycore_store::open("postgres://127.0.0.1/paycore").err().unwrap();
    assert!(matches!(error, StoreError::Unsupported(_)));
    assert!(error.to_string().contains("not built yet"), "{error}");
    assert!(matches!(paycore_store::open_for_verify("postgresql://db/x"), Err(StoreError::Unsupported(_))));
}

#[test]
fn verify_refuses_a_folder_without_a_store() {
    let dir = tempfile::tempdir().unwrap();
    assert!(paycore_store::open_for_verify(dir.path()).is_err());
    assert!(!dir.path().join("paycore.db").exists(), "verify creates nothing");
}
