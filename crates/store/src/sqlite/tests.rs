//! Tests of what only the SQLite store has: its files, its schema versions and migrations,
//! its history file, its checkpoints, and checks that tamper with its rows. What every store
//! must do is in `crates/store/tests/suite.rs`.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, clippy::cast_possible_wrap)]

use super::commit::SqliteStore;
use super::reader::SqliteReader;
use crate::testing;
use crate::{BatchItemRow, BatchRecord, BatchStore, Options, Page, Reader, Store, StoreError};
use paycore_ledger::{
    AccountId, BatchFormat, BatchId, CaptureMethod, Command, Currency, Hold, ItemStatus, NewAccount, NewPayment,
    NewTransfer, Overdraft, PaymentId, Request, State, TenantId, TransferId, TransferOp,
};
use std::sync::Arc;

const T1: TenantId = TenantId(1);

fn eur() -> Currency {
    Currency::from_code("EUR").unwrap()
}

fn open_sqlite(dir: &std::path::Path) -> (SqliteStore, Arc<SqliteReader>) {
    super::open_parts(dir, &Options::default()).unwrap()
}

fn open(id: u128, overdraft: Overdraft, reference: Option<&str>) -> Command {
    Command::CreateAccount(NewAccount {
        id: AccountId(id),
        currency: eur(),
        overdraft,
        reference: reference.map(str::to_owned),
        metadata: None,
    })
}

fn mv(id: u128, debit: u128, credit: u128, amount: u64, hold: Option<Hold>) -> NewTransfer {
    NewTransfer {
        id: TransferId(id),
        linked: false,
        op: TransferOp::Move {
            debit_account: AccountId(debit),
            credit_account: AccountId(credit),
            amount,
            currency: eur(),
            hold,
        },
    }
}

/// Executes `commands` on the ledger and commits what they changed.
fn step(state: &mut State, store: &mut dyn Store, now: u64, commands: Vec<Command>) {
    crate::testing::step(state, store, T1, now, commands).1.unwrap();
}

fn synchronous(conn: &rusqlite::Connection) -> i64 {
    conn.pragma_query_value(None, "synchronous", |row| row.get(0)).unwrap()
}

/// `.cargo/config.toml` builds SQLite without the options that put a process-wide mutex on
/// every allocation (memory statistics) and on every page fetch (one page cache group for all
/// connections): a build that missed the flags (another `LIBSQLITE3_FLAGS` in the
/// environment, a system SQLite) fails here rather than only running slower.
#[test]
fn sqlite_is_built_without_process_wide_mutexes() {
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    let options: Vec<String> = conn
        .prepare("PRAGMA compile_options")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert!(options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"), "{options:?}");
    assert!(!options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
    assert!(options.iter().any(|o| o == "THREADSAFE=1"), "{options:?}");
}

#[test]
fn item_chunks_are_written_unsynced_on_their_own_connection_only() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, reader) = open_sqlite(dir.path());
    let batch = BatchId(7 << 64);
    reader.create_batch(&BatchRecord::new(batch, T1, BatchFormat::Csv, 1)).unwrap();
    let item = |index: u64| BatchItemRow {
        index,
        line: index + 2,
        location: format!("line {}", index + 2),
        reference: Some(format!("inv-{index}")),
        instruction_id: None,
        payment_information_id: None,
        payer_text: None,
        payee_text: Some("acc".into()),
        payer: None,
        payee: None,
        amount: Some(100),
        currency: Currency::from_code("EUR"),
        status: ItemStatus::Invalid,
        failure_code: Some("account_not_found".into()),
        message: Some("payee: no account".into()),
        remittance: None,
    };
    reader.insert_batch_items(batch, &(0..70).map(item).collect::<Vec<_>>()).unwrap();
    // A failed insert (the same indexes again) writes nothing.
    assert!(matches!(reader.insert_batch_items(batch, &[item(3)]), Err(StoreError::Conflict(_))));
    // 1 is NORMAL, 2 is FULL: the item writer's connection skips the fsync, every pooled
    // connection (the API's writes: batches, keys, webhooks) stays synced.
    assert_eq!(reader.with_item_writer(|conn| Ok(synchronous(conn))).unwrap(), 1);
    assert_eq!(reader.with(|conn| Ok(synchronous(conn))).unwrap(), 2);
    assert_eq!(reader.batch_items(batch, &[ItemStatus::Invalid], None, 100).unwrap().len(), 70);
}

#[test]
fn a_payee_named_by_its_own_id_is_stored_without_its_text_and_read_back_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, reader) = open_sqlite(dir.path());
    let batch = BatchId(9 << 64);
    reader.create_batch(&BatchRecord::new(batch, T1, BatchFormat::Csv, 1)).unwrap();
    let payee = AccountId(3);
    let row = |index: u64, payee_text: Option<String>, status: ItemStatus| BatchItemRow {
        index,
        line: index + 2,
        location: format!("line {}", index + 2),
        reference: None,
        instruction_id: None,
        payment_information_id: None,
        payer_text: Some(AccountId(2).to_string()),
        payee_text,
        payer: Some(AccountId(2)),
        payee: Some(payee),
        amount: Some(100),
        currency: Some(eur()),
        status,
        failure_code: (status == ItemStatus::Invalid).then(|| "same_account".to_owned()),
        message: None,
        remittance: None,
    };
    let own = payee.to_string();
    let rows = vec![
        // The id as the account writes it: stored empty.
        row(0, Some(own.clone()), ItemStatus::Pending),
        // Another spelling of the same id (Crockford's `o` for 0), a reference, none, and an
        // invalid row: as given.
        row(1, Some(own.replacen('0', "o", 1)), ItemStatus::Pending),
        row(2, Some("supplier-7".into()), ItemStatus::Pending),
        row(3, None, ItemStatus::Pending),
        row(4, Some(own.clone()), ItemStatus::Invalid),
    ];
    reader.insert_batch_items(batch, &rows).unwrap();
    // The block holds the payee's own id in no row (the invalid row's too: an item reads back
    // as written, whatever its status); the alias spelling and the reference as given.
    let data: Vec<u8> = reader
        .with(|conn| Ok(conn.query_row("SELECT data FROM batch_item_blocks", [], |r| r.get(0)).unwrap()))
        .unwrap();
    let count = |needle: &str| data.windows(needle.len()).filter(|w| *w == needle.as_bytes()).count();
    assert_eq!(count(&own), 0);
    assert_eq!(count(rows[1].payee_text.as_deref().unwrap()), 1);
    assert_eq!(count("supplier-7"), 1);
    let read: Vec<Option<String>> =
        reader.batch_items(batch, &[], None, 10).unwrap().into_iter().map(|i| i.payee_text).collect();
    let given: Vec<Option<String>> = rows.into_iter().map(|i| i.payee_text).collect();
    assert_eq!(read, given);
}

