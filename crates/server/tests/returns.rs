//! NACHA returns both ways, on both backends. Out: `GET /v1/batches/{id}/report?format=nacha`,
//! the return file of a NACHA batch, with each entry that was not paid sent back with its
//! R-code, reading back cleanly through paycore's own NACHA parser. In: a file of returns
//! (Addenda 99) and notifications of change (Addenda 98) about an earlier batch's entries,
//! matched by trace number: returns reverse the original items (`returned`, money back, a
//! `batch_item.returned` webhook), once; notifications are recorded and move nothing. The
//! pain.002 of a NACHA batch counts prenotes, zero-dollar entries and recorded notifications
//! as neither paid nor rejected.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{on_both_backends, Backend, Client};
use paycore_formats::{parse, Format, ParseOptions};
use serde_json::{json, Value};

on_both_backends!(a_nacha_batch_returns_what_it_did_not_pay);
on_both_backends!(returns_reverse_their_originals_once_and_notifications_move_nothing);
on_both_backends!(a_pain002_of_a_nacha_batch_counts_skipped_entries_as_neither);
on_both_backends!(an_iat_return_is_matched_like_a_ppd_one);

const ADMIN: &str = "sk_test_admin_0123456789abcdefghijklmnopqr";
const HEADER: &str = "101 03130001202313801041908161055A094101Federal Reserve Bank   My Bank Name           12345678";
const ODFI: &str = "12104288";

fn pad(text: &str) -> String {
    format!("{text:<94}")
}

/// A PPD file of one batch from `odfi` holding `entries` (each an entry record and its
/// addenda), with the control records that count, hash and sum them.
fn nacha_file_of(odfi: &str, entries: &[Vec<String>]) -> String {
    let header =
        format!("5200{:<16}{:<20}{:<10}PPD{:<10}{:<6}190816   1{odfi}0000001", "Bank", "", "1234567890", "RETURNS", "");
    nacha_file_under(&header, odfi, entries)
}

/// A file of one batch under `batch_header` (from `odfi`) holding `entries`, with the control
/// records that count, hash and sum them.
fn nacha_file_under(batch_header: &str, odfi: &str, entries: &[Vec<String>]) -> String {
    let mut lines = vec![HEADER.to_owned()];
    lines.push(pad(batch_header));
    let (mut hash, mut debit, mut credit, mut records) = (0u64, 0u64, 0u64, 0u64);
    for records_of_entry in entries {
        let entry = &records_of_entry[0];
        hash += entry[3..11].parse::<u64>().unwrap();
        let cents: u64 = entry[29..39].parse().unwrap();
        if (b'0'..=b'4').contains(&entry.as_bytes()[2]) {
            credit += cents;
        } else {
            debit += cents;
        }
        records += records_of_entry.len() as u64;
        lines.extend(records_of_entry.iter().map(|r| pad(r)));
    }
    lines.push(pad(&format!(
        "8200{records:06}{hash:010}{debit:012}{credit:012}{:<10}{:<25}{odfi}0000001",
        "1234567890", ""
    )));
    let blocks = (lines.len() + 1).div_ceil(10);
    lines.push(pad(&format!("9000001{blocks:06}{records:08}{hash:010}{debit:012}{credit:012}")));
    lines.join("\n") + "\n"
}

/// The receiving bank of the payroll file (ODFI of its returns).
const RDFI: &str = "23138010";

/// A return (code 21: of a checking credit) of the payroll file's entry `seq` to `account` of
/// `cents`, with its Addenda 99 (`reason`), as moov-io/ach's `return-PPD` fixture lays it out:
/// the return goes to the original ODFI, and its addenda names the original trace and RDFI.
fn return_entry(seq: u64, account: &str, cents: u64, reason: &str, own: u64) -> Vec<String> {
    let trace = format!("{RDFI}{own:07}");
    vec![
        format!("621{ODFI}2{account:<17}{cents:010}{:<15}{:<22}  1{trace}", "ID", "Receiver"),
        format!("799{reason}{ODFI}{seq:07}{:<6}{RDFI}{:<44}{trace}", "", ""),
    ]
}

