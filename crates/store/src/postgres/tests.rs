//! What only the PostgreSQL store has, or what needs its SQL to set up: the writer lock across
//! reopenings, schema versions, tampered and undecodable rows, and the pool's bound. Each test
//! makes its own database (see [`crate::testing`]) and skips loudly without a server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::reader::PostgresReader;
use crate::testing::TestDatabase;
use crate::{Opened, Options, Reader, Store, StoreError};
use paycore_ledger::{
    AccountId, Command, Currency, NewAccount, NewTransfer, Overdraft, Request, State, TenantId, TransferId, TransferOp,
};
use postgres::{Client, NoTls};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const T1: TenantId = TenantId(1);

fn eur() -> Currency {
    Currency::from_code("EUR").unwrap()
}

/// Executes `commands` as one batch of tenant 1, as the engine does, and commits it.
fn step(state: &mut State, store: &mut dyn Store, now: u64, commands: Vec<Command>) {
    crate::testing::step(state, store, T1, now, commands).1.unwrap();
}

/// Opens an EUR account without an overdraft limit.
fn open(id: u128) -> Command {
    Command::CreateAccount(NewAccount {
        id: AccountId(id),
        currency: eur(),
        overdraft: Overdraft::Unlimited,
        reference: None,
        metadata: None,
    })
}

/// Two accounts and a move of 1 000 between them.
fn some_money(store: &mut dyn Store) {
    let mut state = State::default();
    step(&mut state, store, 10, vec![open(1), open(2)]);
    let transfer = NewTransfer {
        id: TransferId(100),
        linked: false,
        op: TransferOp::Move {
            debit_account: AccountId(1),
            credit_account: AccountId(2),
            amount: 1000,
            currency: eur(),
            hold: None,
        },
    };
    step(&mut state, store, 20, vec![Command::Transfers(vec![transfer])]);
}

fn sql(database: &TestDatabase) -> Client {
    Client::connect(database.url(), NoTls).unwrap()
}

