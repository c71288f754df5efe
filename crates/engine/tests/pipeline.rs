//! The engine's pipeline: while batch N commits on the committer thread, batch N+1 executes on
//! the state N left. These tests hold a commit at a gate so that the next batches wait behind
//! it, then check that N+1 fails with N when N's commit fails (nothing of either stays, the
//! state is rebuilt), that N+1's reads of the store (saved responses, transfers) see N, and
//! that a lone request commits on the engine thread itself (no thread hop before its reply).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{account, move_of, no_renderer, open_store, ReadSide};
use paycore_engine::{
    channel, start, EngineConfig, EngineError, EngineHandle, EngineMetrics, Envelope, IdempotencyKey, Priority,
    Renderer, Reply, Stopped, Submission, Submitter, SystemClock, PIPELINE_EVENTS_MIN,
};
use paycore_ledger::{AccountId, ChangeSet, Command, Outcome, Overdraft, Prefetch, Request, ResultCode, TenantId};
use paycore_store::{IdempotencyRecord, Loaded, Recovered, Store, StoreError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const TENANT: TenantId = TenantId(3);

/// One call of `commit`: the thread it ran on, and whether it was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CommitCall {
    thread: String,
    refused: bool,
    transfers: usize,
}

/// A real store whose next commit can be held at a gate (`hold_next`: it signals `entered`,
/// then waits for `release`) or refused (`fail_next`), and which logs every commit.
struct GatedStore {
    inner: Box<dyn Store>,
    hold_next: Arc<AtomicBool>,
    fail_next: Arc<AtomicBool>,
    calls: Arc<Mutex<Vec<CommitCall>>>,
    entered: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
}

impl Store for GatedStore {
    fn recover(&mut self) -> paycore_store::Result<Recovered> {
        self.inner.recover()
    }
    fn load(&mut self, wanted: &Prefetch) -> paycore_store::Result<Loaded> {
        self.inner.load(wanted)
    }
    fn idempotency(&mut self, keys: &[(TenantId, &str)]) -> paycore_store::Result<Vec<IdempotencyRecord>> {
        self.inner.idempotency(keys)
    }
    fn commit(&mut self, changes: &ChangeSet, records: &[IdempotencyRecord]) -> paycore_store::Result<()> {
        // Read before the gate: a commit held there is not the one `fail_next` is set for.
        let refused = self.fail_next.swap(false, Ordering::SeqCst);
        if self.hold_next.swap(false, Ordering::SeqCst) {
            self.entered.send(()).unwrap();
            self.release.recv().unwrap();
        }
        let thread = std::thread::current().name().unwrap_or("").to_owned();
        self.calls.lock().unwrap().push(CommitCall { thread, refused, transfers: changes.transfers.len() });
        if refused {
            return Err(StoreError::Unavailable("injected: the commit failed".into()));
        }
        self.inner.commit(changes, records)
    }
}

struct Harness {
    handle: EngineHandle,
    submitter: Arc<dyn Submitter>,
    thread: std::thread::JoinHandle<Stopped>,
    reader: Arc<dyn ReadSide>,
    metrics: EngineMetrics,
    hold_next: Arc<AtomicBool>,
    fail_next: Arc<AtomicBool>,
    calls: Arc<Mutex<Vec<CommitCall>>>,
    entered: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
}

/// An engine on a gated store of a fresh folder, one request per batch (so that requests
/// queued behind a held commit make batches of their own), with accounts 1 (unlimited), 2 and
/// 3 (no overdraft), and 100 moved from 1 to 2.
async fn boot(dir: &std::path::Path, pipeline: bool, renderer: Renderer) -> Harness {
    boot_with(dir, pipeline, 1, renderer).await
}

