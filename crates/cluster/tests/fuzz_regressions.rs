//! The `wire` fuzz target's files, replayed by ordinary tests: every input it failed with
//! (`fuzz/regressions/wire/`) must decode or fail without a panic, and every seed
//! (`fuzz/corpus/wire/`) is a message of this format version that decodes and encodes back
//! to the same bytes. A change of the format fails here: bump `WIRE_VERSION` and write new
//! seeds (`cargo test -p paycore-cluster --test fuzz_regressions -- --ignored write_seeds`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use paycore_cluster::wire::{decode_reply, decode_submission, encode_reply, encode_submission};
use proptest::strategy::{Strategy, ValueTree};
use std::path::PathBuf;

fn files(folder: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz").join(folder);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut files: Vec<_> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file() && path.extension().is_none())
        .map(|path| (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn regressions_decode_or_fail_without_panic() {
    for (name, data) in files("regressions/wire") {
        if let Ok(submission) = decode_submission(&data) {
            assert_eq!(decode_submission(&encode_submission(&submission)).unwrap(), submission, "{name}");
        }
        if let Ok(reply) = decode_reply(&data) {
            assert_eq!(decode_reply(&encode_reply(&reply)).unwrap(), reply, "{name}");
        }
    }
}

#[test]
fn seeds_are_messages_of_this_version() {
    let seeds = files("corpus/wire");
    assert!(seeds.len() >= 20, "{} seeds", seeds.len());
    for (name, data) in seeds {
        if name.starts_with("submission") {
            let submission = decode_submission(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(encode_submission(&submission), data, "{name}");
        } else {
            let reply = decode_reply(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(encode_reply(&reply), data, "{name}");
        }
    }
}

#[test]
#[ignore = "writes the fuzz target's seeds"]
fn write_seeds() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/wire");
    std::fs::create_dir_all(&dir).unwrap();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for i in 0..12 {
        let submission = common::submission().new_tree(&mut runner).unwrap().current();
        std::fs::write(dir.join(format!("submission-{i:02}")), encode_submission(&submission)).unwrap();
        let reply = common::reply().new_tree(&mut runner).unwrap().current();
        std::fs::write(dir.join(format!("reply-{i:02}")), encode_reply(&reply)).unwrap();
    }
}
