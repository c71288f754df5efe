//! Batch files end to end, on both stores: real sample files (CSV and pain.001) uploaded,
//! validated and paid to `completed`, with per-item results, balances and the report bytes.
//! On PostgreSQL the upload lives in the database: a second service on the same database,
//! with a data folder of its own, answers the batch's items and reports with the same bytes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{on_both_backends, Answer, Backend, Client};
use serde_json::{json, Value};
use std::time::Duration;

const KEY: &str = "sk_test_batches_0123456789abcdefghijklmno";
const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/samples");

on_both_backends!(
    a_csv_sample_is_paid_item_by_item_with_its_report,
    a_pain001_sample_is_paid_and_answered_in_pain002,
    a_csv_of_several_item_blocks_is_reported_line_by_line
);

fn sample(path: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(SAMPLES).join(path)).unwrap()
}

async fn upload(client: &Client, query: &str, content_type: &str, bytes: Vec<u8>) -> String {
    let request = client
        .http
        .post(format!("{}/v1/batches?{query}", client.base))
        .header("content-type", content_type)
        .header("Idempotency-Key", format!("upload-{query}"))
        .body(bytes);
    let answer = client.send_as_key(request).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(answer.body["status"], "validating");
    answer.body["id"].as_str().unwrap().to_owned()
}

