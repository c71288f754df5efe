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
fn serve_refuses_a_postgres_store_until_cluster_mode_with_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_paycore"))
        .args(["serve", "--data", "postgres://127.0.0.1:5432/none", "--listen", "127.0.0.1:0"])
        .output()
        .expect("run paycore serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("needs cluster mode") && !stderr.contains("panicked"), "{stderr}");
}