/// A notification of change (code 26 would be a debit; 21 as moov's COR fixtures) about the
/// payroll file's entry `seq`, with its Addenda 98 (`change`, corrected data).
fn change_entry(seq: u64, account: &str, change: &str, corrected: &str, own: u64) -> Vec<String> {
    let trace = format!("{RDFI}{own:07}");
    vec![
        format!("621{ODFI}2{account:<17}{:010}{:<15}{:<22}  1{trace}", 0, "ID", "Receiver"),
        format!("798{change}{ODFI}{seq:07}{:<6}{RDFI}{corrected:<29}{:<15}{trace}", "", ""),
    ]
}

/// A PPD credit batch paying `entries` (account, cents), with correct control records.
fn nacha_file(entries: &[(&str, u64)]) -> String {
    let coded: Vec<(&str, &str, u64)> = entries.iter().map(|(account, cents)| ("22", *account, *cents)).collect();
    nacha_file_coded(&coded)
}

/// A PPD credit batch of `entries` (transaction code, account, cents): 22 a credit, 23 a
/// prenote, 24 a zero-dollar entry; with correct control records.
fn nacha_file_coded(entries: &[(&str, &str, u64)]) -> String {
    let mut lines = vec![HEADER.to_owned()];
    lines.push(pad(&format!(
        "5220{:<16}{:<20}{:<10}PPD{:<10}{:<6}190816   1{ODFI}0000001",
        "Company", "", "1234567890", "PAYROLL", ""
    )));
    let (mut hash, mut credit) = (0u64, 0u64);
    for (n, (code, account, cents)) in entries.iter().enumerate() {
        hash += 23_138_010;
        credit += cents;
        lines.push(format!(
            "6{code}231380104{account:<17}{cents:010}{:<15}{:<22}  0{ODFI}{:07}",
            "ID",
            "Receiver",
            n + 1
        ));
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

async fn upload(client: &Client, query: &str, file: String) -> Value {
    let request = client.http.post(format!("{}/v1/batches?format=nacha&{query}", client.base)).body(file);
    let answer = client.send_as_key(request).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.body["id"].as_str().unwrap().to_owned();
    wait(client, &id).await
}

async fn posted(client: &Client, account: &str) -> i64 {
    let b = client.get(&format!("/v1/accounts/{account}")).await;
    b.body["balance"]["posted"].as_i64().unwrap_or_else(|| panic!("{}", b.body))
}

/// Each item's (status, failure_code).
async fn statuses(client: &Client, batch: &str) -> Vec<(String, Option<String>)> {
    let items = client.get(&format!("/v1/batches/{batch}/items")).await.body;
    items["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["status"].as_str().unwrap().to_owned(), i["failure_code"].as_str().map(str::to_owned)))
        .collect()
}

fn owned(pairs: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
    pairs.iter().map(|(s, c)| ((*s).to_owned(), c.map(str::to_owned))).collect()
}

#[derive(Default)]
struct Hooks {
    received: std::sync::Mutex<Vec<Value>>,
}

async fn returns_reverse_their_originals_once_and_notifications_move_nothing(backend: Backend) {
    let Some((client, data)) = common::boot_on(backend, ADMIN, |config| {
        config.webhook_retry_min = std::time::Duration::from_millis(50);
    })
    .await
    else {
        return;
    };
    // A webhook receiver for the returns.
    let hooks = std::sync::Arc::new(Hooks::default());
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(h): axum::extract::State<std::sync::Arc<Hooks>>, body: axum::body::Bytes| async move {
                    h.received.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                    axum::http::StatusCode::OK
                },
            ),
        )
        .with_state(hooks.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let endpoint = client.post("/v1/webhook_endpoints", json!({"url": url, "events": ["batch_item.returned"]})).await;
    assert_eq!(endpoint.status, 201, "{}", endpoint.body);

    let funding = client.post("/v1/accounts", json!({"currency": "USD", "overdraft_limit": "unlimited"})).await;
    let funding = funding.body["id"].as_str().unwrap().to_owned();
    let payer = account(&client, "PAYROLL-1").await;
    let one = account(&client, "231380104111").await;
    let two = account(&client, "231380104222").await;
    let three = account(&client, "231380104333").await;
    let t = json!({"debit_account": funding, "credit_account": payer, "amount": 10_000, "currency": "USD"});
    assert_eq!(client.post("/v1/transfers", t).await.status, 201);

    // The payroll: three credits, all paid.
    let payroll = upload(&client, "payer=PAYROLL-1", nacha_file(&[("111", 1_000), ("222", 2_500), ("333", 400)])).await;
    assert_eq!(payroll["status"], "completed", "{payroll}");
    let payroll = payroll["id"].as_str().unwrap().to_owned();
    assert_eq!(posted(&client, &payer).await, 6_100);

    // The RDFI sends back entries 1 (R01) and 2 (R03); a return of entry 3 of the wrong
    // amount; a return of an entry never sent; a notification of change about entry 3.
    let returns = nacha_file_of(
        RDFI,
        &[
            return_entry(1, "111", 1_000, "R01", 1),
            return_entry(2, "222", 2_500, "R03", 2),
            return_entry(3, "333", 399, "R01", 3),
            return_entry(9, "999", 100, "R03", 4),
            change_entry(3, "333", "C01", "1918171614", 5),
        ],
    );
    let first = upload(&client, "payer=PAYROLL-1&on_invalid=skip_invalid", returns.clone()).await;
    assert_eq!(first["status"], "completed", "{first}");
    let first_id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(
        statuses(&client, &first_id).await,
        owned(&[
            ("succeeded", None),
            ("succeeded", None),
            ("invalid", Some("return_amount_mismatch")),
            ("invalid", Some("return_entry_not_matched")),
            ("invalid", Some("notification_recorded")),
        ])
    );
    // The money is back; the notification moved nothing.
    assert_eq!(posted(&client, &payer).await, 9_600);
    assert_eq!((posted(&client, &one).await, posted(&client, &two).await, posted(&client, &three).await), (0, 0, 400));
    // The originals say so.
    let items = client.get(&format!("/v1/batches/{payroll}/items")).await.body;
    let items = items["data"].as_array().unwrap();
    assert_eq!((items[0]["status"].as_str(), items[0]["failure_code"].as_str()), (Some("returned"), Some("R01")));
    assert_eq!(items[0]["return"]["reason"], "Insufficient Funds", "{}", items[0]);
    assert_eq!(
        (items[0]["return"]["batch"].as_str(), items[0]["return"]["index"].as_u64()),
        (Some(first_id.as_str()), Some(0))
    );
    assert_eq!((items[1]["status"].as_str(), items[1]["failure_code"].as_str()), (Some("returned"), Some("R03")));
    assert_eq!(items[2]["status"], "succeeded", "{}", items[2]);
    assert!(items[2].get("return").is_none());
    assert_eq!(items[2]["notifications_of_change"][0]["change_code"], "C01", "{}", items[2]);
    assert_eq!(items[2]["notifications_of_change"][0]["corrected_data"], "1918171614");
    let returned = client.get(&format!("/v1/batches/{payroll}/items?status=returned")).await.body;
    assert_eq!(returned["data"].as_array().unwrap().len(), 2, "{returned}");
    let report = client.get(&format!("/v1/batches/{payroll}/report")).await;
    let report = String::from_utf8(report.bytes).unwrap();
    assert!(report.lines().nth(1).unwrap().ends_with(",returned,R01"), "{report}");
    assert!(report.lines().nth(3).unwrap().ends_with(",succeeded,"), "{report}");
    // The return items name their originals.
    let items = client.get(&format!("/v1/batches/{first_id}/items")).await.body;
    assert_eq!(items["data"][1]["original"], json!({"batch": payroll, "index": 1}), "{items}");
    assert_eq!(items["data"][4]["original"], json!({"batch": payroll, "index": 2}), "{items}");

    // The same returns again: nothing is returned twice, nothing moves.
    let again =
        nacha_file_of(RDFI, &[return_entry(1, "111", 1_000, "R01", 1), return_entry(2, "222", 2_500, "R03", 2)]);
    let second = upload(&client, "payer=PAYROLL-1&on_invalid=skip_invalid", again).await;
    assert_eq!(second["status"], "rejected", "{second}");
    let second_id = second["id"].as_str().unwrap().to_owned();
    assert_eq!(
        statuses(&client, &second_id).await,
        owned(&[("invalid", Some("already_returned")), ("invalid", Some("already_returned"))])
    );
    assert_eq!(posted(&client, &payer).await, 9_600);

    // Entry 3's receiver has spent what it got: its return fails with the ledger's code and
    // the original stays paid. Once the money is there, a new return of it goes through.
    let spend = json!({"debit_account": three, "credit_account": funding, "amount": 400, "currency": "USD"});
    assert_eq!(client.post("/v1/transfers", spend).await.status, 201);
    let late = nacha_file_of(RDFI, &[return_entry(3, "333", 400, "R16", 6)]);
    let failed = upload(&client, "payer=PAYROLL-1", late.clone()).await;
    let failed_id = failed["id"].as_str().unwrap().to_owned();
    assert_eq!(statuses(&client, &failed_id).await, owned(&[("failed", Some("insufficient_funds"))]));
    assert_eq!(statuses(&client, &payroll).await[2].0, "succeeded");
    assert_eq!(posted(&client, &payer).await, 9_600);
    let refund = json!({"debit_account": funding, "credit_account": three, "amount": 400, "currency": "USD"});
    assert_eq!(client.post("/v1/transfers", refund).await.status, 201);
    let retried = upload(&client, "payer=PAYROLL-1", late).await;
    let retried_id = retried["id"].as_str().unwrap().to_owned();
    assert_eq!(statuses(&client, &retried_id).await, owned(&[("succeeded", None)]));
    assert_eq!(statuses(&client, &payroll).await[2], ("returned".to_owned(), Some("R16".to_owned())));
    assert_eq!((posted(&client, &payer).await, posted(&client, &three).await), (10_000, 0));

    // Three `batch_item.returned` events, each naming its original, R-code and amount.
    let mut events = Vec::new();
    for _ in 0..400 {
        events = hooks.received.lock().unwrap().clone();
        if events.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let mut seen: Vec<(String, u64, String, u64)> = events
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "batch_item.returned", "{e}");
            let o = &e["data"]["object"];
            (
                o["batch"].as_str().unwrap().to_owned(),
                o["index"].as_u64().unwrap(),
                o["reason_code"].as_str().unwrap().to_owned(),
                o["amount"].as_u64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (payroll.clone(), 0, "R01".to_owned(), 1_000),
            (payroll.clone(), 1, "R03".to_owned(), 2_500),
            (payroll.clone(), 2, "R16".to_owned(), 400)
        ]
    );

    // The books still balance.
    let report = common::blocking(&data, |store| paycore_store::verify::verify(store).unwrap()).await;
    assert!(report.ok(), "{:?}", report.problems);
}

const PAIN002_XSD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/samples/xsd/pain.002.001.10.xsd");

/// Checks `xml` against the official pain.002.001.10 schema with xmllint (skipped loudly when
/// it is not installed, except under `CI=true`).
fn assert_pain002_valid(xml: &str) {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("paycore-returns-pain002-{}-{n}.xml", std::process::id()));
    std::fs::write(&path, xml).unwrap();
    let result = std::process::Command::new("xmllint").args(["--noout", "--schema", PAIN002_XSD]).arg(&path).output();
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(output) => assert!(output.status.success(), "{}\n{xml}", String::from_utf8_lossy(&output.stderr)),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => panic!("xmllint is not installed"),
        Err(_) => eprintln!("SKIPPED: xmllint not installed; XSD validation not run"),
    }
}

