//! Partitions of a cluster on PostgreSQL: one leader per partition, the fencing epoch every
//! commit checks, recovery of a partition's own tenants, the recorded partition count, and
//! the whole store's writer against partition leaders. Each test makes its own database and
//! skips loudly without a server (see [`crate::testing`]).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::testing::{fence, step, TestDatabase};
use crate::{cluster_partitions, open_partition, partition_of, Leader, Opened, Options, Store, StoreError};
use paycore_ledger::{
    AccountId, Command, Currency, Hold, NewAccount, NewTransfer, Outcome, Overdraft, Request, ResultCode, State,
    TenantId, TransferId, TransferOp,
};
use postgres::{Client, NoTls};
use std::time::{Duration, Instant};

/// The first tenant (counting from 1) that a cluster of `partitions` puts in `partition`.
fn tenant_in(partition: u32, partitions: u32) -> TenantId {
    (1..).map(TenantId).find(|&t| partition_of(t, partitions) == partition).unwrap()
}

fn eur() -> Currency {
    Currency::from_code("EUR").unwrap()
}

fn open_account(id: u128) -> Command {
    Command::CreateAccount(NewAccount {
        id: AccountId(id),
        currency: eur(),
        overdraft: Overdraft::Unlimited,
        reference: None,
        metadata: None,
    })
}

fn transfer(id: u128, debit: u128, credit: u128, amount: u64, hold: bool) -> Command {
    Command::Transfers(vec![NewTransfer {
        id: TransferId(id),
        linked: false,
        op: TransferOp::Move {
            debit_account: AccountId(debit),
            credit_account: AccountId(credit),
            amount,
            currency: eur(),
            hold: hold.then_some(Hold { timeout_seconds: None }),
        },
    }])
}

/// The engine's state as it starts on `store`.
fn recovered(store: &mut dyn Store) -> State {
    let r = store.recover().unwrap();
    let mut state = State::recover(r.accounts, r.open_holds, r.open_payments, r.last_timestamp);
    state.set_stored_transfer_id_max(r.max_transfer_id);
    state.set_stored_payment_id_max(r.max_payment_id);
    state
}

fn sql(database: &TestDatabase) -> Client {
    Client::connect(database.url(), NoTls).unwrap()
}

fn count(client: &mut Client, query: &str) -> i64 {
    client.query_one(query, &[]).unwrap().get(0)
}

/// `open_partition`, retried for up to 5 s while it is `InUse`: a dropped leader's lock is
/// released when the server notices its connection closed, a moment after the drop.
fn lead_when_free(url: &str, partition: u32) -> Leader {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match open_partition(url, partition, &Options::default()) {
            Ok(leader) => return leader,
            Err(StoreError::InUse(_)) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(other) => panic!("cannot lead partition {partition}: {other}"),
        }
    }
}

