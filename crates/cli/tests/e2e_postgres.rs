//! `paycore serve --store postgres://…` end to end: the real process on a throwaway
//! PostgreSQL database, killed (SIGKILL) and started again; every acknowledged transfer and
//! batch is there after the restart, the data folder holds only the first API key's file, a
//! SIGTERM stops it cleanly, and `paycore verify --store URL` passes. Skips loudly without a PostgreSQL server, except under
//! `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Options, Server};
use paycore_store::testing::TestDatabase;
use serde_json::json;
use std::process::Command;

/// `paycore verify` with `args`: its exit status and what it printed.
fn verify(args: &[&str]) -> (Option<i32>, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_paycore")).arg("verify").args(args).output().expect("run paycore verify");
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn serve_on_postgres_keeps_every_acknowledged_write_across_a_kill_and_verifies() {
    let Some(database) = TestDatabase::create("serve_on_postgres_keeps_every_acknowledged_write") else { return };
    let url = database.url().to_owned();
    // No key given: the first one is generated and written to the data folder.
    let options = Options { api_key: None, extra_args: vec!["--store".into(), url.clone()] };
    let mut server = Server::start_with(options);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let (payer, payee, batch) = runtime.block_on(async {
        let payer = server.open_account("EUR", Some(json!(0))).await;
        let payee = server.open_account_ref("EUR", "PAYEE-1", Some(json!(0))).await;
        server.fund(&payer, 10_000).await;
        let moved = server
            .post(
                "/v1/transfers",
                json!({"debit_account": payer, "credit_account": payee, "amount": 2_500, "currency": "EUR"}),
            )
            .await;
        assert_eq!(moved.expect(201)["result"], "ok");
        // A batch through the JSON form: its file goes to the database.
        let items = json!({"items": [{"payee": "PAYEE-1", "amount": 125, "reference": "R1"},
                                     {"payee": "NOBODY", "amount": 1, "reference": "R2"}]});
        let query = format!("payer={payer}&currency=EUR&on_invalid=skip_invalid");
        let batch = server.submit_batch(&query, items.to_string().into_bytes(), Some("application/json")).await;
        let done = server.wait_for_batch(&batch).await;
        assert_eq!((done["status"].as_str(), done["counts"]["succeeded"].as_u64()), (Some("completed"), Some(1)));
        (payer, payee, batch)
    });

    let mut folder: Vec<String> =
        std::fs::read_dir(&server.data_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    folder.sort();
    assert_eq!(folder, ["api-key"], "with --store, the data folder holds only the first key's file");

    server.restart();
    runtime.block_on(async {
        assert_eq!(server.posted(&payer).await, 10_000 - 2_500 - 125);
        assert_eq!(server.posted(&payee).await, 2_500 + 125);
        let report = server.get_text(&format!("/v1/batches/{batch}/report?format=csv")).await;
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines.len(), 3, "{report}");
        assert!(lines[1].starts_with("1,R1,") && lines[1].contains(",1.25,EUR,succeeded,"), "{report}");
        assert!(lines[2].starts_with("2,R2,") && lines[2].contains(",failed,"), "{report}");
    });
    // A graceful stop closes the store's connections off the async workers: no panic.
    let pid = server.pid().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let stopped = |log: &str| log.lines().any(|line| line.ends_with(" stopped"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !stopped(&server.stderr()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let log = server.stderr();
    assert!(stopped(&log) && !log.contains("panicked"), "{log}");
    server.kill9();

    for args in [vec!["--store", url.as_str()], vec![url.as_str()]] {
        let (code, output) = verify(&args);
        assert_eq!(code, Some(0), "verify {args:?}: {output}");
        assert!(
            output.contains("checked 3 accounts, 3 transfers, 0 payments, 2 batch items")
                && output.contains("ok: every invariant holds"),
            "{output}"
        );
    }
}
