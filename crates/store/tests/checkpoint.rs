//! WAL checkpoints beside the commits: the store's checkpointer thread copies committed frames
//! into the database file without a commit doing it, and the WAL still starts over (stays
//! bounded) under a steady stream of commits.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use common::{eur, mv, open_store, step, TENANT};
use paycore_ledger::{AccountId, Command, NewAccount, Overdraft, State, TransferId};
use std::path::Path;
use std::time::{Duration, Instant};

const FRAME: u64 = 4096 + 24;

fn accounts(n: u128) -> Vec<Command> {
    (1..=n)
        .map(|id| {
            Command::CreateAccount(NewAccount {
                id: AccountId(id),
                currency: eur(),
                overdraft: Overdraft::Unlimited,
                reference: None,
                metadata: None,
            })
        })
        .collect()
}

/// `n` transfers between the accounts 1..=100, ids from `first`.
fn transfers(first: u128, n: u128) -> Command {
    Command::Transfers(
        (first..first + n).map(|id| mv(id, 1 + id % 100, 1 + (id + 1) % 100, 1 + (id % 7) as u64, None)).collect(),
    )
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[test]
fn committed_frames_reach_the_database_file_without_a_commit_checkpointing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, reader) = open_store(dir.path()).unwrap();
    let mut state = State::default();
    step(&mut state, store.as_mut(), 1, accounts(100));
    // Let the checkpointer copy what opening wrote, then measure the file.
    std::thread::sleep(Duration::from_millis(200));
    let db = dir.path().join("paycore.db");
    let before = size(&db);
    // A few hundred frames: far below the commits' own checkpoint threshold (1 000).
    for i in 0..20u128 {
        step(&mut state, store.as_mut(), 10 + i as u64, vec![transfers(1_000 + i * 500, 500)]);
    }
    let wal = size(&dir.path().join("paycore.db-wal"));
    assert!(wal / FRAME < 1000, "the test meant to stay below the automatic checkpoint: {} frames", wal / FRAME);
    let deadline = Instant::now() + Duration::from_secs(10);
    while size(&db) <= before + 100 * FRAME {
        assert!(Instant::now() < deadline, "no frames were copied into the database file");
        std::thread::sleep(Duration::from_millis(20));
    }
    // What the database answers is unchanged by where its pages are.
    let total: i64 =
        (1..=100).map(|id| reader.account(TENANT, AccountId(id)).unwrap().unwrap().balances.posted()).sum();
    assert_eq!(total, 0);
    assert!(reader.transfer(TENANT, TransferId(10_999)).unwrap().is_some());
}

#[test]
fn the_wal_starts_over_under_a_steady_stream_of_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, reader) = open_store(dir.path()).unwrap();
    let mut state = State::default();
    step(&mut state, store.as_mut(), 1, accounts(100));
    // Several times the automatic checkpoint's threshold of frames, with no pause.
    let mut written = 0;
    for i in 0..300u128 {
        step(&mut state, store.as_mut(), 10 + i as u64, vec![transfers(1_000 + i * 300, 300)]);
        written += 300;
    }
    let frames = size(&dir.path().join("paycore.db-wal")) / FRAME;
    assert!(frames < 4000, "the WAL never started over: {frames} frames for {written} transfers");
    assert!(reader.transfer(TENANT, TransferId(1_000 + 299 * 300)).unwrap().is_some());
}