#[test]
fn a_partition_has_one_leader_and_the_next_takes_a_higher_epoch() {
    let Some(database) = TestDatabase::create("a_partition_has_one_leader") else { return };
    let url = database.url();
    assert_eq!(cluster_partitions(url, Some(2)).unwrap(), 2);
    let first = open_partition(url, 0, &Options::default()).unwrap();
    assert_eq!((first.partition, first.partitions, first.epoch), (0, 2, 1));
    match open_partition(url, 0, &Options::default()) {
        Err(StoreError::InUse(message)) => assert!(message.contains("partition 0 has a leader"), "{message}"),
        other => panic!("expected InUse, got {other:?}"),
    }
    // The other partition has a leader of its own.
    let other = open_partition(url, 1, &Options::default()).unwrap();
    assert_eq!((other.partition, other.epoch), (1, 1));

    drop(first);
    let second = lead_when_free(url, 0);
    assert_eq!(second.epoch, 2);
    let epochs: Vec<(i32, i64)> = sql(&database)
        .query("SELECT id, epoch FROM partitions ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(epochs, [(0, 2), (1, 1)]);
}

/// Partition 0's leader opens accounts 1 and 2 and moves 1 000 between them (at 20); then a
/// newer leader takes the epoch (its lock aside, as after a lost connection), and the stale
/// one executes `batch` (at 30), whose commit must be refused as `Fenced` with nothing of it
/// stored: accounts, transfers, holds, balances and clock as the last good commit left them.
/// The leader and its state come back for more.
fn a_stale_leader_commits(database: &TestDatabase, batch: Vec<Command>) -> (Leader, State, Vec<Outcome>) {
    let url = database.url();
    cluster_partitions(url, Some(2)).unwrap();
    let tenant = tenant_in(0, 2);
    let mut leader = open_partition(url, 0, &Options::default()).unwrap();
    let store = leader.store.as_mut();
    let mut state = recovered(store);
    step(&mut state, store, tenant, 10, vec![open_account(1), open_account(2)]).1.unwrap();
    let (outcomes, committed) = step(&mut state, store, tenant, 20, vec![transfer(100, 1, 2, 1000, false)]);
    committed.unwrap();
    assert!(matches!(&outcomes[..], [Outcome::Transfers(codes)] if codes == &[ResultCode::Ok]));

    fence(url, 0);
    let (outcomes, committed) = step(&mut state, store, tenant, 30, batch);
    match committed {
        Err(StoreError::Fenced(message)) => assert!(message.contains("newer leader"), "{message}"),
        other => panic!("expected Fenced, got {other:?}"),
    }
    let mut client = sql(database);
    assert_eq!(count(&mut client, "SELECT count(*) FROM accounts"), 2);
    assert_eq!(count(&mut client, "SELECT count(*) FROM transfers"), 1);
    assert_eq!(count(&mut client, "SELECT count(*) FROM holds"), 0);
    assert_eq!(
        count(&mut client, "SELECT credits_posted FROM accounts WHERE id = '\\x00000000000000000000000000000002'"),
        1000
    );
    assert_eq!(count(&mut client, "SELECT last_timestamp FROM partitions WHERE id = 0"), 20);
    (leader, state, outcomes)
}

#[test]
fn a_stale_leader_is_fenced_and_writes_nothing_of_its_batch() {
    let Some(database) = TestDatabase::create("a_stale_leader_is_fenced") else { return };
    let batch = vec![open_account(3), transfer(101, 1, 2, 500, false)];
    let (mut leader, mut state, outcomes) = a_stale_leader_commits(&database, batch);
    assert!(matches!(&outcomes[..], [_, Outcome::Transfers(codes)] if codes == &[ResultCode::Ok]));
    // And it stays fenced: the next commit is refused too.
    let (_, committed) = step(&mut state, leader.store.as_mut(), tenant_in(0, 2), 40, vec![open_account(4)]);
    assert!(matches!(committed, Err(StoreError::Fenced(_))), "{committed:?}");
}

/// A batch of transfers alone is written by one statement (`commit_in_one_statement`), whose
/// fencing check fails the statement itself: nothing of it is stored either.
#[test]
fn a_stale_leader_writes_nothing_of_a_batch_of_one_statement() {
    let Some(database) = TestDatabase::create("a_stale_leader_one_statement") else { return };
    let batch = vec![transfer(101, 1, 2, 500, false), transfer(102, 2, 1, 7, true)];
    let (_, _, outcomes) = a_stale_leader_commits(&database, batch);
    assert!(
        matches!(&outcomes[..], [Outcome::Transfers(a), Outcome::Transfers(b)] if a == &[ResultCode::Ok] && b == a)
    );
}

#[test]
fn a_partition_recovers_only_its_own_tenants() {
    let Some(database) = TestDatabase::create("a_partition_recovers_only_its_own_tenants") else { return };
    let url = database.url();
    cluster_partitions(url, Some(2)).unwrap();
    let (mine, theirs) = (tenant_in(0, 2), tenant_in(1, 2));
    {
        // The whole store writes both tenants: accounts, and an open hold each.
        let Opened { mut store, api: _api } = crate::open(url).unwrap();
        let mut state = recovered(store.as_mut());
        for (tenant, base) in [(mine, 10u64), (theirs, 20)] {
            let id = u128::from(base);
            step(&mut state, store.as_mut(), tenant, base, vec![open_account(id + 1), open_account(id + 2)]).1.unwrap();
            let hold = transfer(id * 100, id + 1, id + 2, 5, true);
            step(&mut state, store.as_mut(), tenant, base + 1, vec![hold]).1.unwrap();
        }
    }
    let mut leader = lead_when_free(url, 0);
    let recovered = leader.store.recover().unwrap();
    let accounts: Vec<(TenantId, AccountId)> = recovered.accounts.iter().map(|a| (a.tenant, a.id)).collect();
    assert_eq!(accounts, [(mine, AccountId(11)), (mine, AccountId(12))]);
    let holds: Vec<TransferId> = recovered.open_holds.iter().map(|h| h.transfer.id).collect();
    assert_eq!(holds, [TransferId(1000)]);
    // The clock is where the whole store left it (it moved every partition's): the other
    // tenant's hold, after its accounts at 20 and 21.
    assert_eq!(recovered.last_timestamp, 22);
    // Other partitions insert transfers meanwhile: every id is asked about.
    assert_eq!(recovered.max_transfer_id, Some(TransferId(u128::MAX)));

    let mut theirs_leader = lead_when_free(url, 1);
    let accounts: Vec<AccountId> = theirs_leader.store.recover().unwrap().accounts.iter().map(|a| a.id).collect();
    assert_eq!(accounts, [AccountId(21), AccountId(22)]);
}

#[test]
fn a_transfer_id_another_partition_stored_is_answered_not_a_failed_commit() {
    let Some(database) = TestDatabase::create("a_transfer_id_another_partition_stored") else { return };
    let url = database.url();
    cluster_partitions(url, Some(2)).unwrap();
    let (mine, theirs) = (tenant_in(0, 2), tenant_in(1, 2));
    let mut zero = open_partition(url, 0, &Options::default()).unwrap();
    let mut one = open_partition(url, 1, &Options::default()).unwrap();
    let mut state0 = recovered(zero.store.as_mut());
    let mut state1 = recovered(one.store.as_mut());
    step(&mut state0, zero.store.as_mut(), mine, 10, vec![open_account(1), open_account(2)]).1.unwrap();
    step(&mut state1, one.store.as_mut(), theirs, 10, vec![open_account(3), open_account(4)]).1.unwrap();
    // Partition 1 stores transfer 500 after partition 0 recovered (its max id is stale).
    step(&mut state1, one.store.as_mut(), theirs, 20, vec![transfer(500, 3, 4, 7, false)]).1.unwrap();
    let (outcomes, committed) = step(&mut state0, zero.store.as_mut(), mine, 30, vec![transfer(500, 1, 2, 7, false)]);
    committed.unwrap();
    assert!(
        matches!(&outcomes[..], [Outcome::Transfers(codes)] if codes == &[ResultCode::ExistsWithDifferentFields]),
        "{outcomes:?}"
    );
}

#[test]
fn the_partition_count_is_fixed_once() {
    let Some(database) = TestDatabase::create("the_partition_count_is_fixed_once") else { return };
    let url = database.url();
    assert!(matches!(cluster_partitions(url, Some(0)), Err(StoreError::Refused(_))));
    assert!(matches!(cluster_partitions(url, Some(crate::PARTITIONS_MAX + 1)), Err(StoreError::Refused(_))));
    assert_eq!(cluster_partitions(url, Some(2)).unwrap(), 2);
    assert_eq!(cluster_partitions(url, None).unwrap(), 2);
    assert_eq!(cluster_partitions(url, Some(2)).unwrap(), 2);
    match cluster_partitions(url, Some(3)) {
        Err(StoreError::Refused(message)) => assert!(
            message.starts_with("this cluster was created with 2 partitions; --partitions cannot change"),
            "{message}"
        ),
        other => panic!("expected Refused, got {other:?}"),
    }
    match open_partition(url, 2, &Options::default()) {
        Err(StoreError::Refused(message)) => assert!(message.contains("partition 2 does not exist"), "{message}"),
        other => panic!("expected Refused, got {other:?}"),
    }
    assert_eq!(count(&mut sql(&database), "SELECT count(*) FROM partitions"), 2);
}

#[test]
fn a_store_opened_whole_creates_one_partition_and_later_counts_are_refused() {
    let Some(database) = TestDatabase::create("a_store_opened_whole_creates_one_partition") else { return };
    let url = database.url();
    drop(crate::open(url).unwrap());
    assert_eq!(cluster_partitions(url, None).unwrap(), 1);
    assert!(matches!(cluster_partitions(url, Some(4)), Err(StoreError::Refused(_))));
}

#[test]
fn the_whole_store_and_a_partition_leader_never_write_at_once() {
    let Some(database) = TestDatabase::create("the_whole_store_and_a_partition_leader") else { return };
    let url = database.url();
    cluster_partitions(url, Some(2)).unwrap();
    let leader = open_partition(url, 1, &Options::default()).unwrap();
    match crate::open(url) {
        Err(StoreError::InUse(message)) => assert!(message.contains("partition 1 has a leader"), "{message}"),
        Err(other) => panic!("expected InUse, got {other}"),
        Ok(_) => panic!("the whole store opened beside partition 1's leader"),
    }
    drop(leader);
    // Once the leader is gone, the whole store leads both partitions, with new epochs; a
    // partition's leader must wait for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let whole = loop {
        match crate::open(url) {
            Ok(opened) => break opened,
            Err(StoreError::InUse(_)) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(other) => panic!("cannot open the whole store: {other}"),
        }
    };
    assert!(matches!(open_partition(url, 0, &Options::default()), Err(StoreError::InUse(_))));
    let epochs: Vec<i64> = sql(&database)
        .query("SELECT epoch FROM partitions ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(epochs, [1, 2]);
    drop(whole);
}

#[test]
fn the_whole_store_is_fenced_when_any_partition_is_taken() {
    let Some(database) = TestDatabase::create("the_whole_store_is_fenced") else { return };
    let url = database.url();
    cluster_partitions(url, Some(2)).unwrap();
    let Opened { mut store, api: _api } = crate::open(url).unwrap();
    let mut state = recovered(store.as_mut());
    step(&mut state, store.as_mut(), TenantId(1), 10, vec![open_account(1)]).1.unwrap();
    fence(url, 1);
    let (_, committed) = step(&mut state, store.as_mut(), TenantId(1), 20, vec![open_account(2)]);
    assert!(matches!(committed, Err(StoreError::Fenced(_))), "{committed:?}");
    assert_eq!(count(&mut sql(&database), "SELECT count(*) FROM accounts"), 1);
}

#[test]
fn an_upgraded_store_keeps_its_clock_in_its_partitions() {
    let Some(database) = TestDatabase::create("an_upgraded_store_keeps_its_clock") else { return };
    let mut client = sql(&database);
    // A store as version 1 left it, with a clock.
    client.batch_execute(include_str!("migrations/0001_init.sql")).unwrap();
    client
        .batch_execute(
            "CREATE TABLE schema_version (version BIGINT NOT NULL); INSERT INTO schema_version VALUES (1);
             UPDATE meta SET value = 77 WHERE key = 'last_timestamp';",
        )
        .unwrap();
    assert_eq!(cluster_partitions(database.url(), Some(2)).unwrap(), 2);
    assert_eq!(count(&mut client, "SELECT count(*) FROM meta WHERE key = 'last_timestamp'"), 0);
    let mut leader = open_partition(database.url(), 1, &Options::default()).unwrap();
    assert_eq!(leader.store.recover().unwrap().last_timestamp, 77);
}

/// Migration 0023 checkpoints balances instead of writing them with each commit. A leader of
/// the version before, still running when a process of this one migrates the database, would
/// go on writing balances without moving `balances_through`, and every reader would replay its
/// transfers twice: the migration takes a new epoch on every partition, which fences it.
#[test]
fn the_balance_checkpoint_migration_fences_the_leaders_before_it() {
    let Some(database) = TestDatabase::create("the_balance_checkpoint_migration_fences") else { return };
    let mut client = sql(&database);
    // A cluster as version 22 left it, partition 0 led at epoch 5 with a clock.
    for migration in &super::open::MIGRATIONS[..22] {
        client.batch_execute(migration).unwrap();
    }
    client
        .batch_execute(
            "CREATE TABLE schema_version (version BIGINT NOT NULL); INSERT INTO schema_version VALUES (22);
             UPDATE cluster_partitions SET count = 1;
             INSERT INTO partitions (id, epoch, last_timestamp) VALUES (0, 5, 77);",
        )
        .unwrap();
    assert_eq!(cluster_partitions(database.url(), None).unwrap(), 1);
    assert_eq!(count(&mut client, "SELECT epoch FROM partitions WHERE id = 0"), 6);
    assert_eq!(count(&mut client, "SELECT balances_through FROM partitions WHERE id = 0"), 77);
    // The old leader's next commit updates no partition row: fenced.
    let fenced = client
        .execute("UPDATE partitions SET last_timestamp = GREATEST(last_timestamp, 80) WHERE id = 0 AND epoch = 5", &[])
        .unwrap();
    assert_eq!(fenced, 0);
}

#[test]
fn a_leader_whose_connection_is_gone_is_fenced() {
    let Some(database) = TestDatabase::create("a_leader_whose_connection_is_gone") else { return };
    let url = database.url();
    cluster_partitions(url, Some(2)).unwrap();
    let mut leader = open_partition(url, 1, &Options::default()).unwrap();
    let tenant = tenant_in(1, 2);
    let mut state = recovered(leader.store.as_mut());
    // The server ends the leader's session (an operator, a network cut, a restart): its lock
    // goes with it, and another engine may lead the partition from now on.
    let ended = count(
        &mut sql(&database),
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_locks
             WHERE locktype = 'advisory' AND classid = x'70617963'::bigint AND objid = 1 AND objsubid = 1
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())) AS t",
    );
    assert_eq!(ended, 1);
    let next = lead_when_free(url, 1);
    assert_eq!(next.epoch, 2);
    // Whatever it calls next says so, and nothing of a commit is written.
    // (A load that wants nothing makes no round trip; this one asks for a transfer.)
    let wanted = paycore_ledger::Prefetch { transfers: vec![paycore_ledger::TransferId(1)], ..Default::default() };
    let loaded = leader.store.load(&wanted);
    assert!(matches!(loaded, Err(StoreError::Fenced(_))), "{loaded:?}");
    let requests = [Request { tenant, command: open_account(1) }];
    state.execute(&requests, 10);
    let committed = leader.store.commit(&state.take_changes(), &[]);
    assert!(matches!(committed, Err(StoreError::Fenced(_))), "{committed:?}");
    assert!(matches!(leader.store.recover(), Err(StoreError::Fenced(_))));
    assert_eq!(count(&mut sql(&database), "SELECT count(*) FROM accounts"), 0);
}