/// The pain.002 of batch `id`, valid against the schema: its group status and each
/// transaction's (status, `AddtlInf`).
async fn pain002(client: &Client, id: &str) -> (String, Vec<(String, Option<String>)>) {
    let report = client.get(&format!("/v1/batches/{id}/report?format=pain.002")).await;
    assert_eq!(report.status, 200, "{}", String::from_utf8_lossy(&report.bytes));
    let xml = String::from_utf8(report.bytes).unwrap();
    assert_pain002_valid(&xml);
    let inner = |text: &str, tag: &str| -> Option<String> {
        let open = format!("<{tag}>");
        let start = text.find(&open)? + open.len();
        Some(text[start..start + text[start..].find(&format!("</{tag}>"))?].to_owned())
    };
    let group = inner(&xml, "GrpSts").unwrap();
    let items =
        xml.split("<TxInfAndSts>").skip(1).map(|tx| (inner(tx, "TxSts").unwrap(), inner(tx, "AddtlInf"))).collect();
    (group, items)
}

fn tx(status: &str, info: Option<&str>) -> (String, Option<String>) {
    (status.to_owned(), info.map(str::to_owned))
}

async fn a_pain002_of_a_nacha_batch_counts_skipped_entries_as_neither(backend: Backend) {
    let Some((client, _data)) = common::boot_on(backend, ADMIN, |_| {}).await else { return };
    let funding = client.post("/v1/accounts", json!({"currency": "USD", "overdraft_limit": "unlimited"})).await;
    let funding = funding.body["id"].as_str().unwrap().to_owned();
    let payer = account(&client, "PAYROLL-1").await;
    account(&client, "231380104111").await;
    let t = json!({"debit_account": funding, "credit_account": payer, "amount": 10_000, "currency": "USD"});
    assert_eq!(client.post("/v1/transfers", t).await.status, 201);

    // Every payable entry paid, beside a prenote and a zero-dollar entry: accepted, and the
    // skipped entries are accepted with their code, not rejected.
    let paid = nacha_file_coded(&[("22", "111", 1_000), ("23", "222", 0), ("24", "333", 0)]);
    let paid = upload(&client, "payer=PAYROLL-1", paid).await;
    assert_eq!(paid["status"], "completed", "{paid}");
    let paid = paid["id"].as_str().unwrap().to_owned();
    assert_eq!(
        statuses(&client, &paid).await,
        owned(&[("succeeded", None), ("invalid", Some("prenote")), ("invalid", Some("zero_dollar_entry"))])
    );
    let (group, items) = pain002(&client, &paid).await;
    assert_eq!(group, "ACCP");
    assert_eq!(items, vec![tx("ACCP", None), tx("ACCP", Some("prenote")), tx("ACCP", Some("zero_dollar_entry"))]);

    // One payable entry is refused (no such account): partly rejected, the prenote still
    // accepted.
    let part = nacha_file_coded(&[("22", "111", 500), ("23", "222", 0), ("22", "999", 300)]);
    let part = upload(&client, "payer=PAYROLL-1&on_invalid=skip_invalid", part).await;
    assert_eq!(part["status"], "completed", "{part}");
    let part = part["id"].as_str().unwrap().to_owned();
    let (group, items) = pain002(&client, &part).await;
    assert_eq!(group, "PART");
    assert_eq!((&items[0], &items[1]), (&tx("ACCP", None), &tx("ACCP", Some("prenote"))));
    assert_eq!(items[2].0, "RJCT", "{items:?}");

    // The only payable entry fails (its payer has nothing): rejected, though the prenote is not.
    account(&client, "PAYROLL-2").await;
    let none = upload(&client, "payer=PAYROLL-2", nacha_file_coded(&[("23", "111", 0), ("22", "111", 300)])).await;
    assert_eq!(none["status"], "completed", "{none}");
    let none = none["id"].as_str().unwrap().to_owned();
    assert_eq!(
        statuses(&client, &none).await,
        owned(&[("invalid", Some("prenote")), ("failed", Some("insufficient_funds"))])
    );
    let (group, items) = pain002(&client, &none).await;
    assert_eq!(group, "RJCT");
    assert_eq!(items[0], tx("ACCP", Some("prenote")));
    assert_eq!(items[1].0, "RJCT", "{items:?}");

    // A file of a notification of change only: recorded, nothing rejected.
    let change = nacha_file_of(RDFI, &[change_entry(1, "111", "C01", "1918171614", 1)]);
    let change = upload(&client, "payer=PAYROLL-1", change).await;
    let change_id = change["id"].as_str().unwrap().to_owned();
    assert_eq!(statuses(&client, &change_id).await, owned(&[("invalid", Some("notification_recorded"))]));
    let (group, items) = pain002(&client, &change_id).await;
    assert_eq!((group.as_str(), items), ("ACCP", vec![tx("ACCP", Some("notification_recorded"))]), "{change}");
}