#[test]
fn verify_finds_a_tampered_balance() {
    let Some(database) = TestDatabase::create("verify_finds_a_tampered_balance") else { return };
    let Opened { mut store, api } = crate::open(database.url()).unwrap();
    some_money(store.as_mut());
    let report = crate::verify::verify(api.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!((report.accounts, report.transfers), (2, 1));

    sql(&database)
        .execute(
            "UPDATE accounts SET credits_posted = credits_posted + 1 WHERE id = $1",
            &[&AccountId(2).0.to_be_bytes()],
        )
        .unwrap();
    let report = crate::verify::verify(api.as_ref()).unwrap();
    assert!(!report.ok());
    let account = AccountId(2).to_string();
    assert!(
        report.problems.iter().any(|p| p.starts_with(&account) && p.contains("stored balances")),
        "{:?}",
        report.problems
    );
    assert!(report.problems.iter().any(|p| p.contains("not zero")), "{:?}", report.problems);
    // The same check through the offline handle `paycore verify` uses.
    let offline = crate::open_for_verify(database.url()).unwrap();
    assert!(!crate::verify::verify(offline.as_ref()).unwrap().ok());
}

/// A balances checkpoint or a history watermark past its partition's clock would make every
/// reader skip the transfers up to it: `verify` names the partition.
#[test]
fn verify_finds_a_checkpoint_past_its_partitions_clock() {
    let Some(database) = TestDatabase::create("verify_finds_a_checkpoint_past_its_clock") else { return };
    let Opened { mut store, api } = crate::open(database.url()).unwrap();
    some_money(store.as_mut());
    assert!(crate::verify::verify(api.as_ref()).unwrap().ok());
    let mut client = sql(&database);
    client.execute("UPDATE partitions SET balances_through = last_timestamp + 1", &[]).unwrap();
    client
        .execute(
            "INSERT INTO history_watermarks (partition, through) SELECT id, last_timestamp + 5 FROM partitions
             ON CONFLICT (partition) DO UPDATE SET through = excluded.through",
            &[],
        )
        .unwrap();
    let problems = crate::verify::verify(api.as_ref()).unwrap().problems;
    let named = |what: &str| problems.iter().any(|p| p.starts_with("partition 0: its ") && p.contains(what));
    assert!(named("balances are checkpointed through") && named("history is indexed through"), "{problems:?}");
}

#[test]
fn an_undecodable_row_is_corrupt() {
    let Some(database) = TestDatabase::create("an_undecodable_row_is_corrupt") else { return };
    let Opened { mut store, api } = crate::open(database.url()).unwrap();
    some_money(store.as_mut());
    let mut client = sql(&database);
    client.execute("UPDATE transfers SET kind = 'teleport'", &[]).unwrap();
    assert!(matches!(api.transfer(T1, TransferId(100)), Err(StoreError::Corrupt(_))));
    client
        .execute("UPDATE accounts SET id = '\\x0102'::bytea WHERE id = $1", &[&AccountId(1).0.to_be_bytes()])
        .unwrap();
    assert!(matches!(store.recover(), Err(StoreError::Corrupt(_))));
}

#[test]
fn a_newer_schema_is_refused_and_a_reopened_store_keeps_its_data() {
    let Some(database) = TestDatabase::create("a_newer_schema_is_refused") else { return };
    let Opened { mut store, api } = crate::open(database.url()).unwrap();
    some_money(store.as_mut());
    drop((store, api));
    let Opened { mut store, api } = crate::open(database.url()).unwrap();
    let recovered = store.recover().unwrap();
    assert_eq!(recovered.accounts.len(), 2);
    assert_eq!((recovered.last_timestamp, recovered.max_transfer_id), (20, Some(TransferId(100))));
    assert_eq!(api.account(T1, AccountId(2)).unwrap().unwrap().balances.credits_posted, 1000);
    drop((store, api));

    sql(&database).execute("UPDATE schema_version SET version = 99", &[]).unwrap();
    match crate::open(database.url()) {
        Err(StoreError::SchemaTooNew { found: 99, .. }) => {}
        Err(other) => panic!("expected SchemaTooNew, got {other}"),
        Ok(_) => panic!("a newer schema was opened"),
    }
    assert!(matches!(crate::open_for_verify(database.url()), Err(StoreError::SchemaTooNew { found: 99, .. })));
}

#[test]
fn verify_on_an_empty_database_creates_nothing() {
    let Some(database) = TestDatabase::create("verify_on_an_empty_database_creates_nothing") else { return };
    assert!(matches!(crate::open_for_verify(database.url()), Err(StoreError::Unavailable(_))));
    let tables: i64 =
        sql(&database).query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", &[]).unwrap().get(0);
    assert_eq!(tables, 0);
}

#[test]
fn the_reader_pool_never_opens_more_connections_than_its_bound() {
    let Some(database) = TestDatabase::create("the_reader_pool_never_opens_more_connections") else { return };
    let Opened { store: _store, .. } =
        crate::open_with(std::path::Path::new(database.url()), &Options::default()).unwrap();
    let reader = Arc::new(PostgresReader::new(database.url().to_owned(), 2));
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let (reader, inside, most) = (reader.clone(), inside.clone(), most.clone());
            std::thread::spawn(move || {
                for _ in 0..5 {
                    reader
                        .with(|client| {
                            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            client.execute("SELECT pg_sleep(0.005)", &[])?;
                            inside.fetch_sub(1, Ordering::SeqCst);
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
    assert_eq!(most.load(Ordering::SeqCst), 2, "six threads share two connections");
    assert_eq!(reader.open_connections(), 2);
}

#[test]
fn a_pooled_connection_the_server_closed_is_unavailable_once_then_replaced() {
    let Some(database) = TestDatabase::create("a_pooled_connection_the_server_closed") else { return };
    let Opened { mut store, api } = crate::open(database.url()).unwrap();
    some_money(store.as_mut());
    let reader = PostgresReader::new(database.url().to_owned(), 1);
    let pid: i32 = reader.with(|client| Ok(client.query_one("SELECT pg_backend_pid()", &[])?.get(0))).unwrap();
    let killed: bool = sql(&database).query_one("SELECT pg_terminate_backend($1)", &[&pid]).unwrap().get(0);
    assert!(killed);
    let error = reader.account(T1, AccountId(2)).err().unwrap();
    assert!(error.is_transient(), "{error:?}");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    // The broken connection was closed, not given back: the next call connects anew.
    assert_eq!(reader.open_connections(), 0);
    assert_eq!(reader.account(T1, AccountId(2)).unwrap().unwrap().balances.credits_posted, 1000);
    // The engine's connection and the other pool were not touched.
    assert_eq!(api.account(T1, AccountId(1)).unwrap().unwrap().balances.debits_posted, 1000);
}

#[test]
fn a_commit_that_fails_writes_nothing_and_the_store_goes_on() {
    let Some(database) = TestDatabase::create("a_commit_that_fails_writes_nothing") else { return };
    let Opened { mut store, api } = crate::open(database.url()).unwrap();
    some_money(store.as_mut());
    // The same account opened twice by two engines' worth of state: a unique violation.
    let mut state = State::default();
    let requests = vec![Request { tenant: T1, command: open(1) }];
    state.execute(&requests, 30);
    let changes = state.take_changes();
    assert!(matches!(store.commit(&changes, &[]), Err(StoreError::Conflict(_))));
    assert_eq!(api.account(T1, AccountId(1)).unwrap().unwrap().balances.debits_posted, 1000);
    assert_eq!(store.recover().unwrap().last_timestamp, 20, "the failed commit moved nothing");
}

#[test]
fn a_bulk_batch_of_8189_transfers_commits_whole() {
    let Some(database) = TestDatabase::create("a_bulk_batch_of_8189_transfers_commits_whole") else { return };
    let Opened { mut store, api } = crate::open(database.url()).unwrap();
    let accounts = 200u128;
    let mut state = State::default();
    step(&mut state, store.as_mut(), 10, (1..=accounts).map(open).collect());
    // The API's largest bulk request: 8 189 transfers, every account touched.
    let transfers: Vec<NewTransfer> = (0..8189u128)
        .map(|i| NewTransfer {
            id: TransferId(1_000 + i),
            linked: false,
            op: TransferOp::Move {
                debit_account: AccountId(1 + i % accounts),
                credit_account: AccountId(1 + (i + 1) % accounts),
                amount: 3,
                currency: eur(),
                hold: None,
            },
        })
        .collect();
    let mut client = sql(&database);
    let started = std::time::Instant::now();
    step(&mut state, store.as_mut(), 20, vec![Command::Transfers(transfers)]);
    eprintln!("8 189 transfers committed in {:?}", started.elapsed());
    let stored: i64 = client.query_one("SELECT count(*) FROM transfers", &[]).unwrap().get(0);
    assert_eq!(stored, 8189);
    // Account 1 pays in moves 0, 200, … 8 000 (41 of them) and is paid in 199, 399, … 7 999
    // (40 of them).
    let first = api.account(T1, AccountId(1)).unwrap().unwrap();
    assert_eq!((first.balances.debits_posted, first.balances.credits_posted), (41 * 3, 40 * 3));
    let report = crate::verify::verify(api.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.transfers, 8189);
}

/// Executes `commands` as one batch of tenant 1 and commits it, as [`step`], and returns what
/// it committed.
fn step_changes(
    state: &mut State,
    store: &mut dyn Store,
    now: u64,
    commands: Vec<Command>,
) -> paycore_ledger::ChangeSet {
    let requests: Vec<Request> = commands.into_iter().map(|command| Request { tenant: T1, command }).collect();
    let loaded = store.load(&state.prefetch(&requests)).unwrap();
    state.insert_prefetched(loaded.transfers, loaded.holds, loaded.payments);
    state.execute(&requests, now);
    let changes = state.take_changes();
    store.commit(&changes, &[]).unwrap();
    changes
}

fn hold(id: u128, debit: u128, credit: u128, timeout_seconds: Option<u64>) -> NewTransfer {
    NewTransfer {
        id: TransferId(id),
        linked: false,
        op: TransferOp::Move {
            debit_account: AccountId(debit),
            credit_account: AccountId(credit),
            amount: 7,
            currency: eur(),
            hold: Some(paycore_ledger::Hold { timeout_seconds }),
        },
    }
}

/// A bulk batch's transfers go by binary `COPY` (`copy::COPY_FROM` and more): every column of
/// every row reads back as committed, NULLs included, and the balances of its 1 200 accounts
/// (on pages of `accounts` left half empty: migration 0020) are the ledger's.
#[test]
fn a_bulk_batch_by_copy_reads_back_column_for_column() {
    let Some(database) = TestDatabase::create("a_bulk_batch_by_copy_reads_back") else { return };
    let Opened { mut store, api } = crate::open(database.url()).unwrap();
    let accounts = 1_200u128;
    let mut state = State::default();
    step(&mut state, store.as_mut(), 10, (1..=accounts).map(open).collect());
    // Holds with and without an expiry: `expires_at` set and NULL.
    let count = u128::try_from(super::copy::COPY_FROM).unwrap() + 44;
    let holds: Vec<NewTransfer> = (0..count)
        .map(|i| hold(10_000 + i, 1 + i % accounts, 1 + (i + 7) % accounts, (i % 2 == 0).then_some(60)))
        .collect();
    let placed = step_changes(&mut state, store.as_mut(), 20, vec![Command::Transfers(holds)]);
    // Posts and voids of them (`pending_id` set), and moves touching every account.
    let mut resolving: Vec<NewTransfer> = (0..count)
        .map(|i| NewTransfer {
            id: TransferId(20_000 + i),
            linked: false,
            op: if i % 3 == 0 {
                TransferOp::Void { pending_id: TransferId(10_000 + i) }
            } else {
                TransferOp::Post { pending_id: TransferId(10_000 + i), amount: (i % 3 == 1).then_some(5) }
            },
        })
        .collect();
    resolving.extend((0..accounts).map(|i| NewTransfer {
        id: TransferId(30_000 + i),
        linked: false,
        op: TransferOp::Move {
            debit_account: AccountId(1 + i),
            credit_account: AccountId(1 + (i + 1) % accounts),
            amount: 1 + u64::try_from(i).unwrap(),
            currency: eur(),
            hold: None,
        },
    }));
    let resolved = step_changes(&mut state, store.as_mut(), 30, vec![Command::Transfers(resolving)]);
    assert_eq!(resolved.balances.len(), 1_200);
    for changes in [&placed, &resolved] {
        assert!(changes.transfers.len() >= super::copy::COPY_FROM);
        for transfer in &changes.transfers {
            assert_eq!(api.transfer(T1, transfer.id).unwrap().as_ref(), Some(transfer));
        }
    }
    assert!(placed.transfers.iter().any(|t| t.expires_at.is_some()));
    assert!(placed.transfers.iter().any(|t| t.expires_at.is_none()));
    assert!(resolved.transfers.iter().all(|t| t.pending_id.is_some() || t.id.0 >= 30_000));
    for (id, balances) in &resolved.balances {
        assert_eq!(api.account(T1, *id).unwrap().unwrap().balances, *balances);
    }
    let report = crate::verify::verify(api.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.transfers, u64::try_from(placed.transfers.len() + resolved.transfers.len()).unwrap());
}

/// A bulk batch whose `COPY` meets a stored transfer id is a `Conflict`, and writes nothing.
#[test]
fn a_bulk_copy_that_meets_a_stored_id_is_a_conflict_and_writes_nothing() {
    let Some(database) = TestDatabase::create("a_bulk_copy_that_meets_a_stored_id") else { return };
    let Opened { mut store, api } = crate::open(database.url()).unwrap();
    some_money(store.as_mut());
    // Another engine's state, which does not know transfer 100 is stored.
    let mut state = State::default();
    step(&mut state, store.as_mut(), 30, vec![open(3), open(4)]);
    let count = u128::try_from(super::copy::COPY_FROM).unwrap();
    let moves: Vec<NewTransfer> = (0..count)
        .map(|i| NewTransfer {
            id: TransferId(if i == count / 2 { 100 } else { 500 + i }),
            linked: false,
            op: TransferOp::Move {
                debit_account: AccountId(3),
                credit_account: AccountId(4),
                amount: 2,
                currency: eur(),
                hold: None,
            },
        })
        .collect();
    let requests = vec![Request { tenant: T1, command: Command::Transfers(moves) }];
    state.execute(&requests, 40);
    let changes = state.take_changes();
    assert_eq!(changes.transfers.len(), super::copy::COPY_FROM);
    let error = store.commit(&changes, &[]).err().unwrap();
    assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");
    let stored: i64 = sql(&database).query_one("SELECT count(*) FROM transfers", &[]).unwrap().get(0);
    assert_eq!(stored, 1, "only the first transfer");
    assert_eq!(api.account(T1, AccountId(3)).unwrap().unwrap().balances.debits_posted, 0);
    // The connection goes on: the next commit writes.
    step(&mut state, store.as_mut(), 50, vec![open(5)]);
    assert!(api.account(T1, AccountId(5)).unwrap().is_some());
}

#[test]
fn the_store_opens_from_an_async_main() {
    let Some(database) = TestDatabase::create("the_store_opens_from_an_async_main") else { return };
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    // The `postgres` client cannot block on a thread that drives async tasks; opening moves
    // its connection work to a thread of its own.
    let opened = runtime.block_on(async { crate::open(database.url()) });
    let Opened { mut store, api } = opened.unwrap();
    runtime.block_on(async { crate::open_for_verify(database.url()) }).unwrap();
    // Later calls come from the engine's thread and blocking threads, as here.
    some_money(store.as_mut());
    assert!(crate::verify::verify(api.as_ref()).unwrap().ok());
}

#[test]
fn a_lock_held_too_long_is_busy_and_a_serialization_failure_too() {
    let Some(database) = TestDatabase::create("a_lock_held_too_long_is_busy") else { return };
    let Opened { mut store, .. } = crate::open(database.url()).unwrap();
    some_money(store.as_mut());
    let reader = PostgresReader::new(database.url().to_owned(), 1);
    let timeout: String = reader.with(|client| Ok(client.query_one("SHOW lock_timeout", &[])?.get(0))).unwrap();
    assert_eq!(timeout, "5s", "every connection waits for locks as long as SQLite's busy timeout");

    let mut holder = sql(&database);
    let mut held = holder.transaction().unwrap();
    held.execute("SELECT * FROM accounts FOR UPDATE", &[]).unwrap();
    let error = reader
        .with(|client| {
            client.batch_execute("SET lock_timeout = '50ms'")?;
            Ok(client.execute("UPDATE accounts SET metadata = 'x'", &[])?)
        })
        .err()
        .unwrap();
    assert!(matches!(error, StoreError::Busy(_)), "{error:?}");
    held.rollback().unwrap();

    // Two snapshots that each read what the other writes: one of them cannot commit.
    let mut first = sql(&database);
    let mut a = first.build_transaction().isolation_level(postgres::IsolationLevel::Serializable).start().unwrap();
    let error = reader
        .with(|client| {
            let mut b = client.build_transaction().isolation_level(postgres::IsolationLevel::Serializable).start()?;
            a.query("SELECT sum(debits_posted) FROM accounts", &[]).unwrap();
            b.query("SELECT sum(credits_posted) FROM accounts", &[])?;
            a.execute("UPDATE accounts SET credits_pending = 1 WHERE id = $1", &[&AccountId(1).0.to_be_bytes()])
                .unwrap();
            b.execute("UPDATE accounts SET debits_pending = 1 WHERE id = $1", &[&AccountId(2).0.to_be_bytes()])?;
            b.commit()?;
            Ok(())
        })
        .and_then(|()| Ok(a.commit()?))
        .err()
        .unwrap();
    assert!(matches!(error, StoreError::Busy(_)), "{error:?}");
    assert!(error.is_transient());
}

#[test]
fn a_full_disk_is_full_and_other_resource_errors_unavailable() {
    let Some(database) = TestDatabase::create("a_full_disk_is_full") else { return };
    let mut client = sql(&database);
    let raise = |client: &mut Client, code: &str| -> StoreError {
        let statement = format!("DO $$ BEGIN RAISE EXCEPTION 'raised by the test' USING ERRCODE = '{code}'; END $$");
        client.batch_execute(&statement).err().map(StoreError::from).unwrap()
    };
    // What PostgreSQL answers when it cannot extend a file: SQLSTATE 53100, `disk_full`.
    let full = raise(&mut client, "53100");
    assert!(matches!(full, StoreError::Full(_)), "{full:?}");
    assert!(full.is_transient());
    assert!(full.to_string().contains("53100"), "{full}");
    // The rest of class 53 (out of memory, too many connections) stays `Unavailable`.
    for code in ["53200", "53300"] {
        let error = raise(&mut client, code);
        assert!(matches!(error, StoreError::Unavailable(_)), "{code}: {error:?}");
    }
    // The connection is still usable after those errors.
    assert_eq!(client.query_one("SELECT 1", &[]).unwrap().get::<_, i32>(0), 1);
}

/// A batch of tenant 1 taken in at `created_at`.
fn stored_batch(api: &dyn crate::ApiStore, id: u128, created_at: u64) -> paycore_ledger::BatchId {
    let batch = paycore_ledger::BatchId(id << 64);
    api.create_batch(&crate::BatchRecord::new(batch, T1, paycore_ledger::BatchFormat::Csv, created_at)).unwrap();
    batch
}

#[test]
fn a_claim_skips_the_batch_another_connection_has_locked_without_waiting() {
    let Some(database) = TestDatabase::create("a_claim_skips_a_locked_batch") else { return };
    let Opened { store: _store, api } = crate::open(database.url()).unwrap();
    let (older, newer) = (stored_batch(api.as_ref(), 1, 1), stored_batch(api.as_ref(), 2, 2));
    let claim = crate::Claim { owner: "n1", now: 10, until: 100 };

    // Another node is in the middle of its claim of the older batch: it holds the row lock.
    let mut other = sql(&database);
    let mut tx = other.transaction().unwrap();
    tx.execute("SELECT 1 FROM batches WHERE id = $1 FOR UPDATE", &[&older.0.to_be_bytes()]).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(api.claim_next_batch(&claim).unwrap().map(|b| b.id), Some(newer), "the locked row is passed over");
    assert!(api.claim_batch(older, &claim).unwrap().is_none());
    // The store's lock timeout is 5 s: skipping is not waiting.
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
    tx.commit().unwrap();
    assert_eq!(api.claim_next_batch(&claim).unwrap().map(|b| b.id), Some(older), "free once the other is done");
}

#[test]
fn two_connections_racing_for_one_batch_claim_it_once() {
    let Some(database) = TestDatabase::create("two_connections_racing_for_one_batch") else { return };
    let Opened { store: _store, api } = crate::open(database.url()).unwrap();
    let start = Arc::new(std::sync::Barrier::new(2));
    for round in 1..=30u64 {
        let batch = stored_batch(api.as_ref(), u128::from(round), round);
        let racers: Vec<_> = ["n1", "n2"]
            .into_iter()
            .map(|owner| {
                let (api, start) = (api.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    api.claim_next_batch(&crate::Claim { owner, now: 100, until: u64::MAX >> 1 }).unwrap().map(|b| b.id)
                })
            })
            .collect();
        let won: Vec<_> = racers.into_iter().filter_map(|t| t.join().unwrap()).collect();
        assert_eq!(won, [batch], "round {round}: one winner, the other finds nothing to claim");
    }
}

/// A move of `amount` from account `from` to account `to`, with its own id.
fn move_of(id: u128, from: u128, to: u128, amount: u64) -> Command {
    Command::Transfers(vec![NewTransfer {
        id: TransferId(id),
        linked: false,
        op: TransferOp::Move {
            debit_account: AccountId(from),
            credit_account: AccountId(to),
            amount,
            currency: eur(),
            hold: None,
        },
    }])
}

#[test]
fn the_engine_prepares_each_statement_once_even_in_a_commit_that_rolled_back() {
    let Some(database) = TestDatabase::create("the_engine_prepares_each_statement_once") else { return };
    let (mut store, api) = super::open_parts(database.url(), &Options::default()).unwrap();
    // What opening left prepared (the client's own type lookups), to count from.
    let opened = store.prepared_on_server();
    let mut state = State::default();
    step(&mut state, &mut store, 10, vec![open(1), open(2)]);
    assert_eq!(store.prepared_on_server(), opened + 2, "the fencing check and the accounts' insert stay prepared");
    // The first batch of transfers writes the balances' checkpoint (see `balances`): its
    // fencing update, transfers' insert and balances' update are prepared for a commit that
    // fails its last check (the balances of accounts the store does not have), and is rolled
    // back.
    let mut elsewhere = State::default();
    elsewhere.execute(&[Request { tenant: T1, command: open(7) }, Request { tenant: T1, command: open(8) }], 11);
    elsewhere.take_changes();
    elsewhere.execute(&[Request { tenant: T1, command: move_of(50, 7, 8, 5) }], 12);
    assert!(matches!(store.commit(&elsewhere.take_changes(), &[]), Err(StoreError::Corrupt(_))));
    assert_eq!(store.prepared_on_server(), opened + 5, "the checkpoint's statements");
    // The engine rebuilds its state after a failed commit.
    store.recover().unwrap();
    // The statements prepared then still run: the next batch writes the checkpoint, the ones
    // after it are one statement each (`commit_in_one_statement`), prepared once.
    step(&mut state, &mut store, 20, vec![move_of(100, 1, 2, 30)]);
    assert_eq!(store.prepared_on_server(), opened + 5, "the checkpoint's statements ran again");
    for (i, at) in (21..26).enumerate() {
        step(&mut state, &mut store, at, vec![move_of(101 + i as u128, 2, 1, 1)]);
    }
    assert_eq!(store.prepared_on_server(), opened + 6, "and the one statement of a batch of transfers");
    for (i, at) in (26..31).enumerate() {
        store.checkpoint_at_next_commit();
        step(&mut state, &mut store, at, vec![move_of(106 + i as u128, 2, 1, 1)]);
    }
    assert_eq!(store.prepared_on_server(), opened + 6, "no statement is prepared again, and no read is");
    let first = api.account(T1, AccountId(1)).unwrap().unwrap().balances;
    assert_eq!((first.debits_posted, first.credits_posted), (30, 10));
    assert!(api.transfer(T1, TransferId(50)).unwrap().is_none(), "the failed commit wrote nothing");
    let report = crate::verify::verify(api.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.transfers, 11);
}

/// A prepared lookup keeps the plan it settled on after five runs: on a new cluster, a
/// sequential scan of the empty `transfers`, kept while the table grew (4–24 ms a lookup at
/// 10–15 thousand transfers, measured in the cluster bench). The engine's reads by id are
/// planned at each call, so a lookup on the grown table goes by the primary key.
#[test]
fn a_lookup_by_id_uses_the_primary_key_after_the_table_grew_under_it() {
    let Some(database) = TestDatabase::create("a_lookup_by_id_uses_the_primary_key") else { return };
    let (mut store, _api) = super::open_parts(database.url(), &Options::default()).unwrap();
    // No highest stored id is known: every transfer is looked up before it executes.
    let mut state = State::default();
    step(&mut state, &mut store, 10, vec![open(1), open(2)]);
    for i in 0..6u64 {
        step(&mut state, &mut store, 20 + i, vec![move_of(100 + u128::from(i), 1, 2, 1)]);
    }
    let grown: Vec<NewTransfer> = (0..20_000u128)
        .map(|i| NewTransfer {
            id: TransferId(1_000 + i),
            linked: false,
            op: TransferOp::Move {
                debit_account: AccountId(1),
                credit_account: AccountId(2),
                amount: 1,
                currency: eur(),
                hold: None,
            },
        })
        .collect();
    step(&mut state, &mut store, 30, vec![Command::Transfers(grown)]);
    // The connection's own counts of scans not yet reported (`pg_stat_xact_user_tables`),
    // before and after the lookup.
    let scans = |store: &mut super::commit::PostgresStore| -> (i64, i64) {
        let row = store
            .client()
            .query_one("SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'transfers'", &[])
            .unwrap();
        (row.get(0), row.get(1))
    };
    store.client().batch_execute("BEGIN").unwrap();
    let before = scans(&mut store);
    let wanted = paycore_ledger::Prefetch {
        transfers: vec![TransferId(102), TransferId(15_000), TransferId(99_999)],
        ..Default::default()
    };
    let mut found: Vec<u128> = store.load(&wanted).unwrap().transfers.iter().map(|t| t.id.0).collect();
    found.sort_unstable();
    let after = scans(&mut store);
    store.client().batch_execute("ROLLBACK").unwrap();
    assert_eq!(found, vec![102, 15_000]);
    assert_eq!(after.0 - before.0, 0, "the lookup does not read the whole table");
    assert!(after.1 > before.1, "it reads the primary key");
}

/// A prepared statement keeps the plan PostgreSQL settled on after its first five runs: for a
/// balance update on a new cluster's 40 accounts, a hash join over a sequential scan, kept as
/// `accounts` grows. The engine prepares its statements anew every `REPREPARE_AFTER` runs, so
/// the plan follows the table. The balances are written by a checkpoint's `UPDATE` (see
/// `balances`), made here at every commit; its plan is looked at.
#[test]
fn the_balance_update_is_planned_anew_as_accounts_grow() {
    let Some(database) = TestDatabase::create("the_balance_update_is_planned_anew") else { return };
    let (mut store, _api) = super::open_parts(database.url(), &Options::default()).unwrap();
    let mut state = State::default();
    step(&mut state, &mut store, 10, (1..=40).map(open).collect());
    // Commits of 10 transfers among 20 of the 40 accounts: the balance update's first plans.
    let mut at = 20;
    let mut next_id = 1_000u128;
    let mut commit_moves = |state: &mut State, store: &mut super::commit::PostgresStore| {
        let moves = (0..10u128).map(|i| move_of(next_id + i, 1 + 2 * i, 2 + 2 * i, 1)).collect();
        next_id += 10;
        at += 1;
        store.checkpoint_at_next_commit();
        step(state, store, at, moves);
    };
    for _ in 0..6 {
        commit_moves(&mut state, &mut store);
    }
    step(&mut state, &mut store, 15, (1_000..21_000).map(open).collect());
    for _ in 0..super::prepared::REPREPARE_AFTER {
        commit_moves(&mut state, &mut store);
    }
    let client = store.client();
    let name: String = client
        .query_one(
            "SELECT name FROM pg_prepared_statements WHERE statement LIKE 'UPDATE accounts SET debits_posted%'",
            &[],
        )
        .unwrap()
        .get(0);
    let plan: Vec<String> = client
        .query(
            // One account's balances.
            &format!("EXPLAIN EXECUTE {name}(ARRAY['\\x{:032x}'::bytea], '{{1}}', '{{0}}', '{{0}}', '{{0}}')", 1u128),
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(!plan.iter().any(|line| line.contains("Seq Scan on accounts")), "{plan:#?}");
    assert!(plan.iter().any(|line| line.contains("accounts_pkey")), "{plan:#?}");
}

/// An account's balances as its row holds them.
fn stored_balances(client: &mut Client, id: u128) -> paycore_ledger::Balances {
    let row = client
        .query_one(
            "SELECT debits_posted, credits_posted, debits_pending, credits_pending FROM accounts WHERE id = $1",
            &[&AccountId(id).0.to_be_bytes()],
        )
        .unwrap();
    let column = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap();
    paycore_ledger::Balances {
        debits_posted: column(0),
        credits_posted: column(1),
        debits_pending: column(2),
        credits_pending: column(3),
    }
}

/// Whether partition 0's balances were last checkpointed at its clock.
fn checkpointed_at_clock(client: &mut Client) -> bool {
    client.query_one("SELECT balances_through = last_timestamp FROM partitions WHERE id = 0", &[]).unwrap().get(0)
}

/// Balances are checkpointed about once a second, not written by each commit (`balances`).
/// Between checkpoints the rows lag, and every reader of a balance replays the transfers since
/// on them: the API's account, `verify`, and a new leader's recovery, whose first commit then
/// writes them. Holds placed, posted in part and voided in the tail are replayed as the ledger
/// applied them.
#[test]
fn balances_between_checkpoints_are_read_as_committed() {
    let Some(database) = TestDatabase::create("balances_between_checkpoints") else { return };
    let mut client = sql(&database);
    let (mut store, api) = super::open_parts(database.url(), &Options::default()).unwrap();
    // No checkpoint but the first, however slow the machine.
    store.checkpoint_every(std::time::Duration::from_secs(3600));
    let mut state = State::default();
    step(&mut state, &mut store, 10, (1..=4).map(open).collect());
    // The first commit that moves money writes a checkpoint (none was written before it).
    step(&mut state, &mut store, 15, vec![move_of(99, 2, 1, 1), Command::Transfers(vec![hold(204, 2, 3, None)])]);
    assert!(checkpointed_at_clock(&mut client));
    let ops = |ops: Vec<(u128, TransferOp)>| {
        Command::Transfers(
            ops.into_iter().map(|(id, op)| NewTransfer { id: TransferId(id), linked: false, op }).collect(),
        )
    };
    step(&mut state, &mut store, 20, vec![Command::Transfers(vec![hold(200, 3, 4, None), hold(201, 1, 3, None)])]);
    step(&mut state, &mut store, 30, vec![move_of(100, 1, 2, 1000)]);
    step(
        &mut state,
        &mut store,
        40,
        vec![ops(vec![
            (202, TransferOp::Post { pending_id: TransferId(200), amount: Some(5) }),
            (203, TransferOp::Void { pending_id: TransferId(201) }),
            // A hold from before the checkpoint.
            (205, TransferOp::Void { pending_id: TransferId(204) }),
        ])],
    );
    let committed = |state: &State, id: u128| state.account(AccountId(id)).unwrap().balances;
    assert_eq!(committed(&state, 3).debits_posted, 5);
    assert_eq!(committed(&state, 1).debits_posted, 1000);

    // The rows hold the checkpoint's balances, none of the three batches'.
    assert!(!checkpointed_at_clock(&mut client));
    let checkpoint = |id| paycore_ledger::Balances {
        debits_posted: u64::from(id == 2),
        credits_posted: u64::from(id == 1),
        debits_pending: if id == 2 { 7 } else { 0 },
        credits_pending: if id == 3 { 7 } else { 0 },
    };
    for id in 1..=4 {
        assert_eq!(stored_balances(&mut client, id), checkpoint(id), "account {id}");
    }
    // Every reader sees the committed balances.
    for id in 1..=4 {
        assert_eq!(api.account(T1, AccountId(id)).unwrap().unwrap().balances, committed(&state, id), "account {id}");
    }
    let report = crate::verify::verify(api.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!((report.accounts, report.transfers), (4, 8));

    // A new leader recovers them, and its first commit writes every one of them.
    drop(store);
    let (mut store, api) = super::open_parts(database.url(), &Options::default()).unwrap();
    let recovered = store.recover().unwrap();
    assert_eq!(recovered.accounts.len(), 4);
    for account in &recovered.accounts {
        assert_eq!(account.balances, committed(&state, account.id.0), "{}", account.id);
    }
    let mut state =
        State::recover(recovered.accounts, recovered.open_holds, recovered.open_payments, recovered.last_timestamp);
    step(&mut state, &mut store, 50, vec![move_of(101, 4, 1, 1)]);
    assert!(checkpointed_at_clock(&mut client));
    for id in 1..=4 {
        assert_eq!(stored_balances(&mut client, id), committed(&state, id), "account {id}");
        assert_eq!(api.account(T1, AccountId(id)).unwrap().unwrap().balances, committed(&state, id), "account {id}");
    }
    assert!(crate::verify::verify(api.as_ref()).unwrap().ok());
}

/// A leader with balances waiting and no commit to write them (after a burst) writes them by
/// itself (`balances::IdleCheckpoints`): the readers' tail does not stay a burst long.
#[test]
fn an_idle_leader_writes_its_waiting_balances_without_a_commit() {
    let Some(database) = TestDatabase::create("an_idle_leader_writes_its_balances") else { return };
    let mut client = sql(&database);
    let (mut store, _api) = super::open_parts(database.url(), &Options::default()).unwrap();
    store.checkpoint_every(std::time::Duration::from_millis(300));
    let mut state = State::default();
    step(&mut state, &mut store, 10, (1..=2).map(open).collect());
    step(&mut state, &mut store, 20, vec![move_of(100, 1, 2, 30)]);
    step(&mut state, &mut store, 30, vec![move_of(101, 1, 2, 12)]);
    let committed = state.account(AccountId(2)).unwrap().balances;
    assert_eq!(committed.credits_posted, 42);
    let waited = std::time::Instant::now();
    while !(checkpointed_at_clock(&mut client) && stored_balances(&mut client, 2) == committed) {
        assert!(waited.elapsed() < std::time::Duration::from_secs(20), "the balances were never written");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(stored_balances(&mut client, 1), state.account(AccountId(1)).unwrap().balances);
}

/// The engine's store holds a blocking client, whose drop runs the client's own runtime: on a
/// thread that drives async tasks (where a cluster node gives up a lead) that panicked. It is
/// closed on a thread of its own instead, and its leader lock goes with it.
#[test]
fn the_engine_store_may_be_dropped_on_an_async_worker() {
    let Some(database) = TestDatabase::create("the_engine_store_may_be_dropped_on_an_async_worker") else { return };
    let (store, _api) = super::open_parts(database.url(), &Options::default()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async move { drop(store) });
    let (_again, _api) = super::open_parts(database.url(), &Options::default()).unwrap();
}

/// Runs history passes over every partition until the watermarks reach the clocks; a pass
/// the background indexer is racing (a serialization failure) is tried again.
fn index_history(client: &mut Client, rows_max: i64) {
    loop {
        match super::history::pass(client, &[0], rows_max) {
            Ok(pass) if pass.caught_up => return,
            Ok(_) | Err(StoreError::Busy(_)) => {}
            Err(error) => panic!("history pass: {error}"),
        }
    }
}

#[test]
fn account_history_lists_every_transfer_whether_indexed_or_not() {
    let Some(database) = TestDatabase::create("pg_account_history_indexed_or_not") else { return };
    let Opened { mut store, api } = crate::open(database.url()).unwrap();
    let mut client = sql(&database);
    let mut state = State::default();
    step(&mut state, store.as_mut(), 1, (1..=5).map(open).collect());
    let mut committed: Vec<(u128, u128, u128)> = Vec::new();
    let mut draw = crate::testing::HistoryMoves::new(7);
    for batch in 0..24u128 {
        let transfers = draw.batch(batch);
        let commands = transfers.iter().map(|&(id, d, c)| move_of(id, d, c, 1)).collect();
        step(&mut state, store.as_mut(), 10 + u64::try_from(batch).unwrap(), commands);
        committed.extend(transfers);
        // Indexed up to here every fifth batch, in passes of a few transfers each; the
        // background indexer may run at any time too.
        if batch % 5 == 2 {
            index_history(&mut client, 3);
        }
        crate::testing::assert_histories(T1, api.as_ref(), &committed, 1..=5, 1 + usize::try_from(batch % 4).unwrap());
    }
    // Another tenant's account is not listed by id through tenant 1.
    assert!(api
        .account_transfers(TenantId(2), AccountId(1), crate::Page { after: None, limit: 10 })
        .unwrap()
        .is_empty());

    // Everything indexed: the watermark is the partition's clock, and every transfer is in the
    // runs of both its accounts once.
    index_history(&mut client, 200_000);
    let row = client
        .query_one(
            "SELECT h.through = p.last_timestamp, (SELECT sum(cardinality(ids)) FROM account_runs),
                 (SELECT max(cardinality(ids)) FROM account_runs)
             FROM history_watermarks h JOIN partitions p ON p.id = h.partition",
            &[],
        )
        .unwrap();
    assert!(row.get::<_, bool>(0), "the watermark is the partition's clock");
    assert_eq!(row.get::<_, i64>(1), 2 * i64::try_from(committed.len()).unwrap(), "entries in the runs");
    assert!(row.get::<_, i32>(2) <= 48, "a run holds at most 48 entries");
    crate::testing::assert_histories(T1, api.as_ref(), &committed, 1..=5, 100);
    crate::testing::assert_histories(T1, api.as_ref(), &committed, 1..=5, 3);

    // The limits' debits come from the runs and the tail alike.
    let wanted =
        paycore_ledger::Prefetch { debits_of: vec![AccountId(1), AccountId(2)], debits_since: 0, ..Default::default() };
    let mut loaded: Vec<(u128, u128)> =
        store.load(&wanted).unwrap().debits.iter().map(|t| (t.id.0, t.debit_account.0)).collect();
    loaded.sort_unstable();
    let expected: Vec<(u128, u128)> = committed.iter().filter(|t| t.1 <= 2).map(|t| (t.0, t.1)).collect();
    assert_eq!(loaded, expected);

    // Interest's daily movements too, each transfer once: every transfer was on day 0, from
    // empty accounts, so an account's movement that day is its balance now.
    let days = crate::InterestStore::balance_history(
        api.as_ref(),
        T1,
        &[AccountId(1), AccountId(2), AccountId(3)],
        &[],
        paycore_ledger::interest::Date::from_days(-1),
    )
    .unwrap();
    for account in 1..=3 {
        let account = AccountId(account);
        let net: i64 = committed.iter().map(|t| i64::from(t.2 == account.0) - i64::from(t.1 == account.0)).sum();
        assert_eq!(days.moves.get(&(account, 0)).copied().unwrap_or(0), net, "{account}");
        assert_eq!(days.balances.get(&account).copied(), Some(net), "{account}");
    }

    // `verify` checks the runs against the transfers: an entry lost, a run written twice.
    let report = crate::verify::verify(api.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    let account = AccountId(3).0.to_be_bytes();
    client
        .execute(
            "UPDATE account_runs SET timestamps = timestamps[2:], ids = ids[2:]
             WHERE (account, last_ts) = (SELECT account, min(last_ts) FROM account_runs WHERE account = $1 GROUP BY 1)",
            &[&&account[..]],
        )
        .unwrap();
    client
        .execute(
            "INSERT INTO account_runs SELECT account, first_ts, last_ts + 1, timestamps, ids FROM account_runs
             WHERE (account, last_ts) = (SELECT account, max(last_ts) FROM account_runs WHERE account = $1 GROUP BY 1)",
            &[&&account[..]],
        )
        .unwrap();
    let report = crate::verify::verify(api.as_ref()).unwrap();
    let named = |what: &str| {
        report.problems.iter().filter(|p| p.starts_with(&AccountId(3).to_string()) && p.contains(what)).count()
    };
    assert_eq!(named("misses"), 1, "{:?}", report.problems);
    assert!(named("more than once") >= 1, "{:?}", report.problems);
}

/// Two indexers of one partition (a stale leader's and the new one's) racing while the
/// engine commits: each pass either wins the watermark's row or fails with a serialization
/// error, so every transfer is in its accounts' runs once.
#[test]
fn indexers_racing_on_one_partition_index_each_transfer_once() {
    let Some(database) = TestDatabase::create("pg_indexers_racing") else { return };
    let Opened { mut store, api } = crate::open(database.url()).unwrap();
    let mut state = State::default();
    step(&mut state, store.as_mut(), 1, (1..=5).map(open).collect());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Each racer's passes won so far.
    let won: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let racers: Vec<_> = (0..2)
        .map(|racer| {
            let (url, done, won) = (database.url().to_owned(), done.clone(), won.clone());
            std::thread::spawn(move || {
                let mut client = Client::connect(&url, NoTls).unwrap();
                let (mut passes, mut lost) = (0, 0);
                while !done.load(Ordering::Relaxed) {
                    match super::history::pass(&mut client, &[0], 4) {
                        Ok(_) => passes += 1,
                        Err(StoreError::Busy(_)) => lost += 1,
                        Err(error) => panic!("history pass: {error}"),
                    }
                    won[racer].store(passes, Ordering::Relaxed);
                }
                (passes, lost)
            })
        })
        .collect();
    let mut draw = crate::testing::HistoryMoves::new(11);
    let mut committed = Vec::new();
    for batch in 0..40u128 {
        let transfers = draw.batch(batch);
        let commands = transfers.iter().map(|&(id, d, c)| move_of(id, d, c, 1)).collect();
        step(&mut state, store.as_mut(), 10 + u64::try_from(batch).unwrap(), commands);
        committed.extend(transfers);
        // The commits are quicker than a racer's first connection: let each win a pass
        // among the first batches, so that they race the commits after.
        if batch == 4 {
            let waited = std::time::Instant::now();
            while won.iter().any(|w| w.load(Ordering::Relaxed) == 0) {
                assert!(waited.elapsed() < std::time::Duration::from_secs(30), "a racer never won a pass");
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    let outcomes: Vec<(usize, u32)> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    assert!(outcomes.iter().all(|&(passes, _)| passes > 0), "{outcomes:?}");
    index_history(&mut sql(&database), 200_000);
    let entries: i64 =
        sql(&database).query_one("SELECT sum(cardinality(ids))::bigint FROM account_runs", &[]).unwrap().get(0);
    assert_eq!(entries, 2 * i64::try_from(committed.len()).unwrap());
    let report = crate::verify::verify(api.as_ref()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    crate::testing::assert_histories(T1, api.as_ref(), &committed, 1..=5, 7);
}