#[test]
fn the_reader_pool_never_opens_more_connections_than_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, _) = open_sqlite(dir.path());
    let path = dir.path().join(super::open::DATABASE_FILE);
    let reader = Arc::new(SqliteReader::new(dir.path().to_path_buf(), path, dir.path().join("history.db"), 2));
    let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (reader, inside, most) = (reader.clone(), inside.clone(), most.clone());
            std::thread::spawn(move || {
                for _ in 0..20 {
                    reader
                        .with(|_| {
                            let now = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                            most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                            Ok(())
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 2, "eight threads share two connections");
}

#[test]
fn a_unique_violation_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, reader) = open_sqlite(dir.path());
    let record = BatchRecord::new(BatchId(9 << 64), T1, BatchFormat::Csv, 1);
    reader.create_batch(&record).unwrap();
    assert!(matches!(reader.create_batch(&record), Err(StoreError::Conflict(_))));
}

#[test]
fn verify_finds_a_tampered_balance_and_a_payment_without_its_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, reader) = open_sqlite(dir.path());
    let mut state = State::default();
    step(&mut state, &mut store, 10, vec![open(1, Overdraft::Unlimited, None), open(2, Overdraft::Limit(0), None)]);
    step(&mut state, &mut store, 20, vec![Command::Transfers(vec![mv(100, 1, 2, 1000, None)])]);
    step(
        &mut state,
        &mut store,
        30,
        vec![Command::CreatePayment(NewPayment {
            id: PaymentId(7),
            payer: Some(AccountId(2)),
            payee: AccountId(1),
            amount: 10,
            currency: eur(),
            capture_method: CaptureMethod::Automatic,
            expires_in_seconds: 60,
            description: None,
            fx_quote: None,
            merchant: None,
        })],
    );
    step(&mut state, &mut store, 40, vec![Command::ConfirmPayment(PaymentId(7))]);
    let report = crate::verify::verify(reader.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!((report.accounts, report.transfers, report.payments), (2, 2, 1));

    let conn = rusqlite::Connection::open(dir.path().join("paycore.db")).unwrap();
    conn.execute(
        "UPDATE accounts SET credits_posted = credits_posted + 1 WHERE id = ?1",
        [AccountId(2).0.to_be_bytes()],
    )
    .unwrap();
    conn.execute("UPDATE payments SET amount_captured = 11", []).unwrap();
    let report = crate::verify::verify(reader.as_ref()).unwrap();
    assert_eq!(report.problems.len(), 3, "{:?}", report.problems);
    assert!(report.problems[0].contains("stored balances"));
    assert!(report.problems[1].contains("EUR: balances sum to 1 posted"));
    assert!(report.problems[2].contains("status succeeded does not match its transfers"));
}

#[test]
fn verify_finds_a_paid_payment_without_its_payer_or_debiting_another() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, reader) = open_sqlite(dir.path());
    let mut state = State::default();
    step(&mut state, &mut store, 10, vec![open(1, Overdraft::Unlimited, None), open(2, Overdraft::Limit(0), None)]);
    let till = |id| {
        Command::CreatePayment(NewPayment {
            id: PaymentId(id),
            payer: None,
            payee: AccountId(2),
            amount: 10,
            currency: eur(),
            capture_method: CaptureMethod::Automatic,
            expires_in_seconds: 60,
            description: None,
            fx_quote: None,
            merchant: None,
        })
    };
    step(&mut state, &mut store, 20, vec![till(7), till(8)]);
    step(&mut state, &mut store, 30, vec![Command::ScanPayment { payment: PaymentId(7), payer: AccountId(1) }]);
    let report = crate::verify::verify(reader.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.payments, 2);

    let conn = rusqlite::Connection::open(dir.path().join("paycore.db")).unwrap();
    conn.execute("UPDATE payments SET payer = NULL WHERE id = ?1", [PaymentId(7).0.to_be_bytes()]).unwrap();
    let report = crate::verify::verify(reader.as_ref()).unwrap();
    assert_eq!(report.problems, [format!("{}: has no payer but is succeeded or names a transfer", PaymentId(7))]);
    conn.execute(
        "UPDATE payments SET payer = ?1 WHERE id = ?2",
        [AccountId(2).0.to_be_bytes(), PaymentId(7).0.to_be_bytes()],
    )
    .unwrap();
    let report = crate::verify::verify(reader.as_ref()).unwrap();
    assert_eq!(
        report.problems,
        [format!("{}: its transfer debits {}, not its payer {}", PaymentId(7), AccountId(1), AccountId(2))]
    );
}

#[test]
fn verify_finds_tampered_clearing_positions() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, reader) = open_sqlite(dir.path());
    let mut state = State::default();
    let close =
        |id: u128| Command::CloseClearingWindow { window: paycore_ledger::ClearingWindowId(id), currency: eur() };
    step(&mut state, &mut store, 10, vec![open(1, Overdraft::Unlimited, None), open(2, Overdraft::Unlimited, None)]);
    step(&mut state, &mut store, 20, vec![Command::Transfers(vec![mv(100, 1, 2, 1000, None)]), close(900)]);
    step(&mut state, &mut store, 30, vec![Command::Transfers(vec![mv(101, 2, 1, 400, None)]), close(901)]);
    let report = crate::verify::verify(reader.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.clearing_windows, 2);

    let conn = rusqlite::Connection::open(dir.path().join("paycore.db")).unwrap();
    let window = |id: u128| id.to_be_bytes();
    // A net that no longer matches its debits and credits, and sums to 1.
    conn.execute(
        "UPDATE clearing_positions SET net = net + 1, closing = closing + 1 WHERE window_id = ?1 AND account = ?2",
        (window(900), AccountId(2).0.to_be_bytes()),
    )
    .unwrap();
    let report = crate::verify::verify(reader.as_ref()).unwrap();
    assert_eq!(report.problems.len(), 3, "{:?}", report.problems);
    assert!(report.problems[0].contains("nets sum to 1"), "{:?}", report.problems);
    assert!(
        report.problems[1].contains("opening 0 debits 0 credits 1000 net 1001 closing 1001"),
        "{:?}",
        report.problems
    );
    assert!(report.problems[2].contains("closed its last window at 1001"), "{:?}", report.problems);
    conn.execute(
        "UPDATE clearing_positions SET net = net - 1, closing = closing - 1 WHERE window_id = ?1 AND account = ?2",
        (window(900), AccountId(2).0.to_be_bytes()),
    )
    .unwrap();
    assert!(crate::verify::verify(reader.as_ref()).unwrap().ok());

    // A position lost: its account moved in the window and has none.
    conn.execute(
        "DELETE FROM clearing_positions WHERE window_id = ?1 AND account = ?2",
        (window(901), AccountId(1).0.to_be_bytes()),
    )
    .unwrap();
    let report = crate::verify::verify(reader.as_ref()).unwrap();
    assert!(
        report.problems.iter().any(|p| p.contains("moved 0/400 in it but has no position")),
        "{:?}",
        report.problems
    );
    assert!(report.problems.iter().any(|p| p.contains("nets sum to -400")), "{:?}", report.problems);
}

#[test]
fn sqlite_survives_reopen_and_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    drop(open_sqlite(dir.path()));
    let conn = rusqlite::Connection::open(dir.path().join("paycore.db")).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = super::open_parts(dir.path(), &Options::default()).err().unwrap();
    // `known` is how many migrations this build has (each helper's branch adds its own).
    let known = i64::try_from(super::open::MIGRATIONS.len()).unwrap();
    assert!(matches!(err, StoreError::SchemaTooNew { found: 99, known: k } if k == known), "{err}");
    assert!(err.to_string().contains("newer paycore"), "{err}");
}