/// An IAT batch header from `odfi`, US dollars both ways (as moov-io/ach's IAT fixtures).
fn iat_header(odfi: &str) -> String {
    format!("5200{:16}FF3{:15}US{:<10}IATTRADEPAYMTUSDUSD190816   1{odfi}0000001", "", "", "123456789")
}

/// The seven mandatory IAT addenda (10 to 16) of the entry with sequence number `seq`, as in
/// moov-io/ach's `iat-mixedCreditDebit` fixture.
fn iat_addenda(seq: u64) -> Vec<String> {
    [
        "710ANN000000000000100000928383-23938          BEK Enterprises                          ",
        "711BEK Solutions                      15 West Place Street                             ",
        "712JacobsTown*PA\\                     US*19305\\                                        ",
        "713Wells Fargo                        01231380104                         US           ",
        "714Citadel Bank                       01121042882                         CA           ",
        "7159874654932139872121 Front Street                                                    ",
        "716LetterTown*AB\\                     CA*80014\\                                        ",
    ]
    .iter()
    .map(|a| format!("{a}{seq:07}"))
    .collect()
}

/// An IAT credit of `cents` from ODFI to account `account` at the RDFI, entry `seq`.
fn iat_entry(seq: u64, account: &str, cents: u64) -> Vec<String> {
    let mut records = vec![format!("622{RDFI}4{:04}{:13}{cents:010}{account:<35}    1{ODFI}{seq:07}", 7, "")];
    records.extend(iat_addenda(seq));
    records
}

