//! The console in headless chromium, 1366×768, as a new operator uses it: sign in by
//! keyboard, read a balance, upload a file with errors and see them per line, upload a good
//! one and watch it finish, capture and refund a payment, watch the health charts. A PNG of
//! each page is kept under `target/console-screenshots/`.

use super::webdriver::{Browser, Driver};
use super::ADMIN;
use serde_json::json;
use std::path::PathBuf;

fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_reads_a_balance_uploads_files_and_captures_and_refunds() {
    let Some((driver, chromium)) = Driver::start().await else { return };
    let (api, data) = crate::common::boot(ADMIN, |_| {}).await;
    let funding = api.account(json!("unlimited")).await;
    let r = api.post("/v1/accounts", json!({"currency": "EUR", "reference": "PAYER-1"})).await;
    let payer = r.body["id"].as_str().unwrap().to_owned();
    let payee = api.account(json!(0)).await;
    assert_eq!(api.transfer(&funding, &payer, 123_456).await.body["result"], "ok");
    let pay = super::held_payment(&api, &payer, &payee, 5_000).await;
    let shots = screenshots();
    let browser = Browser::open(&driver, &chromium).await;
    let base = &api.base;

    // Sign in, by keyboard: the key, then Enter.
    browser.goto(&format!("{base}/console")).await;
    assert!(browser.url().await.ends_with("/console/sign-in"));
    browser.screenshot(&shots.join("01-sign-in.png")).await;
    browser.type_into("#key", &format!("{ADMIN}\u{E007}")).await;
    browser.find("#q").await;
    assert!(browser.url().await.ends_with("/console/accounts"));

    // Find the payer by its reference and read its balance: the API's figures, as money.
    browser.type_into("#q", "PAYER-1\u{E007}").await;
    let posted = browser.wait_text("#balance-posted", 10, |t| !t.is_empty()).await;
    assert_eq!(posted, "1 234,56 €");
    assert_eq!(browser.text("#balance-held").await, "50,00 €");
    assert_eq!(browser.text("#balance-available").await, "1 184,56 €");
    let balance = api.balance(&payer).await;
    assert_eq!((balance["posted"].as_i64(), balance["available"].as_i64()), (Some(123_456), Some(118_456)));
    browser.screenshot(&shots.join("02-account.png")).await;

    // A file with errors: shown per line, nothing paid.
    let folder = data.path().join("uploads");
    std::fs::create_dir_all(&folder).unwrap();
    let bad = folder.join("payroll-bad.csv");
    std::fs::write(&bad, format!("payee,amount,currency\n{payee},1.00,EUR\n{payee},ten,EUR\n{payee},2.00,EUR\n"))
        .unwrap();
    browser.click("nav a[href='/console/batches']").await;
    browser.type_into("#file", bad.to_str().unwrap()).await;
    browser.type_into("#payer", "PAYER-1").await;
    browser.click("#upload-button").await;
    browser.wait_url("/console/batches/bat_", 10).await;
    browser.wait_text("#batch-status", 20, |t| t == "rejected").await;
    let invalid = browser.text("#invalid-lines").await;
    assert!(invalid.contains("3 line 3"), "{invalid}");
    assert_eq!(browser.text("#count-invalid").await, "1");
    browser.screenshot(&shots.join("03-batch-errors.png")).await;
    assert_eq!(api.balance(&payee).await["posted"], 0);

    // A good one: watch it finish; its counts and control total.
    let good = folder.join("payroll.csv");
    std::fs::write(&good, format!("payee,amount,currency,reference\n{payee},1.00,EUR,a\n{payee},2.50,EUR,b\n"))
        .unwrap();
    browser.goto(&format!("{base}/console/batches")).await;
    browser.type_into("#file", good.to_str().unwrap()).await;
    browser.type_into("#payer", "PAYER-1").await;
    browser.click("#upload-button").await;
    browser.wait_url("/console/batches/bat_", 10).await;
    browser.wait_text("#batch-status", 30, |t| t == "completed").await;
    assert_eq!(browser.text("#count-succeeded").await, "2");
    assert!(browser.text("#totals").await.contains("3,50 €"));
    assert!(browser.has("#report-csv").await && browser.has("#report-pain002").await);
    browser.screenshot(&shots.join("04-batch-completed.png")).await;
    assert_eq!(api.balance(&payee).await["posted"], 350);

    // Capture the held payment, behind its confirmation step; then refund part of it.
    browser.goto(&format!("{base}/console/payments")).await;
    browser.type_into("#id", &format!("{pay}\u{E007}")).await;
    assert_eq!(browser.wait_text("#payment-status", 10, |t| !t.is_empty()).await, "requires_capture");
    browser.click("#action-capture").await;
    browser.find("#confirm").await;
    browser.screenshot(&shots.join("05-confirm-capture.png")).await;
    browser.click("#confirm").await;
    browser.wait_text("#done", 10, |t| t == "Captured.").await;
    assert_eq!(browser.text("#payment-status").await, "succeeded");
    browser.click("#action-refund").await;
    browser.type_into("#amount", "12.50").await;
    browser.click("#confirm").await;
    browser.wait_text("#done", 10, |t| t == "Refunded.").await;
    assert_eq!(browser.text("#payment-refunded").await, "12,50 €");
    browser.screenshot(&shots.join("06-payment.png")).await;
    let p = api.get(&format!("/v1/payments/{pay}")).await;
    assert_eq!((p.body["amount_captured"].as_u64(), p.body["amount_refunded"].as_u64()), (Some(5_000), Some(1_250)));
    assert_eq!(api.balance(&payee).await["posted"], 350 + 5_000 - 1_250);

    // Health: the charts fill from /metrics.
    browser.goto(&format!("{base}/console/health")).await;
    browser.wait_text("#now-batch", 15, |t| t != "…").await;
    browser.screenshot(&shots.join("07-health.png")).await;

    // Sign out: back to the sign-in page, and the console is closed.
    browser.click(".who button").await;
    browser.find("#key").await;
    browser.goto(&format!("{base}/console/accounts")).await;
    assert!(browser.url().await.ends_with("/console/sign-in"));
    browser.close().await;
}
