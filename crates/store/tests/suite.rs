//! One storage test suite, run against every store implementation (today: SQLite).
//! Each check drives the store with changes made by the real ledger state machine.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{eur, mv, open_store, step, TENANT as T1};
use paycore_ledger::{
    AccountId, CaptureMethod, Command, Hold, HoldStatus, NewAccount, NewPayment, NewTransfer, Overdraft, PaymentId,
    PaymentStatus, Request, State, TenantId, TransferId, TransferOp,
};
use paycore_store::{IdempotencyRecord, Page, Reader, Store};

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

fn suite(open_store: &dyn Fn() -> (Box<dyn Store>, Box<dyn Reader>)) {
    let (mut store, reader) = open_store();
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
    assert!(store.commit(&changes, &[record("a"), record("a")]).is_err());
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
}

#[test]
fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    suite(&move || {
        let (store, reader) = open_store(&path).unwrap();
        (Box::new(store), Box::new(reader))
    });
}

#[test]
fn verify_finds_a_tampered_balance_and_a_payment_without_its_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, reader) = open_store(dir.path()).unwrap();
    let mut state = State::default();
    step(&mut state, &mut store, 10, vec![open(1, Overdraft::Unlimited, None), open(2, Overdraft::Limit(0), None)]);
    step(&mut state, &mut store, 20, vec![Command::Transfers(vec![mv(100, 1, 2, 1000, None)])]);
    step(
        &mut state,
        &mut store,
        30,
        vec![Command::CreatePayment(NewPayment {
            id: PaymentId(7),
            payer: AccountId(2),
            payee: AccountId(1),
            amount: 10,
            currency: eur(),
            capture_method: CaptureMethod::Automatic,
            expires_in_seconds: 60,
            description: None,
        })],
    );
    step(&mut state, &mut store, 40, vec![Command::ConfirmPayment(PaymentId(7))]);
    let report = paycore_store::verify::verify(&reader).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!((report.accounts, report.transfers, report.payments), (2, 2, 1));

    let conn = rusqlite::Connection::open(dir.path().join("paycore.db")).unwrap();
    conn.execute(
        "UPDATE accounts SET credits_posted = credits_posted + 1 WHERE id = ?1",
        [AccountId(2).0.to_be_bytes()],
    )
    .unwrap();
    conn.execute("UPDATE payments SET amount_captured = 11", []).unwrap();
    let report = paycore_store::verify::verify(&reader).unwrap();
    assert_eq!(report.problems.len(), 3, "{:?}", report.problems);
    assert!(report.problems[0].contains("stored balances"));
    assert!(report.problems[1].contains("EUR: balances sum to 1 posted"));
    assert!(report.problems[2].contains("status succeeded does not match its transfers"));
}

#[test]
fn sqlite_survives_reopen_and_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    drop(open_store(dir.path()).unwrap());
    let conn = rusqlite::Connection::open(dir.path().join("paycore.db")).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = open_store(dir.path()).err().unwrap();
    assert!(err.to_string().contains("newer paycore"), "{err}");
}

/// Every page of every account's history, newest first.
fn history(reader: &dyn Reader, account: u128, page_size: usize) -> Vec<TransferId> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = reader.account_transfers(T1, AccountId(account), Page { after, limit: page_size }).unwrap();
        all.extend(page.iter().map(|t| t.id));
        match page.last() {
            Some(last) if page.len() == page_size => after = Some(last.id),
            _ => return all,
        }
    }
}

