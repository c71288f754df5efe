//! An engine whose store fences it off (another engine leads its partition now) answers the
//! batch 503, writes nothing of it, and ends its loop with `Stopped::Fenced` instead of
//! rebuilding: on PostgreSQL partitions, and on any store that refuses a commit that way.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{account, execute, no_renderer, start_engine, ReadSide};
use paycore_engine::{channel, EngineError, EngineHandle, Reply, Stopped, Submission, SystemClock};
use paycore_ledger::{AccountId, ChangeSet, Command, Outcome, Overdraft, Prefetch, Request, TenantId};
use paycore_store::testing::{fence, TestDatabase};
use paycore_store::{IdempotencyRecord, Loaded, Recovered, Store, StoreError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The one place this test crate opens a store: partition 0 of a cluster of two at `url`.
fn lead_partition_zero(url: &str) -> (Box<dyn Store>, Arc<dyn ReadSide>) {
    assert_eq!(paycore_store::cluster_partitions(url, Some(2)).unwrap(), 2);
    let leader = paycore_store::open_partition(url, 0, &paycore_store::Options::default()).unwrap();
    (leader.store, leader.api)
}

/// Waits up to 5 s for the engine thread to end; how it ended.
fn ended(thread: std::thread::JoinHandle<Stopped>) -> Stopped {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !thread.is_finished() {
        assert!(Instant::now() < deadline, "the engine thread did not end");
        std::thread::sleep(Duration::from_millis(10));
    }
    thread.join().unwrap()
}

async fn submit(handle: &EngineHandle, tenant: TenantId, command: Command) -> Result<Reply, EngineError> {
    handle.submit(Submission { request: Request { tenant, command }, idempotency: None }).await
}

/// The PostgreSQL client blocks on a runtime of its own: the store's calls are made here,
/// outside the test's runtime, and only the submissions run on it.
#[test]
fn an_engine_fenced_on_its_partition_answers_503_and_stops() {
    let Some(database) = TestDatabase::create("an_engine_fenced_on_its_partition") else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (store, api) = lead_partition_zero(database.url());
    let tenant = (1..).map(TenantId).find(|&t| paycore_store::partition_of(t, 2) == 0).unwrap();
    let (submitter, queue) = channel(64);
    let thread = start_engine(store, Box::new(queue), Arc::new(SystemClock), no_renderer());
    let handle = EngineHandle::new(Arc::new(submitter));

    let opened = runtime.block_on(execute(&handle, tenant, Command::CreateAccount(account(1, Overdraft::Unlimited))));
    assert!(matches!(opened, Outcome::Account(Ok(_))), "{opened:?}");
    // A newer leader takes the partition: the next batch is refused, and the loop ends.
    fence(database.url(), 0);
    match runtime.block_on(submit(&handle, tenant, Command::CreateAccount(account(2, Overdraft::Unlimited)))) {
        Err(EngineError::Unavailable(cause)) => assert!(cause.contains("fenced"), "{cause}"),
        other => panic!("expected 503, got {other:?}"),
    }
    assert_eq!(ended(thread), Stopped::Fenced);
    assert!(api.account(tenant, AccountId(1)).unwrap().is_some());
    assert!(api.account(tenant, AccountId(2)).unwrap().is_none(), "the fenced batch was written");
    // Nothing takes requests any more.
    let after = runtime.block_on(submit(&handle, tenant, Command::CreateAccount(account(3, Overdraft::Unlimited))));
    assert!(after.is_err(), "{after:?}");
}

/// A store that keeps nothing, whose commits are refused as fenced once `fenced` is set, or
/// fail as unavailable once `gone` is set (its connection lost: then recovering says it is
/// fenced); it counts its recoveries, to show what a fenced engine rebuilds.
#[derive(Default)]
struct Fenceable {
    fenced: Arc<AtomicBool>,
    gone: Arc<AtomicBool>,
    recoveries: Arc<std::sync::atomic::AtomicUsize>,
}

impl Store for Fenceable {
    fn recover(&mut self) -> paycore_store::Result<Recovered> {
        self.recoveries.fetch_add(1, Ordering::SeqCst);
        if self.gone.load(Ordering::SeqCst) {
            return Err(StoreError::Fenced("the connection that held the leader lock is gone".into()));
        }
        Ok(Recovered::default())
    }
    fn load(&mut self, _: &Prefetch) -> paycore_store::Result<Loaded> {
        Ok(Loaded::default())
    }
    fn idempotency(&mut self, _: &[(TenantId, &str)]) -> paycore_store::Result<Vec<IdempotencyRecord>> {
        Ok(Vec::new())
    }
    fn commit(&mut self, _: &ChangeSet, _: &[IdempotencyRecord]) -> paycore_store::Result<()> {
        if self.fenced.load(Ordering::SeqCst) {
            Err(StoreError::Fenced("a newer leader took partition 0".into()))
        } else if self.gone.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("connection closed".into()))
        } else {
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_commit_ends_the_loop_without_a_rebuild() {
    let store = Fenceable::default();
    let (fenced, recoveries) = (store.fenced.clone(), store.recoveries.clone());
    let (submitter, queue) = channel(64);
    let thread = start_engine(Box::new(store), Box::new(queue), Arc::new(SystemClock), no_renderer());
    let handle = EngineHandle::new(Arc::new(submitter));
    let tenant = TenantId(1);

    let opened = execute(&handle, tenant, Command::CreateAccount(account(1, Overdraft::Unlimited))).await;
    assert!(matches!(opened, Outcome::Account(Ok(_))), "{opened:?}");
    fenced.store(true, Ordering::SeqCst);
    let refused = submit(&handle, tenant, Command::CreateAccount(account(2, Overdraft::Unlimited))).await;
    assert!(matches!(refused, Err(EngineError::Unavailable(_))), "{refused:?}");
    assert_eq!(ended(thread), Stopped::Fenced);
    assert_eq!(recoveries.load(Ordering::SeqCst), 1, "only the start recovered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_whose_rebuild_is_fenced_ends_the_loop() {
    let store = Fenceable::default();
    let (gone, recoveries) = (store.gone.clone(), store.recoveries.clone());
    let (submitter, queue) = channel(64);
    let thread = start_engine(Box::new(store), Box::new(queue), Arc::new(SystemClock), no_renderer());
    let handle = EngineHandle::new(Arc::new(submitter));

    gone.store(true, Ordering::SeqCst);
    let refused = submit(&handle, TenantId(1), Command::CreateAccount(account(1, Overdraft::Unlimited))).await;
    assert!(matches!(refused, Err(EngineError::Unavailable(_))), "{refused:?}");
    assert_eq!(ended(thread), Stopped::Fenced);
    assert_eq!(recoveries.load(Ordering::SeqCst), 2, "the start, then one rebuild that was refused");
}
