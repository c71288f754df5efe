//! `paycore verify` on a PostgreSQL database given by its URL: it passes on a store, and
//! refuses a database that holds none. (A tampered balance is found by the store's own tests.)
//! Skips loudly without a PostgreSQL server, except under `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use paycore_store::testing::TestDatabase;
use std::process::Command;

fn verify(url: &str) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_paycore")).arg("verify").arg(url).output().expect("run paycore verify");
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn verify_takes_a_postgres_url() {
    let Some(database) = TestDatabase::create("verify_takes_a_postgres_url") else { return };
    let (code, output) = verify(database.url());
    assert_ne!(code, Some(0), "an empty database is not a store: {output}");
    assert!(output.contains("has no paycore database"), "{output}");

    // A store just created (its schema migrated), then closed.
    drop(paycore_store::open(database.url()).unwrap());
    let (code, output) = verify(database.url());
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains("checked 0 accounts, 0 transfers") && output.contains("ok: every invariant holds"),
        "{output}"
    );
}

#[test]
fn serve_takes_postgres_as_its_store_not_as_its_data_folder() {
    for (args, says) in [
        (["--data", "postgres://127.0.0.1:5432/none"], "--store postgres://"),
        (["--store", "./not-a-url"], "--store takes a postgres:// URL"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_paycore"))
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .output()
            .expect("run paycore serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(says) && !stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