/// Each partition's history has its own watermark, and a read splits at its tenant's: with
/// partition 0 indexed and partition 1 not (its watermark 0, no runs), partition 1's
/// transfers all come from the tail, and partition 0's from the runs.
#[test]
fn a_listing_splits_at_its_own_partitions_watermark() {
    let Some(database) = TestDatabase::create("pg_history_per_partition") else { return };
    let url = database.url();
    cluster_partitions(url, Some(2)).unwrap();
    let mut zero = open_partition(url, 0, &Options::default()).unwrap();
    let mut one = open_partition(url, 1, &Options::default()).unwrap();
    let (t0, t1) = (tenant_in(0, 2), tenant_in(1, 2));
    let (mut s0, mut s1) = (recovered(zero.store.as_mut()), recovered(one.store.as_mut()));
    step(&mut s0, zero.store.as_mut(), t0, 10, vec![open_account(1), open_account(2)]).1.unwrap();
    step(&mut s1, one.store.as_mut(), t1, 10, vec![open_account(3), open_account(4)]).1.unwrap();
    for i in 0..5u64 {
        step(&mut s0, zero.store.as_mut(), t0, 20 + i, vec![transfer(100 + u128::from(i), 1, 2, 1, false)]).1.unwrap();
        step(&mut s1, one.store.as_mut(), t1, 20 + i, vec![transfer(200 + u128::from(i), 3, 4, 1, false)]).1.unwrap();
    }
    let mut client = sql(&database);
    while !super::history::pass(&mut client, &[0, 1], 200_000).unwrap().caught_up {}
    // Partition 1 as if its indexer had not run yet (its own indexer may run again meanwhile,
    // which only makes the state indexed again).
    client
        .batch_execute(&format!(
            "BEGIN; UPDATE history_watermarks SET through = 0 WHERE partition = 1;
             DELETE FROM account_runs WHERE account IN ('\\x{:032x}', '\\x{:032x}'); COMMIT;",
            3, 4
        ))
        .unwrap();
    assert_eq!(count(&mut client, "SELECT count(*) FROM account_runs WHERE last_ts > 0"), 2);
    for (api, tenant, account, ids) in [(&zero.api, t0, 1, 100..105), (&one.api, t1, 3, 200..205)] {
        let listed = crate::testing::history(tenant, api.as_ref(), account, 2);
        let expected: Vec<TransferId> = ids.rev().map(TransferId).collect();
        assert_eq!(listed, expected, "tenant {tenant:?}, account {account}");
    }
}