#[test]
fn verify_finds_a_payment_that_does_not_match_its_quote_or_whose_legs_are_missing() {
    use crate::FxStore;
    use paycore_ledger::fx::{Quote, Rate};
    use paycore_ledger::QuoteId;
    let dir = tempfile::tempdir().unwrap();
    let (mut store, reader) = open_sqlite(dir.path());
    let usd = Currency::from_code("USD").unwrap();
    let account = |id: u128, currency, overdraft| {
        Command::CreateAccount(NewAccount { id: AccountId(id), currency, overdraft, reference: None, metadata: None })
    };
    let mut state = State::default();
    step(
        &mut state,
        &mut store,
        10,
        vec![
            account(1, usd, Overdraft::Unlimited),
            account(2, usd, Overdraft::Limit(0)),
            account(3, eur(), Overdraft::Limit(0)),
        ],
    );
    let fund = NewTransfer {
        id: TransferId(100),
        linked: false,
        op: TransferOp::Move {
            debit_account: AccountId(1),
            credit_account: AccountId(2),
            amount: 1000,
            currency: usd,
            hold: None,
        },
    };
    reader
        .insert_quote(
            &Quote {
                id: QuoteId(5),
                tenant: T1,
                from: usd,
                to: eur(),
                rate: Rate::parse("0.9").unwrap(),
                source_amount: 100,
                target_amount: 90,
                fee: 1,
                created_at: 1,
                expires_at: 1_000,
                used_by: None,
            },
            None,
        )
        .unwrap();
    let payment = NewPayment {
        id: PaymentId(7),
        payer: Some(AccountId(2)),
        payee: AccountId(3),
        amount: 100,
        currency: usd,
        capture_method: CaptureMethod::Automatic,
        expires_in_seconds: 60,
        description: None,
        fx_quote: Some(QuoteId(5)),
        merchant: None,
    };
    step(&mut state, &mut store, 20, vec![Command::Transfer(fund), Command::CreatePayment(payment)]);
    step(&mut state, &mut store, 30, vec![Command::ConfirmPayment(PaymentId(7))]);
    let report = crate::verify::verify(reader.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!((report.payments, report.quotes, report.transfers), (1, 1, 4));

    // The payment claims more than its quote gave; another quote claims the payment.
    let conn = rusqlite::Connection::open(dir.path().join("paycore.db")).unwrap();
    conn.execute("UPDATE payments SET fx_amount = 91", []).unwrap();
    conn.execute(
        "INSERT INTO fx_quotes SELECT ?1, tenant, from_currency, to_currency, rate, source_amount, target_amount,
             fee, created_at, expires_at, used_by, batch FROM fx_quotes",
        [QuoteId(6).0.to_be_bytes()],
    )
    .unwrap();
    let report = crate::verify::verify(reader.as_ref()).unwrap();
    assert_eq!(report.problems.len(), 3, "{:?}", report.problems);
    assert!(report.problems[0].contains("does not match its quote"), "{:?}", report.problems);
    assert!(report.problems[1].contains("its payee was not paid 91"), "{:?}", report.problems);
    assert!(report.problems[2].contains("which does not name it"), "{:?}", report.problems);
}

#[test]
fn account_history_lists_every_transfer_whether_indexed_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, reader) = open_sqlite(dir.path());
    let mut state = State::default();
    step(&mut state, &mut store, 1, (1..=5).map(|a| open(a, Overdraft::Unlimited, None)).collect());
    let mut committed: Vec<(u128, u128, u128)> = Vec::new();
    let mut draw = testing::HistoryMoves::new(42);
    let check = |committed: &[(u128, u128, u128)], reader: &dyn Reader, page_size: usize| {
        testing::assert_histories(T1, reader, committed, 1..=5, page_size);
    };
    for batch in 0..24u128 {
        let transfers = draw.batch(batch);
        let moves = transfers.iter().map(|&(id, d, c)| mv(id, d, c, 1, None)).collect();
        step(&mut state, &mut store, 10 + u64::try_from(batch).unwrap(), vec![Command::Transfers(moves)]);
        committed.extend(transfers);
        // Indexed up to here every third batch; the background indexer may run at any time too.
        if batch % 3 == 0 {
            store.index_history(dir.path()).unwrap();
        }
        check(&committed, reader.as_ref(), 1 + usize::try_from(batch % 4).unwrap());
    }
    check(&committed, reader.as_ref(), 100);

    // history.db is derived: without it (or after it), listings are the same.
    drop((store, reader));
    std::fs::remove_file(dir.path().join("history.db")).unwrap();
    let _ = std::fs::remove_file(dir.path().join("history.db-wal"));
    let (mut store, reader) = open_sqlite(dir.path());
    check(&committed, reader.as_ref(), 3);
    store.index_history(dir.path()).unwrap();
    check(&committed, reader.as_ref(), 3);

    // A history ahead of the transfers (the database was replaced by an older copy) starts over.
    drop((store, reader));
    let history = rusqlite::Connection::open(dir.path().join("history.db")).unwrap();
    history.execute("UPDATE watermark SET timestamp = 1 << 62", []).unwrap();
    history.execute("DELETE FROM account_runs WHERE account = ?1", [AccountId(1).0.to_be_bytes()]).unwrap();
    drop(history);
    let (store, reader) = open_sqlite(dir.path());
    check(&committed, reader.as_ref(), 5);

    // A history of layout 2 (entries of timestamp and id, 24 bytes) is rebuilt at the next
    // start: read as layout 3, its entries would name wrong transfers.
    drop((store, reader));
    let history = rusqlite::Connection::open(dir.path().join("history.db")).unwrap();
    let layout2: Vec<u8> = [[0u8; 8], 7i64.to_be_bytes(), [0u8; 8]].concat();
    history.execute("UPDATE account_runs SET entries = ?1", [layout2]).unwrap();
    history.pragma_update(None, "user_version", 2).unwrap();
    drop(history);
    let (mut store, reader) = open_sqlite(dir.path());
    store.index_history(dir.path()).unwrap();
    check(&committed, reader.as_ref(), 5);
    let history = rusqlite::Connection::open(dir.path().join("history.db")).unwrap();
    let version: i64 = history.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    // A pass this small waits in the recent tier; every run there or merged is whole entries.
    let (runs, entry_bytes): (i64, i64) = history
        .query_row(
            "SELECT count(*), max(length(entries) % 8)
             FROM (SELECT entries FROM account_runs UNION ALL SELECT entries FROM recent_runs)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(runs > 0);
    assert_eq!((version, entry_bytes), (3, 0));
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
    let (mut store, reader) = open_sqlite(dir.path());
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
    assert_eq!(read(reader.as_ref()), current(&state), "readers see balances not yet checkpointed");

    // A crash now: nothing was checkpointed, everything is replayed.
    let image = crash_image(dir.path());
    {
        let (mut again, reader) = open_sqlite(image.path());
        let recovered = again.recover().unwrap();
        let balances: Vec<_> =
            (1..=3).map(|a| recovered.accounts.iter().find(|x| x.id == AccountId(a)).unwrap().balances).collect();
        assert_eq!(balances, current(&state));
        assert_eq!(read(reader.as_ref()), current(&state));
        assert!(crate::verify::verify(reader.as_ref()).unwrap().ok());
    }

    // After a checkpoint (a commit a second later), only the batches after it are replayed.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    pay(&mut state, &mut store, 30, 200);
    pay(&mut state, &mut store, 40, 300);
    assert_eq!(read(reader.as_ref()), current(&state));
    let image = crash_image(dir.path());
    let rows = rusqlite::Connection::open(image.path().join("paycore.db")).unwrap();
    // A shard's checkpoint, or all of them at once.
    let through: i64 =
        rows.query_row("SELECT max(value) FROM meta WHERE key LIKE 'balances_through%'", [], |r| r.get(0)).unwrap();
    assert!(through > 0, "a checkpoint was written");
    drop(rows);
    let (mut again, reader) = open_sqlite(image.path());
    let report = crate::verify::verify(reader.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    again.recover().unwrap();
    assert_eq!(read(reader.as_ref()), current(&state));
}

/// Balances are checkpointed a shard of the accounts at a time, so after a crash each account's
/// row is valid at its own shard's timestamp: recovery replays each transfer only on the sides
/// whose rows are older than it (holds and their posts included), and `verify` agrees.
#[test]
fn balances_checkpointed_shard_by_shard_are_replayed_side_by_side_after_a_crash() {
    const ACCOUNTS: u128 = 48;
    let dir = tempfile::tempdir().unwrap();
    let (mut store, reader) = open_sqlite(dir.path());
    let mut state = State::default();
    step(&mut state, &mut store, 10, (1..=ACCOUNTS).map(|a| open(a, Overdraft::Unlimited, None)).collect());
    let current =
        |state: &State| (1..=ACCOUNTS).map(|a| state.account(AccountId(a)).unwrap().balances).collect::<Vec<_>>();
    let mut seed = 7_u64;
    let mut next = move |below: u128| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        u128::from(seed >> 33) % below
    };
    let mut holds = Vec::new();
    let mut shard_keys_seen = 0;
    for round in 0..30_u64 {
        let first = 1_000 + u128::from(round) * 100;
        let mut transfers = Vec::new();
        for i in 0..6 {
            let debit = 1 + next(ACCOUNTS);
            let credit = 1 + (debit + next(ACCOUNTS - 1)) % ACCOUNTS;
            let hold = (i == 0).then_some(Hold { timeout_seconds: Some(3600) });
            if hold.is_some() {
                holds.push(first + i);
            }
            transfers.push(mv(first + i, debit, credit, 10 + u64::try_from(next(90)).unwrap(), hold));
        }
        // A hold placed some rounds ago is posted in part: its sides may sit in two shards
        // checkpointed at different times.
        if round >= 3 {
            let pending_id = TransferId(holds[usize::try_from(round).unwrap() - 3]);
            transfers.push(NewTransfer {
                id: TransferId(first + 50),
                linked: false,
                op: TransferOp::Post { pending_id, amount: Some(5) },
            });
        }
        step(&mut state, &mut store, 100 + round * 10, vec![Command::Transfers(transfers)]);
        // A shard is checkpointed every 1/16 s: about one a round.
        std::thread::sleep(std::time::Duration::from_millis(70));
        if round % 7 == 6 {
            let image = crash_image(dir.path());
            let rows = rusqlite::Connection::open(image.path().join("paycore.db")).unwrap();
            let shards: Vec<i64> = rows
                .prepare("SELECT value FROM meta WHERE key LIKE 'balances_through/%'")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            drop(rows);
            shard_keys_seen = shard_keys_seen.max(shards.len());
            let (mut again, reader) = open_sqlite(image.path());
            let report = crate::verify::verify(reader.as_ref()).unwrap();
            assert!(report.ok(), "round {round}, before recovery: {:?}", report.problems);
            let recovered = again.recover().unwrap();
            let balances: Vec<_> = (1..=ACCOUNTS)
                .map(|a| recovered.accounts.iter().find(|x| x.id == AccountId(a)).unwrap().balances)
                .collect();
            assert_eq!(balances, current(&state), "round {round}: recovered balances");
            let report = crate::verify::verify(reader.as_ref()).unwrap();
            assert!(report.ok(), "round {round}, after recovery: {:?}", report.problems);
        }
    }
    assert!(shard_keys_seen >= 4, "shards were checkpointed apart: {shard_keys_seen} keys");
    let read = (1..=ACCOUNTS).map(|a| reader.account(T1, AccountId(a)).unwrap().unwrap().balances).collect::<Vec<_>>();
    assert_eq!(read, current(&state));
    // A clean shutdown checkpoints every shard at once: one key, nothing to replay.
    drop((store, reader));
    let rows = rusqlite::Connection::open(dir.path().join("paycore.db")).unwrap();
    let keys: i64 =
        rows.query_row("SELECT count(*) FROM meta WHERE key LIKE 'balances_through%'", [], |r| r.get(0)).unwrap();
    assert_eq!(keys, 1, "the shards' keys are folded into one at shutdown");
}

