//! A commit the disk refuses (`StoreError::Full`): the batch is answered `StorageFull` and
//! nothing of it stays in memory (the state is rebuilt from the store), writes are then refused
//! without executing for a short, growing while (one rebuild per try, not per batch), and once
//! the disk has room again writes succeed without a restart. The disk is simulated here (a real
//! SQLite store whose commits are refused while `full` is set); `store` and `cli` fill a real
//! small filesystem.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{account, execute, move_of, no_renderer, open_store, start_engine};
use paycore_engine::{channel, EngineError, EngineHandle, Reply, Submission, SystemClock};
use paycore_ledger::{AccountId, ChangeSet, Command, Outcome, Overdraft, Prefetch, Request, ResultCode, TenantId};
use paycore_store::{IdempotencyRecord, Loaded, Recovered, Store, StoreError};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TENANT: TenantId = TenantId(1);

/// A store whose commits are refused as `Full` while `full` is set; counts the commits tried
/// and the recoveries (the engine's rebuilds).
struct FillableDisk {
    inner: Box<dyn Store>,
    full: Arc<AtomicBool>,
    commits: Arc<AtomicUsize>,
    recoveries: Arc<AtomicUsize>,
}

impl Store for FillableDisk {
    fn recover(&mut self) -> paycore_store::Result<Recovered> {
        self.recoveries.fetch_add(1, Ordering::SeqCst);
        self.inner.recover()
    }
    fn load(&mut self, wanted: &Prefetch) -> paycore_store::Result<Loaded> {
        self.inner.load(wanted)
    }
    fn idempotency(&mut self, keys: &[(TenantId, &str)]) -> paycore_store::Result<Vec<IdempotencyRecord>> {
        self.inner.idempotency(keys)
    }
    fn commit(&mut self, changes: &ChangeSet, records: &[IdempotencyRecord]) -> paycore_store::Result<()> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        if self.full.load(Ordering::SeqCst) {
            return Err(StoreError::Full("database or disk is full".into()));
        }
        self.inner.commit(changes, records)
    }
}

async fn transfer(handle: &EngineHandle, id: u128, amount: u64) -> Result<Reply, EngineError> {
    let command = Command::Transfers(vec![move_of(id, 1, 2, amount)]);
    handle.submit(Submission { request: Request { tenant: TENANT, command }, idempotency: None }).await
}

fn ok(reply: Result<Reply, EngineError>) {
    match reply {
        Ok(Reply::Done(Outcome::Transfers(codes))) => assert_eq!(codes, [ResultCode::Ok]),
        other => panic!("expected a transfer done, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_storage_full_keeps_nothing_and_passes_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (inner, reader) = open_store(dir.path()).unwrap();
    let store = FillableDisk {
        inner,
        full: Arc::new(AtomicBool::new(false)),
        commits: Arc::new(AtomicUsize::new(0)),
        recoveries: Arc::new(AtomicUsize::new(0)),
    };
    let (full, commits, recoveries) = (store.full.clone(), store.commits.clone(), store.recoveries.clone());
    let (submitter, queue) = channel(64);
    let thread = start_engine(Box::new(store), Box::new(queue), Arc::new(SystemClock), no_renderer());
    let handle = EngineHandle::new(Arc::new(submitter));
    for id in [1, 2] {
        let opened = execute(&handle, TENANT, Command::CreateAccount(account(id, Overdraft::Unlimited))).await;
        assert!(matches!(opened, Outcome::Account(Ok(_))), "{opened:?}");
    }
    ok(transfer(&handle, 100, 40).await);

    full.store(true, Ordering::SeqCst);
    let tried = commits.load(Ordering::SeqCst);
    let refused = transfer(&handle, 200, 7).await;
    assert_eq!(refused, Err(EngineError::StorageFull));
    // Right after, writes are refused without being tried (100 ms, then 200 ms, …): not a
    // commit and a rebuild each.
    for id in 300..310 {
        assert_eq!(transfer(&handle, id, 1).await, Err(EngineError::StorageFull));
    }
    let tried = commits.load(Ordering::SeqCst) - tried;
    assert!((1..=3).contains(&tried), "{tried} of 11 refused writes were tried against the full disk");
    // The engine answers first, then rebuilds: the later answers came after the first rebuild.
    assert!(recoveries.load(Ordering::SeqCst) >= 2, "no rebuild after the refused commit");
    // Reads go on, and see only what was committed.
    let payee = reader.account(TENANT, AccountId(2)).unwrap().unwrap();
    assert_eq!(payee.balances.credits_posted, 40);

    // Room again: a write goes through within the longest wait (2 s), no restart.
    full.store(false, Ordering::SeqCst);
    let started = Instant::now();
    loop {
        match transfer(&handle, 200, 7).await {
            Err(EngineError::StorageFull) => {
                assert!(started.elapsed() < Duration::from_secs(4), "still refused after the room returned");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // The refused transfer 200 left nothing in memory: it executes anew, not `exists`.
            reply => {
                ok(reply);
                break;
            }
        }
    }
    ok(transfer(&handle, 201, 3).await);
    let payee = reader.account(TENANT, AccountId(2)).unwrap().unwrap();
    assert_eq!(payee.balances.credits_posted, 50);
    let payer = reader.account(TENANT, AccountId(1)).unwrap().unwrap();
    assert_eq!(payer.balances.debits_posted, 50);
    drop(handle);
    assert_eq!(thread.join().unwrap(), paycore_engine::Stopped::Closed);
}
