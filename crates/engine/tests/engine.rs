//! The engine on the real SQLite store: outcomes are durable, idempotency keys are honoured
//! within and across batches, and a restart recovers the same ledger.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{account, boot, move_of as transfer, open_store, Running};
use paycore_engine::{EngineHandle, IdempotencyKey, Renderer, Reply, Submission};
use paycore_ledger::{AccountId, Command, Outcome, Overdraft, Request, ResultCode, TenantId};
use paycore_store::Page;
use std::sync::Arc;

const TENANT: TenantId = TenantId(7);

fn renderer() -> Renderer {
    Arc::new(|outcome: &Outcome| (200, format!("{outcome:?}").into_bytes()))
}

async fn run(handle: &EngineHandle, command: Command, key: Option<(&str, u8)>) -> Reply {
    let idempotency = key.map(|(key, f)| IdempotencyKey { key: key.into(), fingerprint: [f; 32] });
    handle.submit(Submission { request: Request { tenant: TENANT, command }, idempotency }).await.unwrap()
}

fn open(id: u128, overdraft: Overdraft) -> Command {
    Command::CreateAccount(account(id, overdraft))
}

fn posted(engine: &Running, id: u128) -> i64 {
    engine.reader.account(TENANT, AccountId(id)).unwrap().unwrap().balances.posted()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_debits_never_overdraw_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let engine = boot(dir.path(), 1024, renderer());
    run(&engine.handle, open(1, Overdraft::Unlimited), None).await;
    run(&engine.handle, open(2, Overdraft::Limit(0)), None).await;
    run(&engine.handle, open(3, Overdraft::Limit(0)), None).await;
    run(&engine.handle, Command::Transfers(vec![transfer(100, 1, 2, 1000)]), None).await;

    // 40 concurrent debits of 100 from an account holding 1000: exactly 10 succeed.
    let mut tasks = Vec::new();
    for i in 0..40u128 {
        let handle = engine.handle.clone();
        tasks.push(tokio::spawn(async move {
            run(&handle, Command::Transfers(vec![transfer(1000 + i, 2, 3, 100)]), None).await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Reply::Done(Outcome::Transfers(codes)) if codes == [ResultCode::Ok] => ok += 1,
            Reply::Done(Outcome::Transfers(codes)) => assert_eq!(codes, [ResultCode::InsufficientFunds]),
            other => panic!("unexpected reply {other:?}"),
        }
    }
    assert_eq!(ok, 10);
    assert_eq!((posted(&engine, 2), posted(&engine, 3)), (0, 1000));
    engine.stop();

    // After a restart the same transfer id is recognised, and balances are as committed.
    let engine = boot(dir.path(), 1024, renderer());
    assert_eq!((posted(&engine, 1), posted(&engine, 2), posted(&engine, 3)), (-1000, 0, 1000));
    let again = run(&engine.handle, Command::Transfers(vec![transfer(100, 1, 2, 1000)]), None).await;
    assert!(matches!(again, Reply::Done(Outcome::Transfers(c)) if c == [ResultCode::Exists]));
    let changed = run(&engine.handle, Command::Transfers(vec![transfer(100, 1, 2, 999)]), None).await;
    assert!(matches!(changed, Reply::Done(Outcome::Transfers(c)) if c == [ResultCode::ExistsWithDifferentFields]));
    assert_eq!(posted(&engine, 2), 0);
    let page = engine.reader.account_transfers(TENANT, AccountId(3), Page { after: None, limit: 100 }).unwrap();
    assert_eq!(page.len(), 10);
    assert!(page.windows(2).all(|w| w[0].timestamp > w[1].timestamp));
    engine.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_and_refuse_other_requests() {
    let dir = tempfile::tempdir().unwrap();
    let engine = boot(dir.path(), 1024, renderer());
    run(&engine.handle, open(1, Overdraft::Unlimited), None).await;
    run(&engine.handle, open(2, Overdraft::Limit(0)), None).await;

    // Two concurrent submissions with one key: one executes, the other replays it.
    let (a, b) = tokio::join!(
        run(&engine.handle, Command::Transfers(vec![transfer(10, 1, 2, 5)]), Some(("k1", 1))),
        run(&engine.handle, Command::Transfers(vec![transfer(11, 1, 2, 5)]), Some(("k1", 1))),
    );
    let replays = [&a, &b].iter().filter(|r| matches!(r, Reply::Replay { .. })).count();
    assert_eq!(replays, 1, "{a:?} {b:?}");
    assert_eq!(posted(&engine, 2), 5);

    // A later retry gets the saved response; another request under the key is refused.
    match run(&engine.handle, Command::Transfers(vec![transfer(12, 1, 2, 5)]), Some(("k1", 1))).await {
        Reply::Replay { status: 200, body } => assert!(String::from_utf8(body).unwrap().contains("Ok")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        run(&engine.handle, Command::Transfers(vec![transfer(13, 1, 2, 5)]), Some(("k1", 2))).await,
        Reply::KeyReused
    ));
    assert_eq!(posted(&engine, 2), 5);
    engine.stop();
}

#[test]
fn a_second_process_cannot_open_the_same_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open_store(dir.path()).unwrap();
    let second = open_store(dir.path());
    assert!(second.is_err_and(|e| e.to_string().contains("in use")));
}