#[test]
fn account_history_lists_every_transfer_whether_indexed_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, reader) = open_store(dir.path()).unwrap();
    let mut state = State::default();
    step(&mut state, &mut store, 1, (1..=5).map(|a| open(a, Overdraft::Unlimited, None)).collect());
    let mut committed: Vec<(u128, u128, u128)> = Vec::new();
    let mut seed: u64 = 42;
    let mut next = |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let check = |committed: &[(u128, u128, u128)], reader: &dyn Reader, page_size: usize| {
        for account in 1..=5 {
            let expected: Vec<TransferId> =
                committed.iter().rev().filter(|t| t.1 == account || t.2 == account).map(|t| TransferId(t.0)).collect();
            assert_eq!(history(reader, account, page_size), expected, "account {account}, pages of {page_size}");
        }
    };
    for batch in 0..24u128 {
        let transfers: Vec<(u128, u128, u128)> = (0..7u128)
            .map(|i| {
                let debit = 1 + u128::from(next(5));
                let credit = 1 + (debit + u128::from(next(4))) % 5;
                (1000 + batch * 10 + i, debit, credit)
            })
            .collect();
        let moves = transfers.iter().map(|&(id, d, c)| mv(id, d, c, 1, None)).collect();
        step(&mut state, &mut store, 10 + u64::try_from(batch).unwrap(), vec![Command::Transfers(moves)]);
        committed.extend(transfers);
        // Indexed up to here every third batch; the background indexer may run at any time too.
        if batch % 3 == 0 {
            store.index_history(dir.path()).unwrap();
        }
        check(&committed, &reader, 1 + usize::try_from(batch % 4).unwrap());
    }
    check(&committed, &reader, 100);

    // history.db is derived: without it (or after it), listings are the same.
    drop((store, reader));
    std::fs::remove_file(dir.path().join("history.db")).unwrap();
    let _ = std::fs::remove_file(dir.path().join("history.db-wal"));
    let (mut store, reader) = open_store(dir.path()).unwrap();
    check(&committed, &reader, 3);
    store.index_history(dir.path()).unwrap();
    check(&committed, &reader, 3);

    // A history ahead of the transfers (the database was replaced by an older copy) starts over.
    drop((store, reader));
    let history = rusqlite::Connection::open(dir.path().join("history.db")).unwrap();
    history.execute("UPDATE watermark SET timestamp = 1 << 62", []).unwrap();
    history.execute("DELETE FROM account_runs WHERE account = ?1", [AccountId(1).0.to_be_bytes()]).unwrap();
    drop(history);
    let (_store, reader) = open_store(dir.path()).unwrap();
    check(&committed, &reader, 5);
}

/// The files of a data folder as a crash would leave them (the store still open, nothing
/// written by a shutdown), copied to a new folder.
fn crash_image(dir: &std::path::Path) -> tempfile::TempDir {
    let image = tempfile::tempdir().unwrap();
    for name in ["paycore.db", "paycore.db-wal"] {
        if dir.join(name).exists() {
            std::fs::copy(dir.join(name), image.path().join(name)).unwrap();
        }
    }
    image
}