/// A partition's wish is seen by every process of the database while its holder lives, once
/// however many hold it, and not in another database.
#[test]
fn wishes_to_lead_are_seen_while_they_are_held() {
    let Some(database) = TestDatabase::create("wishes_to_lead") else { return };
    let Some(other) = TestDatabase::create("wishes_to_lead_other") else { return };
    let mut wishes = crate::PartitionWishes::connect(database.url()).unwrap();
    assert_eq!(wishes.wished().unwrap(), Vec::<u32>::new());
    let three = crate::wish_to_lead(database.url(), 3).unwrap();
    let one = crate::wish_to_lead(database.url(), 1).unwrap();
    let one_again = crate::wish_to_lead(database.url(), 1).unwrap();
    let _elsewhere = crate::wish_to_lead(other.url(), 2).unwrap();
    assert_eq!(wishes.wished().unwrap(), [1, 3]);
    // A closed connection's locks go when the server has ended its session: soon, not at once.
    let mut settled = |expected: &[u32]| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let wished = wishes.wished().unwrap();
            if wished == expected || Instant::now() > deadline {
                return wished;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    drop((one, three));
    assert_eq!(settled(&[1]), [1], "the other holder of 1 still waits");
    drop(one_again);
    assert_eq!(settled(&[]), Vec::<u32>::new());
}