async fn wait_batch(client: &Client, id: &str) -> Value {
    for _ in 0..400 {
        let b = client.get(&format!("/v1/batches/{id}")).await;
        assert_eq!(b.status, 200, "{}", b.body);
        if !matches!(b.body["status"].as_str(), Some("validating" | "processing")) {
            return b.body;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("batch {id} did not finish");
}

/// A new EUR account with `reference`, holding `funds` (from an unlimited funding account).
async fn account(client: &Client, reference: &str, funds: u64) -> String {
    let a = client.post("/v1/accounts", json!({"currency": "EUR", "reference": reference})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body["id"].as_str().unwrap().to_owned();
    if funds > 0 {
        let funding = client.account(json!("unlimited")).await;
        assert_eq!(client.transfer(&funding, &id, funds).await.body["result"], "ok");
    }
    id
}

/// The items of a batch as `(line, status, payee, amount)`.
async fn items(client: &Client, id: &str) -> Vec<(u64, String, String, u64)> {
    let listed = client.get(&format!("/v1/batches/{id}/items?limit=100")).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item["line"].as_u64().unwrap(),
                item["status"].as_str().unwrap().to_owned(),
                item["payee"].as_str().unwrap_or_default().to_owned(),
                item["amount"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

async fn report(client: &Client, id: &str, query: &str) -> Answer {
    let answer = client.get(&format!("/v1/batches/{id}/report{query}")).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.bytes));
    answer
}

/// The report without its creation time (pain.002's `CreDtTm`, made at the request).
fn timeless(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .filter(|line| !line.contains("<CreDtTm>"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A service on `data`'s store with `folder` as its data folder, until `stop` is sent.
struct Running {
    client: Client,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(data: &common::Data, folder: &std::path::Path) -> Running {
    let mut config = common::config(data, KEY);
    config.data_dir = folder.to_path_buf();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (base, task) = common::serve(&config, async move {
        let _ = stopped.await;
    })
    .await;
    Running { client: Client { base, http: reqwest::Client::new(), key: KEY.to_owned() }, stop, task }
}

impl Running {
    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

/// On PostgreSQL, after `first` stopped: a second service on the same database with a data
/// folder of its own answers the batch, its items and both reports with the same bytes.
async fn same_answers_from_another_service(data: &common::Data, first: Running, id: &str) {
    let path = format!("/v1/batches/{id}");
    let (batch, listed) = (first.client.get(&path).await, items(&first.client, id).await);
    let csv = report(&first.client, id, "?format=csv").await;
    let pain002 = report(&first.client, id, "?format=pain.002").await;
    first.stop().await;
    if data.backend() != Backend::Postgres {
        return;
    }
    let folder = tempfile::tempdir().unwrap();
    let second = start(data, folder.path()).await;
    assert_eq!(second.client.get(&path).await.body, batch.body);
    assert_eq!(items(&second.client, id).await, listed);
    assert_eq!(report(&second.client, id, "?format=csv").await.bytes, csv.bytes);
    assert_eq!(timeless(&report(&second.client, id, "?format=pain.002").await.bytes), timeless(&pain002.bytes));
    second.stop().await;
}

fn counts(batch: &Value) -> (u64, u64, u64, u64) {
    let c = &batch["counts"];
    let n = |k: &str| c[k].as_u64().unwrap();
    (n("total"), n("succeeded"), n("failed"), n("invalid"))
}

async fn a_csv_sample_is_paid_item_by_item_with_its_report(backend: Backend) {
    let Some(data) = common::Data::new(backend) else { return };
    let first = start(&data, data.path()).await;
    let api = &first.client;
    // pain001-template_pain.001.001.03_4rows.csv: four debtors paying four creditors.
    let debtors =
        ["DE75512108001245126162", "DE44500105175407324931", "DE47500105175711000100", "DE68120933300112345608"];
    let creditors =
        ["DE68210501700024690959", "DE89370400440532013008", "DE44500105175407123457", "DE75512108001245123456"];
    let mut payers = Vec::new();
    for debtor in debtors {
        payers.push(account(api, debtor, 100_000).await);
    }
    let mut payees = Vec::new();
    for creditor in creditors {
        payees.push(account(api, creditor, 0).await);
    }
    let id = upload(api, "format=csv", "text/csv", sample("csv/pain001-template_pain.001.001.03_4rows.csv")).await;
    let batch = wait_batch(api, &id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(counts(&batch), (4, 4, 0, 0), "{batch}");
    let amounts = [15_000, 30_000, 25_000, 20_000];
    let expected: Vec<(u64, String, String, u64)> =
        (0..4).map(|i| (i as u64 + 2, "succeeded".to_owned(), creditors[i].to_owned(), amounts[i])).collect();
    assert_eq!(items(api, &id).await, expected);
    for (i, (payer, payee)) in payers.iter().zip(&payees).enumerate() {
        assert_eq!(api.balance(payer).await["posted"], 100_000 - amounts[i] as i64);
        assert_eq!(api.balance(payee).await["posted"], amounts[i] as i64);
    }
    let csv = report(api, &id, "?format=csv").await;
    assert_eq!(
        String::from_utf8(csv.bytes).unwrap(),
        "line,reference,payer,payee,amount,currency,status,failure_code\n\
         2,PaymentID6789,DE75512108001245126162,DE68210501700024690959,150.00,EUR,succeeded,\n\
         3,PaymentID4321,DE44500105175407324931,DE89370400440532013008,300.00,EUR,succeeded,\n\
         4,PaymentID1357,DE47500105175711000100,DE44500105175407123457,250.00,EUR,succeeded,\n\
         5,PaymentID8642,DE68120933300112345608,DE75512108001245123456,200.00,EUR,succeeded,\n"
    );
    let pain002 = timeless(&report(api, &id, "?format=pain.002").await.bytes);
    for part in ["<OrgnlNbOfTxs>4</OrgnlNbOfTxs>", "<OrgnlCtrlSum>900.00</OrgnlCtrlSum>", "<GrpSts>ACCP</GrpSts>"] {
        assert!(pain002.contains(part), "{part}: {pain002}");
    }
    assert_eq!(pain002.matches("<TxSts>ACCP</TxSts>").count(), 4, "{pain002}");
    same_answers_from_another_service(&data, first, &id).await;
}

async fn a_pain001_sample_is_paid_and_answered_in_pain002(backend: Backend) {
    let Some(data) = common::Data::new(backend) else { return };
    let first = start(&data, data.path()).await;
    let api = &first.client;
    // sepa_king's DK sample: one debtor, two creditors, EUR 6655.86 in all.
    let debtor = account(api, "DE87200500001234567890", 1_000_000).await;
    let c1 = account(api, "DE21500500009876543210", 0).await;
    let c2 = account(api, "DE21500500001234567897", 0).await;
    let file = sample("iso20022/pain.001.001.03_sepaking_DK-sample_2tx_EUR.xml");
    let id = upload(api, "format=pain.001", "application/xml", file).await;
    let batch = wait_batch(api, &id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(counts(&batch), (2, 2, 0, 0), "{batch}");
    assert_eq!(batch["variant"], "pain.001.001.03");
    let expected = [
        (39, "succeeded".to_owned(), "DE21500500009876543210".to_owned(), 654_314),
        (63, "succeeded".to_owned(), "DE21500500001234567897".to_owned(), 11_272),
    ];
    assert_eq!(items(api, &id).await, expected);
    assert_eq!(api.balance(&debtor).await["posted"], 1_000_000 - 665_586);
    assert_eq!(api.balance(&c1).await["posted"], 654_314);
    assert_eq!(api.balance(&c2).await["posted"], 11_272);
    // The report that answers a pain.001.001.03 file: pain.002.001.03, every transaction ACCP.
    let pain002 = timeless(&report(api, &id, "?format=pain.002").await.bytes);
    let transactions: Vec<&str> = pain002.split("<TxInfAndSts>").skip(1).collect();
    assert!(pain002.contains(r#"xmlns="urn:iso:std:iso:20022:tech:xsd:pain.002.001.03""#), "{pain002}");
    assert!(pain002.contains("<OrgnlMsgId>Message-ID-4711</OrgnlMsgId>"), "{pain002}");
    assert!(pain002.contains("<GrpSts>ACCP</GrpSts>"), "{pain002}");
    assert_eq!(transactions.len(), 2, "{pain002}");
    for (tx, (end_to_end, amount)) in
        transactions.iter().zip([("OriginatorID1234", "6543.14"), ("OriginatorID1235", "112.72")])
    {
        assert!(tx.contains(&format!("<OrgnlEndToEndId>{end_to_end}</OrgnlEndToEndId>")), "{tx}");
        assert!(tx.contains("<TxSts>ACCP</TxSts>") && tx.contains(&format!(r#"Ccy="EUR">{amount}<"#)), "{tx}");
    }
    // The same answer in pain.002.001.11 when asked; an unknown version is 400 naming it.
    let v11 = timeless(&report(api, &id, "?format=pain.002&version=001.001.11").await.bytes);
    assert!(v11.contains(r#"xmlns="urn:iso:std:iso:20022:tech:xsd:pain.002.001.11""#), "{v11}");
    assert_eq!(v11.split("<TxSts>ACCP</TxSts>").count(), 3, "{v11}");
    let refused = api.get(&format!("/v1/batches/{id}/report?format=pain.002&version=001.001.12")).await;
    assert_eq!(refused.status, 400);
    assert!(String::from_utf8_lossy(&refused.bytes).contains("001.001.11"));
    same_answers_from_another_service(&data, first, &id).await;
}

/// A CSV file of 9 000 lines: more than two of the embedded store's item blocks (4 096 items
/// each), with invalid lines at, around and between the blocks' boundaries and in their middle,
/// and failed items among succeeded ones. The CSV report is every line, byte for byte, in
/// order; status filters and pages read across the boundaries. On PostgreSQL (a row per item)
/// the same bytes.
async fn a_csv_of_several_item_blocks_is_reported_line_by_line(backend: Backend) {
    let Some(data) = common::Data::new(backend) else { return };
    let first = start(&data, data.path()).await;
    let api = &first.client;
    let payer = account(api, "PAYER-BLOCKS", 2_000_000).await;
    let payee = account(api, "PAYEE-BLOCKS", 0).await;
    const LINES: usize = 9_000;
    let invalid = |i: usize| [0, 17, 4_095, 4_096, 4_097, 6_000, 8_191, 8_192, 8_999].contains(&i);
    // More than the payer ever holds: refused by the ledger, whatever the order.
    let too_much = |i: usize| i % 50 == 3 || (4_090..4_094).contains(&i);
    let mut file = String::from("payee,amount,currency,reference\n");
    let mut report = String::from("line,reference,payer,payee,amount,currency,status,failure_code\n");
    let mut statuses = Vec::new();
    for i in 0..LINES {
        let (to, amount) =
            (if invalid(i) { "nobody" } else { payee.as_str() }, if too_much(i) { "50000.00" } else { "1.00" });
        file.push_str(&format!("{to},{amount},EUR,inv-{i}\n"));
        let status = match (invalid(i), too_much(i)) {
            (true, _) => "failed,account_not_found",
            (false, true) => "failed,insufficient_funds",
            (false, false) => "succeeded,",
        };
        report.push_str(&format!("{},inv-{i},{payer},{to},{amount},EUR,{status}\n", i + 2));
        statuses.push(if invalid(i) {
            "invalid"
        } else if too_much(i) {
            "failed"
        } else {
            "succeeded"
        });
    }
    let id =
        upload(api, &format!("format=csv&on_invalid=skip_invalid&payer={payer}"), "text/csv", file.into_bytes()).await;
    let mut batch = Value::Null;
    for _ in 0..1_200 {
        batch = api.get(&format!("/v1/batches/{id}")).await.body;
        if !matches!(batch["status"].as_str(), Some("validating" | "processing")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(batch["status"], "completed", "{batch}");
    let failed = (0..LINES).filter(|i| !invalid(*i) && too_much(*i)).count() as u64;
    assert_eq!(counts(&batch), (LINES as u64, LINES as u64 - failed - 9, failed, 9), "{batch}");
    let csv = report_bytes(api, &id).await;
    assert_eq!(csv.len(), report.len());
    for (k, (got, want)) in csv.lines().zip(report.lines()).enumerate() {
        assert_eq!(got, want, "report line {k}");
    }
    assert_eq!(csv, report);
    // Pages of the listing, by status, from around the boundaries.
    for (status, after, limit) in [
        ("invalid", None, 5),
        ("invalid", Some(4_095), 3),
        ("failed", Some(4_089), 4),
        ("failed", Some(4_092), 3),
        ("succeeded", Some(4_093), 6),
        ("succeeded", Some(8_190), 4),
    ] {
        let query = match after {
            Some(a) => format!("/v1/batches/{id}/items?status={status}&starting_after={a}&limit={limit}"),
            None => format!("/v1/batches/{id}/items?status={status}&limit={limit}"),
        };
        let listed = api.get(&query).await;
        assert_eq!(listed.status, 200, "{}", listed.body);
        let lines: Vec<u64> =
            listed.body["data"].as_array().unwrap().iter().map(|i| i["line"].as_u64().unwrap()).collect();
        let expected: Vec<u64> = (after.map_or(0, |a| a + 1)..LINES)
            .filter(|i| statuses[*i] == status)
            .take(limit)
            .map(|i| i as u64 + 2)
            .collect();
        assert_eq!(lines, expected, "{query}");
    }
    let path = format!("/v1/batches/{id}");
    let batch = api.get(&path).await;
    first.stop().await;
    if data.backend() == Backend::Postgres {
        let folder = tempfile::tempdir().unwrap();
        let second = start(&data, folder.path()).await;
        assert_eq!(second.client.get(&path).await.body, batch.body);
        assert_eq!(report_bytes(&second.client, &id).await, report);
        second.stop().await;
    }
}

async fn report_bytes(client: &Client, id: &str) -> String {
    String::from_utf8(report(client, id, "?format=csv").await.bytes).unwrap()
}