/// A data folder written before item results became runs (schema 5, statuses on the item rows)
/// reads the same after the migration: every item keeps its status and failure code.
#[test]
fn item_statuses_survive_the_move_to_result_runs() {
    use crate::BatchStore;
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("paycore.db")).unwrap();
    for migration in [
        include_str!("migrations/0001_init.sql"),
        include_str!("migrations/0002_batches.sql"),
        include_str!("migrations/0003_tenants_webhooks.sql"),
        include_str!("migrations/0004_history_out_of_commit.sql"),
        include_str!("migrations/0005_balances_checkpoint.sql"),
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
    let (_store, reader) = open_sqlite(dir.path());
    let items = reader.batch_items(batch, &[], None, 100).unwrap();
    let now: Vec<(&str, Option<&str>)> = items.iter().map(|i| (i.status.as_str(), i.failure_code.as_deref())).collect();
    assert_eq!(now, old);
    let voided: Vec<u64> =
        reader.batch_items(batch, &[ItemStatus::Voided], None, 100).unwrap().iter().map(|i| i.index).collect();
    assert_eq!(voided, [3, 5]);
}

/// The listing of active batches and the claim of a batch are served by their partial index (a
/// bound status would not be): the plan names the index. Item blocks are read by their key.
#[test]
fn status_listings_use_their_partial_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, reader) = open_sqlite(dir.path());
    let plan = |sql: &str| -> String {
        reader
            .with(|conn| {
                let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let rows = stmt.query_map([], |row| row.get::<_, String>(3))?.collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows.join(" / "))
            })
            .unwrap()
    };
    // Item blocks are found by their key's index, from the block that holds the first index
    // wanted: no block before it is read.
    for sql in [super::blocks::BLOCKS_SQL, super::blocks::INVALID_BLOCKS_SQL] {
        let sql = sql.replace("?1", "x'00'").replace("?2", "0").replace("?3", "10");
        let plan = plan(&sql);
        assert!(
            plan.contains(
                "SEARCH batch_item_blocks USING INDEX batch_item_blocks_key (batch=? AND first>? AND first<?)"
            ) || plan.contains("SEARCH batch_item_blocks USING INDEX batch_item_blocks_key (batch=? AND first>?)"),
            "{plan}"
        );
        assert!(!plan.contains("SCAN"), "{plan}");
    }
    assert!(
        plan(super::batches::ACTIVE_BATCHES_SQL).contains("batches_active"),
        "{}",
        plan(super::batches::ACTIVE_BATCHES_SQL)
    );
    // The claim loop's look for a free batch, every second on every node.
    let claimable = super::leases::CLAIMABLE.replace("?1", "0");
    assert!(plan(&claimable).contains("batches_active"), "{}", plan(&claimable));
}

