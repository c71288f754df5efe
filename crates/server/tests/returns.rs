//! `GET /v1/batches/{id}/report?format=nacha`: the return file of a NACHA batch, with each
//! entry that was not paid sent back with its R-code, reading back cleanly through paycore's
//! own NACHA parser. On both backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{on_both_backends, Backend, Client};
use paycore_formats::{parse, Format, ParseOptions};
use serde_json::{json, Value};

on_both_backends!(a_nacha_batch_returns_what_it_did_not_pay);

const ADMIN: &str = "sk_test_admin_0123456789abcdefghijklmnopqr";
const HEADER: &str = "101 03130001202313801041908161055A094101Federal Reserve Bank   My Bank Name           12345678";
const ODFI: &str = "12104288";

fn pad(text: &str) -> String {
    format!("{text:<94}")
}

/// A PPD credit batch paying `entries` (account, cents), with correct control records.
fn nacha_file(entries: &[(&str, u64)]) -> String {
    let mut lines = vec![HEADER.to_owned()];
    lines.push(pad(&format!(
        "5220{:<16}{:<20}{:<10}PPD{:<10}{:<6}190816   1{ODFI}0000001",
        "Company", "", "1234567890", "PAYROLL", ""
    )));
    let (mut hash, mut credit) = (0u64, 0u64);
    for (n, (account, cents)) in entries.iter().enumerate() {
        hash += 23_138_010;
        credit += cents;
        lines.push(format!("622231380104{account:<17}{cents:010}{:<15}{:<22}  0{ODFI}{:07}", "ID", "Receiver", n + 1));
    }
    let count = entries.len();
    lines.push(pad(&format!(
        "8220{count:06}{hash:010}{:012}{credit:012}{:<10}{:<25}{ODFI}0000001",
        0, "1234567890", ""
    )));
    let blocks = (lines.len() + 1).div_ceil(10);
    lines.push(pad(&format!("9000001{blocks:06}{count:08}{hash:010}{:012}{credit:012}", 0)));
    lines.join("\n") + "\n"
}

async fn account(client: &Client, reference: &str) -> String {
    let a = client.post("/v1/accounts", json!({"currency": "USD", "reference": reference})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    a.body["id"].as_str().unwrap().to_owned()
}

async fn wait(client: &Client, id: &str) -> Value {
    for _ in 0..400 {
        let b = client.get(&format!("/v1/batches/{id}")).await;
        if !matches!(b.body["status"].as_str(), Some("validating" | "processing")) {
            return b.body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("batch {id} did not finish");
}

async fn a_nacha_batch_returns_what_it_did_not_pay(backend: Backend) {
    let Some((client, _data)) = common::boot_on(backend, ADMIN, |_| {}).await else { return };
    let funding = client.post("/v1/accounts", json!({"currency": "USD", "overdraft_limit": "unlimited"})).await;
    let funding = funding.body["id"].as_str().unwrap().to_owned();
    let payer = account(&client, "PAYROLL-1").await;
    account(&client, "231380104111").await;
    account(&client, "231380104222").await;
    let t = json!({"debit_account": funding, "credit_account": payer, "amount": 1_500, "currency": "USD"});
    assert_eq!(client.post("/v1/transfers", t).await.status, 201);
    // Line 3 is paid; line 4 finds too little left (R01); line 5 names no account (R03). A
    // NACHA payee is its RDFI and account number together.
    let file = nacha_file(&[("111", 1_000), ("222", 2_500), ("999", 300)]);
    let request = client
        .http
        .post(format!("{}/v1/batches?format=nacha&payer=PAYROLL-1&on_invalid=skip_invalid", client.base))
        .body(file);
    let answer = client.send_as_key(request).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.body["id"].as_str().unwrap().to_owned();
    let batch = wait(&client, &id).await;
    let items = client.get(&format!("/v1/batches/{id}/items")).await.body;
    assert_eq!(batch["status"], "completed", "{batch}\n{items}");

    let report = client.get(&format!("/v1/batches/{id}/report?format=nacha")).await;
    assert_eq!(report.status, 200, "{}", String::from_utf8_lossy(&report.bytes));
    let text = String::from_utf8(report.bytes).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.iter().all(|l| l.len() == 94), "{text}");
    assert_eq!(lines.len(), 10, "{text}");
    // Two returns, each an entry (a 21: the return of a credit) and its Addenda 99.
    assert_eq!(&lines[2][..3], "621");
    assert_eq!(&lines[2][12..39], "222              0000002500");
    assert_eq!(&lines[3][..21], "799R01121042880000002");
    assert_eq!(&lines[4][12..39], "999              0000000300");
    assert_eq!(&lines[5][..21], "799R03121042880000003");
    // It reads back cleanly through paycore's own parser: returns, never paid.
    let mut items = Vec::new();
    let mut diagnostics = Vec::new();
    let options = ParseOptions { default_payer: Some("x".to_owned()), default_currency: None };
    let mut sink = |record: Result<paycore_formats::Item, paycore_formats::Diagnostic>| match record {
        Ok(item) => items.push(item),
        Err(d) => diagnostics.push(d),
    };
    let summary = parse(Format::Nacha, text.as_bytes(), &options, &mut sink).unwrap();
    assert!(summary.control_errors.is_empty(), "{:?}", summary.control_errors);
    assert!(items.is_empty());
    let codes: Vec<(u64, &str)> = diagnostics.iter().map(|d| (d.line, d.code)).collect();
    assert_eq!(codes, vec![(3, "return_entry_not_matched"), (5, "return_entry_not_matched")]);

    // Only a NACHA batch has one.
    let csv = format!("payee,amount,currency\n{payer},1.00,USD\n");
    let request = client
        .http
        .post(format!("{}/v1/batches?payer={funding}", client.base))
        .header("content-type", "text/csv")
        .body(csv);
    let other = client.send_as_key(request).await;
    let other = other.body["id"].as_str().unwrap().to_owned();
    wait(&client, &other).await;
    let refused = client.get(&format!("/v1/batches/{other}/report?format=nacha")).await;
    assert_eq!((refused.status, refused.body["error"]["param"].as_str()), (400, Some("format")), "{}", refused.body);
}