#[test]
fn balances_written_by_checkpoints_are_replayed_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, reader) = open_store(dir.path()).unwrap();
    let mut state = State::default();
    step(&mut state, &mut store, 10, (1..=3).map(|a| open(a, Overdraft::Unlimited, None)).collect());
    let pay = |state: &mut State, store: &mut dyn Store, now: u64, first: u128| {
        let transfers = vec![
            mv(first, 1, 2, 100, None),
            mv(first + 1, 2, 3, 30, Some(Hold { timeout_seconds: Some(3600) })),
            mv(first + 2, 3, 1, 5, None),
        ];
        step(state, store, now, vec![Command::Transfers(transfers)]);
    };
    pay(&mut state, &mut store, 20, 100);
    // The second batch posts part of the first batch's hold: a replay needs the held amount.
    step(
        &mut state,
        &mut store,
        25,
        vec![Command::Transfers(vec![NewTransfer {
            id: TransferId(150),
            linked: false,
            op: TransferOp::Post { pending_id: TransferId(101), amount: Some(20) },
        }])],
    );
    let current = |state: &State| (1..=3).map(|a| state.account(AccountId(a)).unwrap().balances).collect::<Vec<_>>();
    let read = |reader: &dyn Reader| {
        (1..=3).map(|a| reader.account(T1, AccountId(a)).unwrap().unwrap().balances).collect::<Vec<_>>()
    };
    assert_eq!(read(&reader), current(&state), "readers see balances not yet checkpointed");

    // A crash now: nothing was checkpointed, everything is replayed.
    let image = crash_image(dir.path());
    {
        let (mut again, reader) = open_store(image.path()).unwrap();
        let recovered = again.recover().unwrap();
        let balances: Vec<_> =
            (1..=3).map(|a| recovered.accounts.iter().find(|x| x.id == AccountId(a)).unwrap().balances).collect();
        assert_eq!(balances, current(&state));
        assert_eq!(read(&reader), current(&state));
        assert!(paycore_store::verify::verify(&reader).unwrap().ok());
    }

    // After a checkpoint (a commit a second later), only the batches after it are replayed.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    pay(&mut state, &mut store, 30, 200);
    pay(&mut state, &mut store, 40, 300);
    assert_eq!(read(&reader), current(&state));
    let image = crash_image(dir.path());
    let rows = rusqlite::Connection::open(image.path().join("paycore.db")).unwrap();
    let through: i64 =
        rows.query_row("SELECT value FROM meta WHERE key = 'balances_through'", [], |r| r.get(0)).unwrap();
    assert!(through > 0, "a checkpoint was written");
    drop(rows);
    let (mut again, reader) = open_store(image.path()).unwrap();
    let report = paycore_store::verify::verify(&reader).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    again.recover().unwrap();
    assert_eq!(read(&reader), current(&state));
}

/// A data folder written before item results became runs (schema 5, statuses on the item rows)
/// reads the same after the migration: every item keeps its status and failure code.
#[test]
fn item_statuses_survive_the_move_to_result_runs() {
    use paycore_store::BatchStore;
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("paycore.db")).unwrap();
    for migration in [
        include_str!("../migrations/0001_init.sql"),
        include_str!("../migrations/0002_batches.sql"),
        include_str!("../migrations/0003_tenants_webhooks.sql"),
        include_str!("../migrations/0004_history_out_of_commit.sql"),
        include_str!("../migrations/0005_balances_checkpoint.sql"),
    ] {
        conn.execute_batch(migration).unwrap();
    }
    conn.pragma_update(None, "user_version", 5).unwrap();
    let batch = paycore_ledger::BatchId(42 << 64);
    conn.execute(
        "INSERT INTO batches (id, tenant, status, format, mode, on_invalid, total, invalid, succeeded, failed, held,
             created_at)
         VALUES (?1, ?2, 'completed', 'csv', 'atomic', 'skip_invalid', 6, 1, 1, 3, 0, 1)",
        rusqlite::params![batch.0.to_be_bytes(), T1.0.to_be_bytes()],
    )
    .unwrap();
    let old = [
        ("succeeded", None),
        ("failed", Some("insufficient_funds")),
        ("invalid", Some("account_not_found")),
        ("voided", Some("batch_aborted")),
        ("held", None),
        ("voided", Some("batch_aborted")),
    ];
    for (index, (status, code)) in old.iter().enumerate() {
        conn.execute(
            "INSERT INTO batch_items (batch, idx, line, location, status, failure_code) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![batch.0.to_be_bytes(), index as i64, index as i64 + 2, "line", status, code],
        )
        .unwrap();
    }
    drop(conn);
    let (_store, reader) = open_store(dir.path()).unwrap();
    let items = reader.batch_items(batch, &[], None, 100).unwrap();
    let now: Vec<(&str, Option<&str>)> = items.iter().map(|i| (i.status.as_str(), i.failure_code.as_deref())).collect();
    assert_eq!(now, old);
    let voided: Vec<u64> = reader.batch_items(batch, &["voided"], None, 100).unwrap().iter().map(|i| i.index).collect();
    assert_eq!(voided, [3, 5]);
}