/// `0014_qr.sql` rebuilds `payments` to make `payer` nullable: a payment stored before it
/// comes through whole (its FX side included), and a payment without a payer stores NULL.
#[test]
fn the_payments_rebuild_keeps_every_stored_payment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join("paycore.db")).unwrap();
        let before = super::open::MIGRATIONS.len() - 1;
        for sql in &super::open::MIGRATIONS[..before] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", before).unwrap();
        conn.execute(
            "INSERT INTO payments (id, tenant, payer, payee, amount, currency, capture_method, status,
                 description, amount_captured, amount_refunded, expires_at, created_at, updated_at,
                 fx_quote, fx_rate, fx_currency, fx_amount, fx_fee)
             VALUES (?1, ?2, ?3, ?4, 1250, 'EUR', 'manual', 'requires_capture', 'order 7', 0, 0, 9, 5, 6,
                 ?5, '1.0842', 'USD', 1355, 4)",
            rusqlite::params![
                PaymentId(7).0.to_be_bytes(),
                T1.0.to_be_bytes(),
                AccountId(1).0.to_be_bytes(),
                AccountId(2).0.to_be_bytes(),
                3u128.to_be_bytes()
            ],
        )
        .unwrap();
    }
    let (_store, reader) = open_sqlite(dir.path());
    let payment = reader.payment(T1, PaymentId(7)).unwrap().unwrap();
    assert_eq!((payment.payer, payment.payee), (Some(AccountId(1)), AccountId(2)));
    assert_eq!((payment.amount, payment.description.as_deref(), payment.expires_at), (1250, Some("order 7"), 9));
    assert_eq!(payment.fx.map(|fx| (fx.target_amount, fx.fee)), Some((1355, 4)));

    let conn = rusqlite::Connection::open(dir.path().join("paycore.db")).unwrap();
    let nullable: i64 = conn
        .query_row("SELECT \"notnull\" FROM pragma_table_info('payments') WHERE name = 'payer'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(nullable, 0);
    let indexes: i64 = conn
        .query_row("SELECT count(*) FROM pragma_index_list('payments') WHERE name = 'payments_open'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(indexes, 1);
}

/// A full disk, at whichever write meets it first (a commit's WAL append, or a checkpoint that
/// cannot grow the database file so that the WAL must grow instead): the commit is refused as
/// `Full` and writes nothing, reads and recovery go on without writing, and once room returns
/// the same store commits again, with nothing lost (`verify` passes).
#[test]
fn a_full_disk_refuses_commits_as_full_and_the_store_goes_on_when_room_returns() {
    let Some(disk) = crate::testing::SmallDisk::mount("a_full_disk_refuses_commits_as_full", 4096) else { return };
    let (mut store, reader) = open_sqlite(disk.path());
    let mut state = State::default();
    step(&mut state, &mut store, 10, (1..=2).map(|a| open(a, Overdraft::Unlimited, None)).collect());
    let balance = |reader: &dyn Reader| reader.account(T1, AccountId(2)).unwrap().unwrap().balances.credits_posted;
    // One batch of 40 transfers of 1 from account 1 to 2; whether the store took it.
    let mut next_id = 1_000_u128;
    let mut now = 100;
    let mut batch = |state: &mut State, store: &mut SqliteStore| -> Result<(), StoreError> {
        let transfers = (0..40).map(|i| mv(next_id + i, 1, 2, 1, None)).collect();
        next_id += 40;
        now += 10;
        let requests = vec![Request { tenant: T1, command: Command::Transfers(transfers) }];
        let loaded = store.load(&state.prefetch(&requests))?;
        state.insert_prefetched(loaded.transfers, loaded.holds, loaded.payments);
        state.execute(&requests, now);
        store.commit(&state.take_changes(), &[])
    };
    let mut committed = 0;
    for _ in 0..5 {
        batch(&mut state, &mut store).unwrap();
        committed += 40;
    }
    assert_eq!(balance(reader.as_ref()), committed);

    let filled = disk.fill();
    assert!(filled > 0 && disk.is_full(), "the filler took the room that was left");
    let mut refused = None;
    for _ in 0..2_000 {
        match batch(&mut state, &mut store) {
            Ok(()) => committed += 40,
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    assert!(refused.is_some(), "no commit on a full disk was refused");
    let refused = refused.unwrap();
    assert!(matches!(refused, StoreError::Full(_)), "{refused:?}");
    assert!(refused.is_transient());

    // Reads see exactly what was committed, and recovery (the engine's rebuild) needs no room.
    assert_eq!(balance(reader.as_ref()), committed);
    let recovered = store.recover().unwrap();
    let stored = |id: u128| recovered.accounts.iter().find(|a| a.id == AccountId(id)).unwrap().balances;
    assert_eq!(stored(2).credits_posted, committed);
    assert_eq!(stored(1).debits_posted, committed);
    let recover = |recovered: crate::Recovered| {
        let mut state =
            State::recover(recovered.accounts, recovered.open_holds, recovered.open_payments, recovered.last_timestamp);
        state.set_stored_transfer_id_max(recovered.max_transfer_id);
        state.set_stored_payment_id_max(recovered.max_payment_id);
        state
    };
    state = recover(recovered);
    // Still full: refused again, nothing written.
    let again = batch(&mut state, &mut store).unwrap_err();
    assert!(matches!(again, StoreError::Full(_)), "{again:?}");
    state = recover(store.recover().unwrap());
    assert_eq!(balance(reader.as_ref()), committed);

    disk.free();
    for _ in 0..3 {
        batch(&mut state, &mut store).unwrap();
        committed += 40;
    }
    assert_eq!(balance(reader.as_ref()), committed);
    assert_eq!(state.account(AccountId(2)).unwrap().balances.credits_posted, committed);
    drop((store, reader));
    let (_store, reader) = open_sqlite(disk.path());
    assert_eq!(balance(reader.as_ref()), committed);
    let report = crate::verify::verify(reader.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}

/// `0022_transfers_by_timestamp.sql` rebuilds `transfers` keyed by its timestamp: every stored
/// transfer comes through whole and is found by id, an account's listing keeps timestamp
/// order though the ids do not follow it, a hold still joins its transfer, recovery replays
/// the stored transfers onto the balances (a post resolving its hold by id), and finds the
/// last timestamp and the highest id.
#[test]
fn the_transfers_rebuild_keeps_every_stored_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let blob = |id: u128| id.to_be_bytes();
    {
        let conn = rusqlite::Connection::open(dir.path().join("paycore.db")).unwrap();
        let before = 21; // the migrations before 0022
        for sql in &super::open::MIGRATIONS[..before] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", before).unwrap();
        for account in [1u128, 2] {
            conn.execute(
                "INSERT INTO accounts (id, tenant, currency, debits_posted, credits_posted, debits_pending,
                     credits_pending, created_at) VALUES (?1, ?2, 'EUR', 0, 0, 0, 0, 1)",
                rusqlite::params![blob(account), blob(T1.0)],
            )
            .unwrap();
        }
        // (id, kind, amount, pending_id, expires_at, timestamp): ids out of timestamp order.
        type Row = (u128, &'static str, i64, Option<u128>, Option<i64>, i64);
        let rows: [Row; 3] = [
            (30, "single", 5, None, None, 100),
            (10, "pending", 7, None, Some(9_000), 200),
            (20, "post_pending", 7, Some(10), None, 300),
        ];
        for (id, kind, amount, pending, expires_at, timestamp) in rows {
            conn.execute(
                "INSERT INTO transfers (id, tenant, debit_account, credit_account, amount, currency, kind,
                     pending_id, expires_at, timestamp) VALUES (?1, ?2, ?3, ?4, ?5, 'EUR', ?6, ?7, ?8, ?9)",
                rusqlite::params![
                    blob(id),
                    blob(T1.0),
                    blob(1),
                    blob(2),
                    amount,
                    kind,
                    pending.map(blob),
                    expires_at,
                    timestamp
                ],
            )
            .unwrap();
        }
        conn.execute("INSERT INTO holds (id, status) VALUES (?1, 'posted')", [blob(10)]).unwrap();
        conn.execute("INSERT INTO meta (key, value) VALUES ('last_timestamp', 300)", []).unwrap();
    }
    let (mut store, reader) = open_sqlite(dir.path());
    let recovered = store.recover().unwrap();
    assert_eq!((recovered.last_timestamp, recovered.max_transfer_id), (300, Some(TransferId(30))));
    let held = reader.transfer(T1, TransferId(10)).unwrap().unwrap();
    assert_eq!((held.kind.as_str(), held.amount, held.expires_at, held.timestamp), ("pending", 7, Some(9_000), 200));
    let post = reader.transfer(T1, TransferId(20)).unwrap().unwrap();
    assert_eq!((post.kind.as_str(), post.pending_id, post.timestamp), ("post_pending", Some(TransferId(10)), 300));
    let listed: Vec<u128> = reader
        .account_transfers(T1, AccountId(1), Page { after: None, limit: 10 })
        .unwrap()
        .iter()
        .map(|t| t.id.0)
        .collect();
    assert_eq!(listed, [20, 10, 30]);
    let balances = |id| reader.account(T1, AccountId(id)).unwrap().unwrap().balances;
    assert_eq!((balances(1).debits_posted, balances(1).debits_pending), (12, 0));
    assert_eq!((balances(2).credits_posted, balances(2).credits_pending), (12, 0));
    let loaded = store
        .load(&paycore_ledger::Prefetch { transfers: vec![TransferId(10), TransferId(99)], ..Default::default() })
        .unwrap();
    assert_eq!(loaded.transfers.iter().map(|t| t.id).collect::<Vec<_>>(), [TransferId(10)]);

    let conn = rusqlite::Connection::open(dir.path().join("paycore.db")).unwrap();
    let key: String =
        conn.query_row("SELECT name FROM pragma_table_info('transfers') WHERE pk = 1", [], |r| r.get(0)).unwrap();
    assert_eq!(key, "timestamp");
    let indexes: Vec<(String, i64)> = conn
        .prepare("SELECT name, \"unique\" FROM pragma_index_list('transfers') ORDER BY name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(indexes, [("transfers_id".to_owned(), 1)]);
}

/// A commit writes `meta.last_timestamp` only when its last timestamp is not a transfer's (one
/// page fewer in most commits); recovery takes the later of that row and the last transfer's
/// timestamp, so a restarted ledger never gives out a timestamp twice.
#[test]
fn the_last_timestamp_survives_a_restart_with_or_without_its_meta_row() {
    let dir = tempfile::tempdir().unwrap();
    let meta = || -> Option<i64> {
        let conn = rusqlite::Connection::open(dir.path().join("paycore.db")).unwrap();
        conn.query_row("SELECT value FROM meta WHERE key = 'last_timestamp'", [], |r| r.get(0)).ok()
    };
    let mut state = State::default();
    {
        let (mut store, _reader) = open_sqlite(dir.path());
        step(
            &mut state,
            &mut store,
            10,
            vec![open(1, Overdraft::Unlimited, None), open(2, Overdraft::Unlimited, None)],
        );
        assert_eq!(meta(), Some(11), "the accounts took the last timestamps");
        step(&mut state, &mut store, 50, vec![Command::Transfers(vec![mv(100, 1, 2, 5, None)])]);
        assert_eq!(meta(), Some(11), "the transfer carries the batch's last timestamp");
    }
    let (mut store, _reader) = open_sqlite(dir.path());
    assert_eq!(store.recover().unwrap().last_timestamp, 50);
    step(
        &mut state,
        &mut store,
        60,
        vec![Command::Transfers(vec![mv(101, 1, 2, 5, None)]), open(3, Overdraft::Unlimited, None)],
    );
    assert_eq!(meta(), Some(61), "an account took the batch's last timestamp, after its transfer");
    drop(store);
    let (mut store, _reader) = open_sqlite(dir.path());
    assert_eq!(store.recover().unwrap().last_timestamp, 61);
    assert_eq!(state.last_timestamp(), 61);
}

/// A batch's transfers go in by statements of 64 rows: a chunk of alike transfers (one tenant,
/// currency and kind, no pending id or expiry) binds those columns once per statement; a chunk
/// with a hold in it, and the rows after the last full chunk, bind every column. Every transfer
/// reads back whole, with its own amount and timestamp.
#[test]
fn every_transfer_of_a_large_batch_reads_back_as_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, reader) = open_sqlite(dir.path());
    let mut state = State::default();
    step(&mut state, &mut store, 10, vec![open(1, Overdraft::Unlimited, None), open(2, Overdraft::Unlimited, None)]);
    let hold = 100; // in the second chunk
    let transfers = (0..138u64)
        .map(|i| mv(1_000 + u128::from(i), 1, 2, 1 + i, (i == hold).then_some(Hold { timeout_seconds: Some(60) })));
    step(&mut state, &mut store, 1_000, vec![Command::Transfers(transfers.collect())]);
    for i in 0..138u64 {
        let t = reader.transfer(T1, TransferId(1_000 + u128::from(i))).unwrap().unwrap();
        let kind = if i == hold { "pending" } else { "single" };
        let expires_at = (i == hold).then_some(1_000 + 60_000_000_000); // the batch's now + 60 s
        assert_eq!(
            (t.tenant, t.debit_account, t.credit_account, t.amount, t.currency, t.kind.as_str()),
            (T1, AccountId(1), AccountId(2), 1 + i, eur(), kind),
            "transfer {i}"
        );
        assert_eq!((t.pending_id, t.expires_at, t.timestamp), (None, expires_at, 1_000 + i), "transfer {i}");
    }
}

/// Transfers a `State` executes and the commit of what they changed, or the commit's error.
fn try_step(state: &mut State, store: &mut dyn Store, now: u64, commands: Vec<Command>) -> crate::Result<()> {
    let requests: Vec<Request> = commands.into_iter().map(|command| Request { tenant: T1, command }).collect();
    state.execute(&requests, now);
    store.commit(&state.take_changes(), &[])
}

fn transfer_count(dir: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(dir.join("paycore.db")).unwrap();
    conn.query_row("SELECT count(*) FROM transfers", [], |r| r.get(0)).unwrap()
}

/// A chunk of alike transfers whose timestamps are not consecutive (an account opened between
/// them took one) binds every row's timestamp; the chunk after it, consecutive, lets SQLite
/// give rows 2.. the next key. Both read back with the timestamps the ledger gave them.
#[test]
fn alike_transfers_keep_their_timestamps_with_or_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, reader) = open_sqlite(dir.path());
    let mut state = State::default();
    step(&mut state, &mut store, 10, vec![open(1, Overdraft::Unlimited, None), open(2, Overdraft::Unlimited, None)]);
    let transfers = |from: u64, count: u64| {
        Command::Transfers((from..from + count).map(|i| mv(1_000 + u128::from(i), 1, 2, 1 + i, None)).collect())
    };
    // 30 transfers, an account, then 98: the first chunk of 64 has a gap after its 30th row,
    // the second (rows 64..128) none.
    step(&mut state, &mut store, 1_000, vec![transfers(0, 30), open(3, Overdraft::Unlimited, None), transfers(30, 98)]);
    for i in 0..128u64 {
        let t = reader.transfer(T1, TransferId(1_000 + u128::from(i))).unwrap().unwrap();
        let timestamp = if i < 30 { 1_000 + i } else { 1_001 + i };
        assert_eq!((t.amount, t.timestamp, t.debit_account), (1 + i, timestamp, AccountId(1)), "transfer {i}");
    }
    let by_time: Vec<(i64, i64)> = rusqlite::Connection::open(dir.path().join("paycore.db"))
        .unwrap()
        .prepare("SELECT timestamp, amount FROM transfers ORDER BY timestamp")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(by_time.len(), 128);
    assert_eq!((by_time[29], by_time[30], by_time[127]), ((1_029, 30), (1_031, 31), (1_128, 128)));
    let report = crate::verify::verify(reader.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}

