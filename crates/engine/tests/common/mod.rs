//! What the engine's tests share: opening a store, starting an engine on it, submitting to it,
//! and the fixtures (EUR, an account, a move).
//!
//! Every place these tests open a store is [`open_store`], and the reads they make go through
//! [`ReadSide`] trait objects, so a change of how stores are opened is one change here.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use paycore_engine::{
    channel, start, Clock, EngineConfig, EngineError, EngineHandle, EngineMetrics, Queue, Renderer, Reply, Stopped,
    Submission, SystemClock,
};
use paycore_ledger::{AccountId, Command, Currency, NewAccount, NewTransfer, Outcome, Overdraft, Request, TenantId};
use paycore_ledger::{TransferId, TransferOp};
use paycore_store::Store;
use std::path::Path;
use std::sync::Arc;

/// The read side of a store as these tests use it: the API's reads, the batch tables, and
/// the offline check of the whole store (`paycore_store::verify::verify`).
pub use paycore_store::ApiStore as ReadSide;

/// Opens (creating it if needed) the store of the data folder `dir`: the engine's side and
/// the read side.
pub fn open_store(dir: &Path) -> paycore_store::Result<(Box<dyn Store>, Arc<dyn ReadSide>)> {
    let paycore_store::Opened { store, api } = paycore_store::open(dir)?;
    Ok((store, api))
}

/// Starts the engine thread on `store`, fed by `queue`, with the default configuration.
pub fn start_engine(
    store: Box<dyn Store>,
    queue: Box<dyn Queue>,
    clock: Arc<dyn Clock>,
    renderer: Renderer,
) -> std::thread::JoinHandle<Stopped> {
    start(store, queue, clock, renderer, EngineMetrics::default(), EngineConfig::default()).unwrap()
}

/// An engine running on the store of a data folder.
pub struct Running {
    pub handle: EngineHandle,
    pub thread: std::thread::JoinHandle<Stopped>,
    pub reader: Arc<dyn ReadSide>,
}

/// Opens the store of `dir` and starts an engine on it: the system clock, a queue of
/// `queue_capacity` requests, and `renderer` for saved responses.
pub fn boot(dir: &Path, queue_capacity: usize, renderer: Renderer) -> Running {
    let (store, reader) = open_store(dir).unwrap();
    let (submitter, queue) = channel(queue_capacity);
    let thread = start_engine(store, Box::new(queue), Arc::new(SystemClock), renderer);
    Running { handle: EngineHandle::new(Arc::new(submitter)), thread, reader }
}

impl Running {
    /// Stops the engine: the queue closes, the thread finishes what it has and ends.
    pub fn stop(self) {
        drop(self.handle);
        assert_eq!(self.thread.join().unwrap(), Stopped::Closed);
    }
}

/// A renderer whose saved responses are empty (for tests that replay nothing).
pub fn no_renderer() -> Renderer {
    Arc::new(|_: &Outcome| (200, Vec::new()))
}

/// Submits `command` for `tenant`, without a key, on the real-time lane; its outcome.
/// Anything but `Reply::Done` fails the test.
pub async fn execute(handle: &EngineHandle, tenant: TenantId, command: Command) -> Outcome {
    done(handle.submit(Submission { request: Request { tenant, command }, idempotency: None }).await)
}

/// [`execute`] on the background lane (where the batch runner sends its items).
pub async fn execute_background(handle: &EngineHandle, tenant: TenantId, command: Command) -> Outcome {
    done(handle.submit_background(Submission { request: Request { tenant, command }, idempotency: None }).await)
}

fn done(reply: Result<Reply, EngineError>) -> Outcome {
    match reply {
        Ok(Reply::Done(outcome)) => outcome,
        other => panic!("expected an outcome, got {other:?}"),
    }
}

pub fn eur() -> Currency {
    Currency::from_code("EUR").unwrap()
}

/// A new EUR account without reference or metadata.
pub fn account(id: u128, overdraft: Overdraft) -> NewAccount {
    NewAccount { id: AccountId(id), currency: eur(), overdraft, reference: None, metadata: None }
}

/// An unlinked EUR move of `amount` from `debit` to `credit`, without a hold.
pub fn move_of(id: u128, debit: u128, credit: u128, amount: u64) -> NewTransfer {
    NewTransfer {
        id: TransferId(id),
        linked: false,
        op: TransferOp::Move {
            debit_account: AccountId(debit),
            credit_account: AccountId(credit),
            amount,
            currency: eur(),
            hold: None,
        },
    }
}
