//! Online backup and restore of the embedded store (`paycore_store::backup`): a backup taken
//! while the store is open (its lock held, commits going on) restores into a folder that opens
//! with the same ledger and verifies; a restore refuses a folder that is not empty and any file
//! that is not a backup or names a path outside the folder, writing nothing there.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{eur, mv, step};
use paycore_ledger::{AccountId, BatchFormat, BatchId, BatchStatus, Command, NewAccount, Overdraft, State};
use paycore_store::backup::{backup, restore, MANIFEST, MANIFEST_V1};
use paycore_store::{BatchRecord, StoreError};
use std::path::Path;

fn open(id: u128) -> Command {
    Command::CreateAccount(NewAccount {
        id: AccountId(id),
        currency: eur(),
        overdraft: if id == 1 { Overdraft::Unlimited } else { Overdraft::Limit(0) },
        reference: None,
        metadata: None,
    })
}

#[test]
fn a_backup_of_an_open_store_restores_the_ledger_as_of_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let (data, file, restored) = (dir.path().join("data"), dir.path().join("b.tar"), dir.path().join("restored"));
    let (mut store, api) = common::open_store(&data).unwrap();
    let mut state = State::default();
    step(&mut state, store.as_mut(), 10, vec![open(1), open(2)]);
    step(&mut state, store.as_mut(), 20, vec![Command::Transfers(vec![mv(100, 1, 2, 700, None)])]);
    let mut sink = api.file_writer("batches/bat_1.csv").unwrap();
    sink.write_chunk(b"payer,payee,amount\n").unwrap();
    sink.finish().unwrap();
    let mut batch = BatchRecord::new(BatchId(1 << 64), common::TENANT, BatchFormat::Csv, 30);
    batch.status = BatchStatus::Rejected;
    batch.file = Some("batches/bat_1.csv".into());
    api.create_batch(&batch).unwrap();

    // The store stays open (its lock held) while the backup runs; a commit after it is not in it.
    let summary = backup(&data, &file).unwrap();
    assert_eq!(summary.files, 1);
    assert!(summary.database_bytes > 0 && summary.bytes > summary.database_bytes);
    step(&mut state, store.as_mut(), 40, vec![Command::Transfers(vec![mv(101, 1, 2, 5, None)])]);
    assert!(matches!(backup(&data, &file), Err(StoreError::Refused(_))), "an existing file is never overwritten");

    assert_eq!(restore(&file, &restored).unwrap().files, 1);
    let checked = paycore_store::verify::verify(paycore_store::open_for_verify(&restored).unwrap().as_ref()).unwrap();
    assert!(checked.ok(), "{:?}", checked.problems);
    assert_eq!(checked.transfers, 1);
    drop((store, api));
    // As the engine starts: recovery replays the transfers after the last balance checkpoint.
    let (mut store, api) = common::open_store(&restored).unwrap();
    store.recover().unwrap();
    let payee = api.account(common::TENANT, AccountId(2)).unwrap().unwrap();
    assert_eq!(payee.balances.posted(), 700);
    assert_eq!(api.batch(common::TENANT, batch.id).unwrap().unwrap().file.as_deref(), Some("batches/bat_1.csv"));
    assert!(api.open_file("batches/bat_1.csv").unwrap().is_some());
}

/// A tar file of `entries` (name, bytes).
fn tar_of(path: &Path, entries: &[(&str, &[u8])]) {
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        // `append_data` refuses `..`; a hostile file can hold it all the same.
        header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        builder.append(&header, *bytes).unwrap();
    }
    builder.finish().unwrap();
}

#[test]
fn a_restore_refuses_what_is_not_a_backup_and_a_folder_that_is_not_empty() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.tar");
    let target = dir.path().join("new");
    let manifest = (MANIFEST, MANIFEST_V1.as_bytes());
    let cases: [&[(&str, &[u8])]; 5] = [
        &[("paycore.db", &b"x"[..])],
        &[(MANIFEST, &b"paycore backup 99\n"[..]), ("paycore.db", &b"x"[..])],
        &[manifest, ("batches/../../escaped", &b"x"[..])],
        &[manifest, ("LOCK", &b"x"[..])],
        &[manifest],
    ];
    for entries in cases {
        tar_of(&file, entries);
        let refused = restore(&file, &target);
        assert!(matches!(refused, Err(StoreError::Refused(_))), "{entries:?}: {refused:?}");
        assert!(!dir.path().join("escaped").exists());
        assert!(!target.exists(), "{entries:?}: a failed restore leaves the folder as it found it");
    }
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("paycore.db"), b"mine").unwrap();
    tar_of(&file, &[manifest, ("paycore.db", &b"theirs"[..])]);
    assert!(matches!(restore(&file, &target), Err(StoreError::Refused(_))));
    assert_eq!(std::fs::read(target.join("paycore.db")).unwrap(), b"mine");
}