/// SQLite makes the keys of a consecutive chunk's rows 2.. from the table's last key: a
/// stored transfer later than the batch (a store the ledger's clock did not write) would give
/// them keys they were not given. The commit fails as corrupt instead, and keeps nothing.
#[test]
fn a_stored_transfer_later_than_the_batch_fails_the_commit_and_keeps_none_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, reader) = open_sqlite(dir.path());
    let mut state = State::default();
    step(&mut state, &mut store, 10, vec![open(1, Overdraft::Unlimited, None), open(2, Overdraft::Unlimited, None)]);
    let conn = rusqlite::Connection::open(dir.path().join("paycore.db")).unwrap();
    conn.execute(
        "INSERT INTO transfers (id, tenant, debit_account, credit_account, amount, currency, kind, timestamp)
         VALUES (?1, ?2, ?3, ?4, 5, 'EUR', 'single', 1000000)",
        [TransferId(9).0.to_be_bytes(), T1.0.to_be_bytes(), AccountId(1).0.to_be_bytes(), AccountId(2).0.to_be_bytes()],
    )
    .unwrap();
    let transfers = (0..64u64).map(|i| mv(1_000 + u128::from(i), 1, 2, 1 + i, None)).collect();
    let error = try_step(&mut state, &mut store, 1_000, vec![Command::Transfers(transfers)]).unwrap_err();
    assert!(matches!(&error, StoreError::Corrupt(m) if m.contains("after 1000")), "{error}");
    assert_eq!(transfer_count(dir.path()), 1);
    assert!(reader.transfer(T1, TransferId(1_000)).unwrap().is_none());
}