/// [`boot`], with batches of fewer than `events_min` events always committed on the engine
/// thread.
async fn boot_with(dir: &std::path::Path, pipeline: bool, events_min: usize, renderer: Renderer) -> Harness {
    let (inner, reader) = open_store(dir).unwrap();
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let store = GatedStore {
        inner,
        hold_next: Arc::new(AtomicBool::new(false)),
        fail_next: Arc::new(AtomicBool::new(false)),
        calls: Arc::new(Mutex::new(Vec::new())),
        entered: entered_tx,
        release: release_rx,
    };
    let (hold_next, fail_next, calls) = (store.hold_next.clone(), store.fail_next.clone(), store.calls.clone());
    let (submitter, queue) = channel(64);
    let metrics = EngineMetrics::default();
    let config = EngineConfig { batch_events_max: 1, pipeline, pipeline_events_min: events_min };
    let thread =
        start(Box::new(store), Box::new(queue), Arc::new(SystemClock), renderer, metrics.clone(), config).unwrap();
    let submitter: Arc<dyn Submitter> = Arc::new(submitter);
    let handle = EngineHandle::new(submitter.clone());
    for (id, overdraft) in [(1, Overdraft::Unlimited), (2, Overdraft::Limit(0)), (3, Overdraft::Limit(0))] {
        let reply = submit(&handle, Command::CreateAccount(account(id, overdraft)), None).await;
        assert!(matches!(reply, Ok(Reply::Done(Outcome::Account(Ok(_))))), "{reply:?}");
    }
    assert_ok(submit(&handle, transfers(&[(10, 1, 2, 100)]), None).await);
    Harness { handle, submitter, thread, reader, metrics, hold_next, fail_next, calls, entered, release }
}

fn transfers(moves: &[(u128, u128, u128, u64)]) -> Command {
    Command::Transfers(moves.iter().map(|&(id, debit, credit, amount)| move_of(id, debit, credit, amount)).collect())
}

async fn submit(handle: &EngineHandle, command: Command, key: Option<&str>) -> Result<Reply, EngineError> {
    let idempotency = key.map(|key| IdempotencyKey { key: key.into(), fingerprint: [9; 32] });
    handle.submit(Submission { request: Request { tenant: TENANT, command }, idempotency }).await
}

fn assert_ok(reply: Result<Reply, EngineError>) {
    match reply {
        Ok(Reply::Done(Outcome::Transfers(codes))) => assert!(codes.iter().all(|c| *c == ResultCode::Ok), "{codes:?}"),
        other => panic!("expected the transfers done, got {other:?}"),
    }
}

type Pending = tokio::task::JoinHandle<Result<Reply, EngineError>>;