/// The RDFI's IAT return (`reason`) of the IAT entry `seq` of `cents`: a 21 back to the
/// ODFI with the entry's seven addenda, then an IAT Addenda 99 (the original forward entry's
/// amount in 36–45).
fn iat_return_entry(seq: u64, account: &str, cents: u64, reason: &str, own: u64) -> Vec<String> {
    let trace = format!("{RDFI}{own:07}");
    let mut records = vec![format!("621{ODFI}2{:04}{:13}{cents:010}{account:<35}    1{trace}", 8, "")];
    records.extend(iat_addenda(own));
    records.push(format!("799{reason}{ODFI}{seq:07}{:6}{RDFI}{cents:010}{:34}{trace}", "", ""));
    records
}

async fn an_iat_return_is_matched_like_a_ppd_one(backend: Backend) {
    let Some((client, data)) = common::boot_on(backend, ADMIN, |_| {}).await else { return };
    let funding = client.post("/v1/accounts", json!({"currency": "USD", "overdraft_limit": "unlimited"})).await;
    let funding = funding.body["id"].as_str().unwrap().to_owned();
    let payer = account(&client, "PAYROLL-1").await;
    let one = account(&client, "231380104111").await;
    let t = json!({"debit_account": funding, "credit_account": payer, "amount": 10_000, "currency": "USD"});
    assert_eq!(client.post("/v1/transfers", t).await.status, 201);

    // An IAT credit of 12.00, paid.
    let payment = nacha_file_under(&iat_header(ODFI), ODFI, &[iat_entry(1, "111", 1_200)]);
    let payment = upload(&client, "payer=PAYROLL-1", payment).await;
    assert_eq!(payment["status"], "completed", "{payment}");
    let payment = payment["id"].as_str().unwrap().to_owned();
    assert_eq!(statuses(&client, &payment).await, owned(&[("succeeded", None)]));
    assert_eq!((posted(&client, &payer).await, posted(&client, &one).await), (8_800, 1_200));

    // Its IAT return (R03) comes back, beside the return of an IAT entry never sent.
    let returns = nacha_file_under(
        &iat_header(RDFI),
        RDFI,
        &[iat_return_entry(1, "111", 1_200, "R03", 1), iat_return_entry(7, "777", 500, "R01", 2)],
    );
    let back = upload(&client, "payer=PAYROLL-1&on_invalid=skip_invalid", returns).await;
    assert_eq!(back["status"], "completed", "{back}");
    let back_id = back["id"].as_str().unwrap().to_owned();
    assert_eq!(
        statuses(&client, &back_id).await,
        owned(&[("succeeded", None), ("invalid", Some("return_entry_not_matched"))])
    );
    // The original is returned and the money is back.
    let items = client.get(&format!("/v1/batches/{payment}/items")).await.body;
    let original = &items["data"][0];
    assert_eq!((original["status"].as_str(), original["failure_code"].as_str()), (Some("returned"), Some("R03")));
    assert_eq!(
        (original["return"]["batch"].as_str(), original["return"]["index"].as_u64()),
        (Some(back_id.as_str()), Some(0)),
        "{original}"
    );
    assert_eq!((posted(&client, &payer).await, posted(&client, &one).await), (10_000, 0));
    let report = common::blocking(&data, |store| paycore_store::verify::verify(store).unwrap()).await;
    assert!(report.ok(), "{:?}", report.problems);
}