/// A chunk of alike transfers with an id stored already is a conflict (`INSERT OR ROLLBACK`
/// ends the transaction), keeps nothing of its commit, and the store commits the next batch.
#[test]
fn a_stored_id_in_a_chunk_of_alike_transfers_is_a_conflict_and_the_store_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, reader) = open_sqlite(dir.path());
    let mut state = State::default();
    step(&mut state, &mut store, 10, vec![open(1, Overdraft::Unlimited, None), open(2, Overdraft::Unlimited, None)]);
    let chunk = |from: u128| Command::Transfers((from..from + 64).map(|i| mv(i, 1, 2, 7, None)).collect());
    step(&mut state, &mut store, 1_000, vec![chunk(1_000)]);
    // A second ledger that does not know the first 64 ids (nothing loaded): its chunk repeats
    // one of them.
    let mut other = State::default();
    other.execute(
        &[
            Request { tenant: T1, command: open(1, Overdraft::Unlimited, None) },
            Request { tenant: T1, command: open(2, Overdraft::Unlimited, None) },
        ],
        2_000,
    );
    drop(other.take_changes());
    // Ids 990..1054: the 11th row's id, 1000, is stored.
    let error = try_step(&mut other, &mut store, 3_000, vec![chunk(990)]).unwrap_err();
    assert!(matches!(error, StoreError::Conflict(_)), "{error}");
    assert_eq!(transfer_count(dir.path()), 64);
    assert!(reader.transfer(T1, TransferId(990)).unwrap().is_none());
    step(&mut state, &mut store, 4_000, vec![chunk(2_000)]);
    assert_eq!(transfer_count(dir.path()), 128);
    assert_eq!(reader.transfer(T1, TransferId(2_063)).unwrap().unwrap().timestamp, 4_063);
}