impl Harness {
    /// Submits `first` and holds its commit at the gate; then queues each of `behind`, in
    /// order, behind it. Returns the pending replies, `first`'s first. [`Harness::release`]
    /// lets the held commit go on.
    async fn queue_behind_a_held_commit(
        &self,
        first: Command,
        behind: Vec<(Command, Option<&'static str>)>,
    ) -> Vec<Pending> {
        self.hold_next.store(true, Ordering::SeqCst);
        let handle = self.handle.clone();
        let mut pending = vec![tokio::spawn(async move { submit(&handle, first, None).await })];
        self.entered.recv_timeout(Duration::from_secs(5)).expect("the first commit reached the gate");
        for (n, (command, key)) in behind.into_iter().enumerate() {
            let handle = self.handle.clone();
            pending.push(tokio::spawn(async move { submit(&handle, command, key).await }));
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.handle.queue_depth() < n + 1 {
                assert!(Instant::now() < deadline, "the request did not reach the queue");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        pending
    }

    fn release(&self) {
        self.release.send(()).unwrap();
    }

    fn posted(&self, id: u128) -> i64 {
        self.reader.account(TENANT, AccountId(id)).unwrap().unwrap().balances.posted()
    }

    fn calls(&self) -> Vec<CommitCall> {
        self.calls.lock().unwrap().clone()
    }

    fn stop(self) {
        let Harness { handle, submitter, thread, .. } = self;
        drop((handle, submitter));
        assert_eq!(thread.join().unwrap(), Stopped::Closed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_fails_the_batch_executed_on_it_and_leaves_balances_as_before_both() {
    let dir = tempfile::tempdir().unwrap();
    let engine = boot(dir.path(), true, no_renderer()).await;
    let before = engine.calls().len();
    // X's commit is held; behind it wait A (60 of account 2's 100) and B (30 more: B executes
    // on the state A left, 40).
    let pending = engine
        .queue_behind_a_held_commit(
            transfers(&[(20, 1, 3, 1)]),
            vec![(transfers(&[(21, 2, 3, 60)]), None), (transfers(&[(22, 2, 3, 30)]), None)],
        )
        .await;
    // A's commit (the next one) is refused.
    engine.fail_next.store(true, Ordering::SeqCst);
    engine.release();
    let mut replies = Vec::new();
    for task in pending {
        replies.push(task.await.unwrap());
    }
    assert_ok(replies.remove(0));
    for reply in replies {
        match reply {
            Err(EngineError::Unavailable(cause)) => assert!(cause.contains("injected"), "{cause}"),
            other => panic!("expected 503 for A and B, got {other:?}"),
        }
    }
    // A committed on the committer thread while B executed (B waited in the queue), and B was
    // never offered to the store: it rested on A's state.
    let calls = engine.calls()[before..].to_vec();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0], CommitCall { thread: "paycore-engine".into(), refused: false, transfers: 1 });
    assert_eq!(calls[1], CommitCall { thread: "paycore-commit".into(), refused: true, transfers: 1 });
    assert_eq!(engine.metrics.pipelined.get(), 1);
    // Balances as before A and B: only X moved.
    assert_eq!((engine.posted(2), engine.posted(3)), (100, 1));
    // The state was rebuilt from the store: A and B execute anew (neither is `exists`), and a
    // third debit of 20 finds 10 left, not 100 − 30.
    assert_ok(submit(&engine.handle, transfers(&[(21, 2, 3, 60)]), None).await);
    assert_ok(submit(&engine.handle, transfers(&[(22, 2, 3, 30)]), None).await);
    match submit(&engine.handle, transfers(&[(23, 2, 3, 20)]), None).await {
        Ok(Reply::Done(Outcome::Transfers(codes))) => assert_eq!(codes, [ResultCode::InsufficientFunds]),
        other => panic!("expected insufficient funds, got {other:?}"),
    }
    assert_eq!((engine.posted(2), engine.posted(3)), (10, 91));
    // One rebuild for both (the engine answers first, then rebuilds: counted by now).
    assert_eq!(engine.metrics.recoveries.get(), 1);
    engine.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_executed_while_the_one_before_commits_reads_what_that_one_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let renderer: Renderer = Arc::new(|outcome: &Outcome| (201, format!("{outcome:?}").into_bytes()));
    let engine = boot(dir.path(), true, renderer).await;
    // Behind the held X: A (transfer 30, key k), C (transfer 30 again, no key: its id is
    // looked up in the store), B (key k again: its saved response is read from the store).
    // A commits on the committer thread while C executes; C's and B's reads wait for it.
    let pending = engine
        .queue_behind_a_held_commit(
            transfers(&[(20, 1, 3, 1)]),
            vec![
                (transfers(&[(30, 2, 3, 40)]), Some("k")),
                (transfers(&[(30, 2, 3, 40)]), None),
                (transfers(&[(31, 2, 3, 40)]), Some("k")),
            ],
        )
        .await;
    engine.release();
    let mut replies = Vec::new();
    for task in pending {
        replies.push(task.await.unwrap());
    }
    assert_ok(replies.remove(0));
    assert_ok(replies.remove(0));
    match replies.remove(0) {
        Ok(Reply::Done(Outcome::Transfers(codes))) => assert_eq!(codes, [ResultCode::Exists]),
        other => panic!("expected `exists` for the repeated id, got {other:?}"),
    }
    match replies.remove(0) {
        Ok(Reply::Replay { status, body }) => {
            assert_eq!(status, 201);
            assert_eq!(String::from_utf8(body).unwrap(), "Transfers([Ok])");
        }
        other => panic!("expected A's saved response, got {other:?}"),
    }
    assert!(engine.metrics.pipelined.get() >= 1);
    assert_eq!(engine.metrics.recoveries.get(), 0);
    assert_eq!((engine.posted(2), engine.posted(3)), (60, 41));
    engine.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_request_commits_on_the_engine_thread() {
    let dir = tempfile::tempdir().unwrap();
    let engine = boot(dir.path(), true, no_renderer()).await;
    for id in 40..45 {
        assert_ok(submit(&engine.handle, transfers(&[(id, 1, 3, 1)]), None).await);
    }
    assert!(engine.calls().iter().all(|c| c.thread == "paycore-engine"), "{:?}", engine.calls());
    assert_eq!(engine.metrics.pipelined.get(), 0);
    assert_eq!(engine.posted(3), 5);
    engine.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_large_batch_commits_on_the_committer_thread() {
    let dir = tempfile::tempdir().unwrap();
    let engine = boot_with(dir.path(), true, PIPELINE_EVENTS_MIN, no_renderer()).await;
    let before = engine.calls().len();
    let large: Vec<(u128, u128, u128, u64)> = (0..PIPELINE_EVENTS_MIN as u128).map(|i| (1000 + i, 1, 3, 1)).collect();
    // Behind the held X: A (one transfer), B (a bulk request of PIPELINE_EVENTS_MIN), C (one).
    let pending = engine
        .queue_behind_a_held_commit(
            transfers(&[(20, 1, 3, 1)]),
            vec![(transfers(&[(21, 1, 3, 1)]), None), (transfers(&large), None), (transfers(&[(22, 1, 3, 1)]), None)],
        )
        .await;
    engine.release();
    for task in pending {
        assert_ok(task.await.unwrap());
    }
    // A had work waiting but is small: it committed on the engine thread; B went to the
    // committer thread (C waited); C had nothing behind it.
    let threads: Vec<(String, usize)> =
        engine.calls()[before..].iter().map(|c| (c.thread.clone(), c.transfers)).collect();
    let expected =
        [("paycore-engine", 1), ("paycore-engine", 1), ("paycore-commit", PIPELINE_EVENTS_MIN), ("paycore-engine", 1)];
    assert_eq!(threads, expected.map(|(t, n)| (t.to_owned(), n)));
    assert_eq!(engine.metrics.pipelined.get(), 1);
    assert_eq!(engine.posted(3), 3 + PIPELINE_EVENTS_MIN as i64);
    engine.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_pipeline_every_batch_commits_on_the_engine_thread() {
    let dir = tempfile::tempdir().unwrap();
    let engine = boot(dir.path(), false, no_renderer()).await;
    let pending = engine
        .queue_behind_a_held_commit(
            transfers(&[(20, 1, 3, 1)]),
            vec![(transfers(&[(21, 2, 3, 60)]), None), (transfers(&[(22, 2, 3, 30)]), None)],
        )
        .await;
    engine.release();
    for task in pending {
        assert_ok(task.await.unwrap());
    }
    assert!(engine.calls().iter().all(|c| c.thread == "paycore-engine"), "{:?}", engine.calls());
    assert_eq!(engine.metrics.pipelined.get(), 0);
    assert_eq!((engine.posted(2), engine.posted(3)), (10, 91));
    engine.stop();
}

/// Queues `command` straight on the submitter (no task keeps a handle to the engine alive);
/// its reply comes on the returned channel.
fn enqueue(submitter: &Arc<dyn Submitter>, command: Command) -> mpsc::Receiver<Result<Reply, EngineError>> {
    let (tx, rx) = mpsc::channel();
    let envelope = Envelope {
        submission: Submission { request: Request { tenant: TENANT, command }, idempotency: None },
        reply: Box::new(move |reply| tx.send(reply).unwrap()),
    };
    submitter.try_submit(envelope, Priority::RealTime).unwrap();
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_queued_when_the_submitters_go_is_committed_and_answered_before_the_engine_ends() {
    let dir = tempfile::tempdir().unwrap();
    let engine = boot(dir.path(), true, no_renderer()).await;
    let Harness { handle, submitter, thread, reader, metrics, hold_next, entered, release, .. } = engine;
    hold_next.store(true, Ordering::SeqCst);
    let mut pending = vec![enqueue(&submitter, transfers(&[(20, 1, 3, 1)]))];
    entered.recv_timeout(Duration::from_secs(5)).unwrap();
    pending.push(enqueue(&submitter, transfers(&[(21, 2, 3, 60)])));
    pending.push(enqueue(&submitter, transfers(&[(22, 2, 3, 30)])));
    // Every submitter is gone before the held commit goes on.
    drop((handle, submitter));
    release.send(()).unwrap();
    for reply in pending {
        assert_ok(reply.recv_timeout(Duration::from_secs(5)).unwrap());
    }
    assert_eq!(thread.join().unwrap(), Stopped::Closed);
    assert_eq!(metrics.pipelined.get(), 1);
    let posted = |id| reader.account(TENANT, AccountId(id)).unwrap().unwrap().balances.posted();
    assert_eq!((posted(2), posted(3)), (10, 91));
}