/// Migration 0023 moves a store's item rows (one per item, stored narrower than they read:
/// a valid item's payer text NULL for the batch's payer, its payee text empty for the payee's
/// own id, its location empty for `line N`) into blocks, and drops the old table: every item
/// reads back as it read before, with the status its results give it.
#[test]
fn item_rows_of_schema_22_move_into_blocks_and_read_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(super::open::DATABASE_FILE)).unwrap();
    for migration in &super::open::MIGRATIONS[..22] {
        conn.execute_batch(migration).unwrap();
    }
    conn.pragma_update(None, "user_version", 22).unwrap();
    let batch = BatchId(43 << 64);
    let payer = AccountId(1).to_string();
    conn.execute(
        "INSERT INTO batches (id, tenant, status, format, mode, on_invalid, payer, total, invalid, created_at)
         VALUES (?1, ?2, 'processing', 'csv', 'best_effort', 'skip_invalid', ?3, 5000, 2, 1)",
        rusqlite::params![batch.0.to_be_bytes(), T1.0.to_be_bytes(), payer],
    )
    .unwrap();
    // Items 0..=99 succeeded (one run), the rest pending; 7 and 4 500 invalid.
    conn.execute(
        "INSERT INTO batch_results (batch, phase, first, last, status) VALUES (?1, 0, 0, 99, 'succeeded')",
        [batch.0.to_be_bytes()],
    )
    .unwrap();
    let payee = AccountId(2);
    let mut expected = Vec::new();
    conn.execute_batch("BEGIN").unwrap();
    for index in 0..5_000u64 {
        let invalid = index == 7 || index == 4_500;
        let odd = index % 100 == 42; // texts as given: another payer, a payee by reference, a location
        let stored = (
            if odd { format!("record {index}") } else { String::new() },
            if odd { Some("someone".to_owned()) } else { None::<String> },
            if odd { "supplier-2".to_owned() } else { String::new() },
        );
        conn.execute(
            "INSERT INTO batch_items (batch, idx, line, location, reference, payer_text, payee_text, payer, payee,
                 amount, currency, status, failure_code, message, remittance)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'EUR', ?11, ?12, ?13, ?14)",
            rusqlite::params![
                batch.0.to_be_bytes(),
                index as i64,
                index as i64 + 2,
                stored.0,
                format!("inv-{index}"),
                if invalid { Some(payer.clone()) } else { stored.1.clone() },
                if invalid { "nobody".to_owned() } else { stored.2.clone() },
                AccountId(1).0.to_be_bytes(),
                (!invalid).then(|| payee.0.to_be_bytes()),
                100 + index as i64,
                if invalid { "invalid" } else { "pending" },
                invalid.then_some("account_not_found"),
                invalid.then_some("payee: no account"),
                (index % 9 == 0).then(|| format!("Invoice {index}")),
            ],
        )
        .unwrap();
        expected.push(BatchItemRow {
            index,
            line: index + 2,
            location: if odd { format!("record {index}") } else { format!("line {}", index + 2) },
            reference: Some(format!("inv-{index}")),
            instruction_id: None,
            payment_information_id: None,
            payer_text: if odd && !invalid { Some("someone".into()) } else { Some(payer.clone()) },
            payee_text: Some(match (invalid, odd) {
                (true, _) => "nobody".to_owned(),
                (false, true) => "supplier-2".to_owned(),
                (false, false) => payee.to_string(),
            }),
            payer: Some(AccountId(1)),
            payee: (!invalid).then_some(payee),
            amount: Some(100 + index),
            currency: Some(eur()),
            status: match (invalid, index) {
                (true, _) => ItemStatus::Invalid,
                (false, 0..=99) => ItemStatus::Succeeded,
                _ => ItemStatus::Pending,
            },
            failure_code: invalid.then(|| "account_not_found".to_owned()),
            message: invalid.then(|| "payee: no account".to_owned()),
            remittance: (index % 9 == 0).then(|| format!("Invoice {index}")),
        });
    }
    conn.execute_batch("COMMIT").unwrap();
    drop(conn);
    let (_store, reader) = open_sqlite(dir.path());
    assert_eq!(reader.batch_items(batch, &[], None, 10_000).unwrap(), expected);
    let invalid: Vec<u64> =
        reader.batch_items(batch, &[ItemStatus::Invalid], None, 10).unwrap().iter().map(|i| i.index).collect();
    assert_eq!(invalid, [7, 4_500]);
    let (blocks, old): (i64, i64) = reader
        .with(|conn| {
            Ok((
                conn.query_row("SELECT count(*) FROM batch_item_blocks", [], |r| r.get(0))?,
                conn.query_row("SELECT count(*) FROM sqlite_schema WHERE name = 'batch_items'", [], |r| r.get(0))?,
            ))
        })
        .unwrap();
    let full = (5_000 / super::blocks::BLOCK_ITEMS) as i64;
    assert_eq!((blocks, old), (full + 1, 0), "full blocks and one of what is left; the old table gone");
}

/// `0025_accounts_by_shard.sql` rebuilds `accounts` keyed by (shard, id), computing the shard
/// in SQL from the id's text: for ids across the whole range (every low nibble of both halves,
/// the extremes, random ones), the stored shard is `balance_shard`'s, every column comes
/// through, a point lookup by id is one descent of the key, and the reader finds each account.
#[test]
fn the_accounts_rebuild_keys_each_account_by_its_balance_shard() {
    use crate::verify::balance_shard;
    let dir = tempfile::tempdir().unwrap();
    let mut ids: Vec<u128> = vec![0, 1, u128::MAX, 1 << 64, (1 << 64) - 1, u128::MAX >> 1];
    for hi in 0..16u128 {
        for lo in 0..16u128 {
            ids.push((hi << 64) | lo | (0xabcd_u128 << 100));
        }
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..500 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let a = u128::from(seed);
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ids.push((a << 64) | u128::from(seed));
    }
    ids.sort_unstable();
    ids.dedup();
    {
        let conn = rusqlite::Connection::open(dir.path().join("paycore.db")).unwrap();
        let before = 24; // the migrations before 0025
        for sql in &super::open::MIGRATIONS[..before] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", before).unwrap();
        for (n, id) in ids.iter().enumerate() {
            let n = i64::try_from(n).unwrap();
            conn.execute(
                "INSERT INTO accounts (id, tenant, currency, overdraft_limit, reference, metadata, debits_posted,
                     credits_posted, debits_pending, credits_pending, created_at, status, max_payment,
                     daily_outflow, velocity_count, velocity_window_seconds)
                 VALUES (?1, ?2, 'EUR', ?3, ?4, '{\"k\":1}', ?5, ?6, ?7, ?8, ?9, 'frozen', 500, 9000, 3, 60)",
                rusqlite::params![
                    id.to_be_bytes(),
                    T1.0.to_be_bytes(),
                    (n % 2 == 0).then_some(n),
                    format!("ref-{n}"),
                    n,
                    n * 2,
                    n * 3,
                    n * 5,
                    n + 1
                ],
            )
            .unwrap();
        }
    }
    let (_store, reader) = open_sqlite(dir.path());
    let stored: Vec<(i64, u128)> = reader
        .with(|conn| {
            let mut stmt = conn.prepare("SELECT shard, id FROM accounts")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, u128::from_be_bytes(r.get::<_, [u8; 16]>(1)?))))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .unwrap();
    assert_eq!(stored.len(), ids.len());
    for (shard, id) in &stored {
        assert_eq!(*shard, i64::try_from(balance_shard(AccountId(*id))).unwrap(), "account {id:#x}");
    }
    // Stored in (shard, id) order: a shard's rows side by side.
    assert!(stored.windows(2).all(|w| w[0] < w[1]));
    for (n, id) in ids.iter().enumerate() {
        let n = u64::try_from(n).unwrap();
        let account = reader.account(T1, AccountId(*id)).unwrap().unwrap();
        assert_eq!(account.reference.as_deref(), Some(format!("ref-{n}").as_str()));
        assert_eq!((account.balances.debits_posted, account.balances.credits_posted), (n, n * 2), "account {id:#x}");
        assert_eq!(
            (account.balances.debits_pending, account.balances.credits_pending, account.created_at),
            (n * 3, n * 5, n + 1)
        );
        assert_eq!(account.overdraft, if n % 2 == 0 { Overdraft::Limit(n) } else { Overdraft::Unlimited });
        assert_eq!(
            (account.status.as_str(), account.limits.max_payment, account.limits.daily_outflow),
            ("frozen", Some(500), Some(9000))
        );
        assert_eq!(account.limits.velocity.map(|v| (v.count, v.window_seconds)), Some((3, 60)));
        assert_eq!(account.metadata.as_deref(), Some("{\"k\":1}"));
    }
    // The reference index came back with the table.
    let found = reader.find_account(T1, "ref-7", None).unwrap().unwrap();
    assert_eq!(found.id, AccountId(ids[7]));
    // A lookup by id names the shard: one descent of the key, no scan.
    let plan = reader
        .with(|conn| {
            let mut stmt = conn.prepare(
                "EXPLAIN QUERY PLAN SELECT * FROM accounts WHERE shard = 3 AND id = x'00' AND tenant = x'00'",
            )?;
            let rows = stmt.query_map([], |row| row.get::<_, String>(3))?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows.join(" / "))
        })
        .unwrap();
    assert!(plan.contains("SEARCH accounts USING PRIMARY KEY (shard=? AND id=?)"), "{plan}");
}
