//! `GET /v1/accounts/{id}/statement`: opening + entries = closing, the closing balance is the
//! account's posted balance, holds are not booked, amounts in the currency's minor units, the
//! camt.053 document valid against the official schema, bad parameters named, other tenants'
//! accounts not found, and the opening and closing balances of any period equal to a
//! brute-force sum over the whole history (whichever side of `from` the server reads). On both
//! backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{on_both_backends, Backend, Client};
use serde_json::{json, Value};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

on_both_backends!(
    a_statement_books_moves_not_holds,
    amounts_follow_the_currency,
    bad_parameters_and_other_tenants,
    batch_items_carry_their_end_to_end_id,
    a_pain001_item_carries_its_remittance_information,
    balances_of_any_period_match_a_brute_force_sum
);

const ADMIN: &str = "sk_test_admin_0123456789abcdefghijklmnopqr";
const XSD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/samples/xsd/camt.053.001.08.xsd");

/// Checks `xml` against the official camt.053.001.08 schema with xmllint (skipped loudly when
/// it is not installed, except under `CI=true`).
fn assert_schema_valid(xml: &str) {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("paycore-statement-{}-{n}.xml", std::process::id()));
    std::fs::write(&path, xml).unwrap();
    let result = Command::new("xmllint").args(["--noout", "--schema", XSD]).arg(&path).output();
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(output) => assert!(output.status.success(), "{}\n{xml}", String::from_utf8_lossy(&output.stderr)),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => panic!("xmllint is not installed"),
        Err(_) => eprintln!("SKIPPED: xmllint not installed; XSD validation not run"),
    }
}

async fn statement(client: &Client, account: &str, query: &str) -> Value {
    let s = client.get(&format!("/v1/accounts/{account}/statement{query}")).await;
    assert_eq!(s.status, 200, "{}", String::from_utf8_lossy(&s.bytes));
    check_adds_up(&s.body);
    s.body
}

async fn text(client: &Client, account: &str, query: &str) -> String {
    let s = client.get(&format!("/v1/accounts/{account}/statement{query}")).await;
    assert_eq!(s.status, 200, "{}", String::from_utf8_lossy(&s.bytes));
    String::from_utf8(s.bytes).unwrap()
}

/// opening + Σ credits − Σ debits = closing, and each entry's balance after it runs on.
fn check_adds_up(statement: &Value) {
    let mut balance = statement["opening_balance"]["amount"].as_i64().unwrap();
    for entry in statement["entries"].as_array().unwrap() {
        let amount = entry["amount"].as_i64().unwrap();
        balance += if entry["credit_debit"] == "credit" { amount } else { -amount };
        assert_eq!(entry["balance_after"].as_i64(), Some(balance), "{statement}");
    }
    assert_eq!(statement["closing_balance"]["amount"].as_i64(), Some(balance), "{statement}");
}

/// The (transfer, credit_debit, amount) of each entry.
fn entries(statement: &Value) -> Vec<(String, String, u64)> {
    statement["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["transfer"].as_str().unwrap().to_owned(),
                e["credit_debit"].as_str().unwrap().to_owned(),
                e["amount"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn ok_transfer(client: &Client, body: Value) -> Value {
    let t = client.post("/v1/transfers", body).await;
    assert_eq!((t.status, t.body["result"].as_str()), (201, Some("ok")), "{}", t.body);
    t.body
}

async fn a_statement_books_moves_not_holds(backend: Backend) {
    let Some((client, _data)) = common::boot_on(backend, ADMIN, |_| {}).await else { return };
    let (funding, payer, payee) = client.parties(10_000).await;
    let move_ = |debit: &str, credit: &str, amount: u64| json!({"debit_account": debit, "credit_account": credit, "amount": amount, "currency": "EUR"});
    let paid = ok_transfer(&client, move_(&payer, &payee, 2_500)).await;
    // A hold stays open, a second is posted in part (500 booked), a third is voided.
    let mut hold = move_(&payer, &payee, 1_000);
    hold["pending"] = json!(true);
    ok_transfer(&client, hold.clone()).await;
    let partial = ok_transfer(&client, hold.clone()).await;
    let posted = ok_transfer(&client, json!({"post_pending_id": partial["id"], "amount": 500})).await;
    let voided = ok_transfer(&client, hold).await;
    ok_transfer(&client, json!({"void_pending_id": voided["id"]})).await;

    let whole = statement(&client, &payer, "").await;
    assert_eq!(whole["object"], "statement");
    assert_eq!(whole["currency"], "EUR");
    assert_eq!(whole["opening_balance"]["amount"], 0);
    let funded = entries(&whole)[0].0.clone();
    assert_eq!(
        entries(&whole),
        vec![
            (funded.clone(), "credit".to_owned(), 10_000),
            (paid["id"].as_str().unwrap().to_owned(), "debit".to_owned(), 2_500),
            (posted["id"].as_str().unwrap().to_owned(), "debit".to_owned(), 500),
        ]
    );
    assert_eq!(whole["entries"][0]["counterparty"], funding.as_str());
    // The closing balance is the account's posted balance; the open hold is not booked.
    let balance = client.balance(&payer).await;
    assert_eq!(balance["posted"], 7_000);
    assert_eq!(balance["pending_debits"], 1_000);
    assert_eq!(whole["closing_balance"]["amount"], 7_000);
    assert_eq!(whole["credits"], json!({"count": 1, "sum": 10_000}));
    assert_eq!(whole["debits"], json!({"count": 2, "sum": 3_000}));
    // The other side sees the same transfers the other way.
    let other = statement(&client, &payee, "").await;
    assert_eq!(
        entries(&other).iter().map(|e| (e.1.as_str(), e.2)).collect::<Vec<_>>(),
        vec![("credit", 2_500), ("credit", 500)]
    );
    assert_eq!(other["closing_balance"]["amount"], 3_000);

    // A period from the second entry on: the first is in the opening balance.
    let second_at = whole["entries"][1]["booked_at"].as_str().unwrap().to_owned();
    let later = statement(&client, &payer, &format!("?from={second_at}")).await;
    assert_eq!(later["opening_balance"]["amount"], 10_000);
    assert_eq!(entries(&later), entries(&whole)[1..].to_vec());
    assert_eq!(later["closing_balance"]["amount"], 7_000);
    // A period that ends just before it: `to` is included, so the instant before it.
    let first_at = whole["entries"][0]["booked_at"].as_str().unwrap().to_owned();
    let earlier = statement(&client, &payer, &format!("?from={first_at}&to={first_at}")).await;
    assert_eq!(entries(&earlier), entries(&whole)[..1].to_vec());
    assert_eq!(
        (earlier["opening_balance"]["amount"].as_i64(), earlier["closing_balance"]["amount"].as_i64()),
        (Some(0), Some(10_000))
    );
    // A whole UTC day, written as a date: today's statement is the whole history here.
    let today = &first_at[..10];
    let day = statement(&client, &payer, &format!("?from={today}&to={today}")).await;
    assert_eq!(entries(&day), entries(&whole));
    assert_eq!(day["from"], format!("{today}T00:00:00.000000000Z"));
    // A day before the account: nothing in it.
    let before = statement(&client, &payer, "?from=2000-01-01&to=2000-01-31").await;
    assert_eq!(entries(&before), vec![]);
    assert_eq!(before["closing_balance"]["amount"], 0);

    // camt.053: valid against the official schema, with the same balances and entries.
    let xml = text(&client, &payer, "?format=camt.053").await;
    assert_schema_valid(&xml);
    assert!(xml.contains("urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"), "{xml}");
    assert!(
        xml.contains("<Cd>OPBD</Cd>\n          </CdOrPrtry>\n        </Tp>\n        <Amt Ccy=\"EUR\">0.00</Amt>"),
        "{xml}"
    );
    assert!(xml.contains("<Cd>CLBD</Cd>\n          </CdOrPrtry>\n        </Tp>\n        <Amt Ccy=\"EUR\">70.00</Amt>\n        <CdtDbtInd>CRDT</CdtDbtInd>"), "{xml}");
    assert_eq!(xml.matches("<Ntry>").count(), 3);
    assert!(xml.contains(&format!("<AcctSvcrRef>{}</AcctSvcrRef>", paid["id"].as_str().unwrap())), "{xml}");
    assert!(xml.contains("<Amt Ccy=\"EUR\">25.00</Amt>\n        <CdtDbtInd>DBIT</CdtDbtInd>"), "{xml}");
    assert!(xml.contains(&format!("<Othr>\n            <Id>{payer}</Id>")), "{xml}");
    let partial_xml = text(&client, &payer, &format!("?format=camt.053&from={second_at}")).await;
    assert_schema_valid(&partial_xml);
    assert!(partial_xml.contains("<Amt Ccy=\"EUR\">100.00</Amt>"), "{partial_xml}");

    // CSV: opening row, one row per entry with the running balance, closing row.
    let csv = text(&client, &payer, "?format=csv").await;
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "type,booked_at,transfer,counterparty,credit_debit,amount,currency,balance,end_to_end_id,remittance_information");
    assert_eq!(rows.len(), 6, "{csv}");
    assert!(rows[1].starts_with("opening_balance,") && rows[1].ends_with(",CRDT,0.00,EUR,0.00,,"), "{csv}");
    assert!(rows[2].contains(&format!(",{funded},{funding},CRDT,100.00,EUR,100.00,")), "{csv}");
    assert!(rows[4].ends_with(",DBIT,5.00,EUR,70.00,,"), "{csv}");
    assert!(rows[5].starts_with("closing_balance,") && rows[5].ends_with(",CRDT,70.00,EUR,70.00,,"), "{csv}");
}

async fn amounts_follow_the_currency(backend: Backend) {
    let Some((client, _data)) = common::boot_on(backend, ADMIN, |_| {}).await else { return };
    for (code, amount, text_amount) in [("JPY", 1_500u64, "1500"), ("KWD", 1_500, "1.500")] {
        let account = |overdraft: Value| {
            let client = client.clone();
            async move {
                let a = client.post("/v1/accounts", json!({"currency": code, "overdraft_limit": overdraft})).await;
                assert_eq!(a.status, 201, "{}", a.body);
                a.body["id"].as_str().unwrap().to_owned()
            }
        };
        let (funding, holder) = (account(json!("unlimited")).await, account(json!(0)).await);
        let t = json!({"debit_account": funding, "credit_account": holder, "amount": amount, "currency": code});
        ok_transfer(&client, t).await;
        // The funding account goes below zero: a debit balance.
        let xml = text(&client, &funding, "?format=camt.053").await;
        assert_schema_valid(&xml);
        assert!(
            xml.contains(&format!("<Cd>CLBD</Cd>\n          </CdOrPrtry>\n        </Tp>\n        <Amt Ccy=\"{code}\">{text_amount}</Amt>\n        <CdtDbtInd>DBIT</CdtDbtInd>")),
            "{xml}"
        );
        let json = statement(&client, &holder, "").await;
        assert_eq!(json["closing_balance"]["amount"].as_u64(), Some(amount));
        let csv = text(&client, &holder, "?format=csv").await;
        assert!(csv.ends_with(&format!(",CRDT,{text_amount},{code},{text_amount},,\n")), "{csv}");
    }
}

async fn bad_parameters_and_other_tenants(backend: Backend) {
    let Some((admin, _data)) = common::boot_on(backend, ADMIN, |_| {}).await else { return };
    let doc = admin.send(admin.http.get(format!("{}/openapi.json", admin.base))).await;
    let operation = &doc.body["paths"]["/v1/accounts/{id}/statement"]["get"];
    let content = operation["responses"]["200"]["content"].as_object().unwrap();
    assert_eq!(content.keys().collect::<Vec<_>>(), ["application/json", "application/xml", "text/csv"]);
    let formats = operation["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "format").unwrap();
    assert_eq!(formats["schema"]["enum"], json!(["json", "csv", "camt.053", "camt.053.001.08", null]));
    let (_, a) = tenant(&admin, "Alpha").await;
    let (_, b) = tenant(&admin, "Beta").await;
    let account = a.account(json!(0)).await;
    for (query, param) in [
        ("?from=2026-13-01", "from"),
        ("?from=yesterday", "from"),
        ("?to=2026-12-01T10:00:00", "to"),
        ("?from=2026-12-02&to=2026-12-01", "to"),
        ("?from=2999-01-01", "from"),
        ("?from=2999-01-01&to=2999-01-02", "from"),
        ("?to=2000-01-01", "to"),
        ("?format=pdf", "format"),
        ("?since=2026-12-01", "since"),
    ] {
        let s = a.get(&format!("/v1/accounts/{account}/statement{query}")).await;
        assert_eq!((s.status, s.body["error"]["param"].as_str()), (400, Some(param)), "{query}: {}", s.body);
        assert!(s.body["error"]["message"].as_str().unwrap().contains(param), "{query}: {}", s.body);
    }
    // Another tenant's account is not found, in every format.
    for query in ["", "?format=csv", "?format=camt.053"] {
        let s = b.get(&format!("/v1/accounts/{account}/statement{query}")).await;
        assert_eq!((s.status, s.body["error"]["code"].as_str()), (404, Some("resource_missing")), "{}", s.body);
    }
    let s = a.get("/v1/accounts/acct_00000000000000000000000000/statement").await;
    assert_eq!(s.status, 404, "{}", s.body);
}

async fn batch_items_carry_their_end_to_end_id(backend: Backend) {
    let Some((client, _data)) = common::boot_on(backend, ADMIN, |_| {}).await else { return };
    let (_, payer, payee) = client.parties(10_000).await;
    let csv = format!("payee,amount,currency,reference\n{payee},12.50,EUR,INV-2026-1\n{payee},0.50,EUR,\n");
    let request = client
        .http
        .post(format!("{}/v1/batches?payer={payer}", client.base))
        .header("content-type", "text/csv")
        .body(csv);
    let answer = client.send_as_key(request).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.body["id"].as_str().unwrap().to_owned();
    let mut status = Value::Null;
    for _ in 0..400 {
        status = client.get(&format!("/v1/batches/{id}")).await.body;
        if status["status"] == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(status["status"], "completed", "{status}");

    let json = statement(&client, &payee, "").await;
    let references: Vec<(u64, Value)> = json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["amount"].as_u64().unwrap(), e["end_to_end_id"].clone()))
        .collect();
    assert_eq!(references, vec![(1_250, json!("INV-2026-1")), (50, Value::Null)]);
    // The payer's side carries the same reference.
    let payer_json = statement(&client, &payer, "").await;
    assert_eq!(payer_json["entries"][1]["end_to_end_id"], "INV-2026-1");
    let xml = text(&client, &payee, "?format=camt.053").await;
    assert_schema_valid(&xml);
    assert!(xml.contains("<EndToEndId>INV-2026-1</EndToEndId>"), "{xml}");
    assert!(xml.contains("<EndToEndId>NOTPROVIDED</EndToEndId>"), "{xml}");
    let csv = text(&client, &payee, "?format=csv").await;
    assert!(csv.contains(",CRDT,12.50,EUR,12.50,INV-2026-1,\n"), "{csv}");
}

async fn a_pain001_item_carries_its_remittance_information(backend: Backend) {
    let Some((client, _data)) = common::boot_on(backend, ADMIN, |_| {}).await else { return };
    let funding = client.account(json!("unlimited")).await;
    let mut accounts = Vec::new();
    for iban in ["DE02100100109307118603", "DE89370400440532013000", "NL91ABNA0417164300"] {
        let a = client.post("/v1/accounts", json!({"currency": "EUR", "reference": iban})).await;
        assert_eq!(a.status, 201, "{}", a.body);
        accounts.push(a.body["id"].as_str().unwrap().to_owned());
    }
    ok_transfer(
        &client,
        json!({"debit_account": funding, "credit_account": accounts[0], "amount": 200_000, "currency": "EUR"}),
    )
    .await;
    let file = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../formats/tests/fixtures/iso20022/pain.001.001.10_2tx_EUR.xml"
    ))
    .unwrap();
    let request =
        client.http.post(format!("{}/v1/batches", client.base)).header("content-type", "application/xml").body(file);
    let answer = client.send_as_key(request).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.body["id"].as_str().unwrap().to_owned();
    let mut status = Value::Null;
    for _ in 0..400 {
        status = client.get(&format!("/v1/batches/{id}")).await.body;
        if status["status"] == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(status["status"], "completed", "{status}");

    // The payer's statement: the funding, then both items, the first with its remittance.
    let json = statement(&client, &accounts[0], "").await;
    let entries = json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{json}");
    assert_eq!(
        (&entries[1]["end_to_end_id"], &entries[1]["remittance_information"], &entries[1]["amount"]),
        (&json!("E2E-pain.001.001.10-1"), &json!("Invoice 2026-001"), &json!(125_000))
    );
    assert_eq!(
        (&entries[2]["end_to_end_id"], &entries[2]["remittance_information"]),
        (&json!("E2E-pain.001.001.10-2"), &Value::Null)
    );
    // The payee's camt.053: its IBAN, the end-to-end id and the remittance information.
    let xml = text(&client, &accounts[1], "?format=camt.053").await;
    assert_schema_valid(&xml);
    assert!(xml.contains("<IBAN>DE89370400440532013000</IBAN>"), "{xml}");
    assert!(xml.contains("<EndToEndId>E2E-pain.001.001.10-1</EndToEndId>"), "{xml}");
    assert!(xml.contains("<RmtInf>\n              <Ustrd>Invoice 2026-001</Ustrd>\n            </RmtInf>"), "{xml}");
    let csv = text(&client, &accounts[1], "?format=csv").await;
    assert!(csv.contains(",CRDT,1250.00,EUR,1250.00,E2E-pain.001.001.10-1,Invoice 2026-001\n"), "{csv}");
}

/// A new tenant and a read/write key for it.
async fn tenant(admin: &Client, name: &str) -> (String, Client) {
    let t = admin.post("/v1/tenants", json!({"name": name})).await;
    assert_eq!(t.status, 201, "{}", t.body);
    let id = t.body["id"].as_str().unwrap().to_owned();
    let k = admin.post("/v1/api_keys", json!({"tenant": id, "scopes": ["read", "write"]})).await;
    assert_eq!(k.status, 201, "{}", k.body);
    (id, admin.with_key(k.body["secret"].as_str().unwrap()))
}

/// The opening balance is read from whichever side of `from` is shorter in time: the history
/// from the opening for an early period, the current balance less what moved since `from` for
/// a late one. Over a history spread in time (holds, partial posts and voids among the moves),
/// every period that starts and ends at an entry, early or late, has the opening and closing
/// balances of a brute-force sum over the whole history's entries.
async fn balances_of_any_period_match_a_brute_force_sum(backend: Backend) {
    let Some((client, _data)) = common::boot_on(backend, ADMIN, |_| {}).await else { return };
    let (_funding, payer, payee) = client.parties(100_000).await;
    let move_ = |debit: &str, credit: &str, amount: u64| json!({"debit_account": debit, "credit_account": credit, "amount": amount, "currency": "EUR"});
    for round in 0..6u64 {
        ok_transfer(&client, move_(&payer, &payee, 1_000 + round)).await;
        ok_transfer(&client, move_(&payee, &payer, 300 + round)).await;
        let mut hold = move_(&payer, &payee, 700);
        hold["pending"] = json!(true);
        let held = ok_transfer(&client, hold.clone()).await;
        if round % 2 == 0 {
            ok_transfer(&client, json!({"post_pending_id": held["id"], "amount": 200 + round})).await;
        } else {
            ok_transfer(&client, json!({"void_pending_id": held["id"]})).await;
        }
        // Spread in time, so that early periods are read from the opening and late ones from
        // the balance.
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    }
    let whole = statement(&client, &payer, "").await;
    assert_eq!(whole["opening_balance"]["amount"], 0);
    let posted = client.balance(&payer).await["posted"].as_i64().unwrap();
    assert_eq!(whole["closing_balance"]["amount"].as_i64(), Some(posted));
    let all = whole["entries"].as_array().unwrap().clone();
    assert_eq!(all.len(), 1 + 6 * 2 + 3, "{whole}");
    let signed = |e: &Value| {
        let amount = e["amount"].as_i64().unwrap();
        if e["credit_debit"] == "credit" {
            amount
        } else {
            -amount
        }
    };
    let at = |i: usize| all[i].get("booked_at").and_then(Value::as_str).unwrap().to_owned();
    let mut checked = 0;
    for first in 0..all.len() {
        for last in [first, (first + 3).min(all.len() - 1), all.len() - 1] {
            let opening: i64 = all[..first].iter().map(signed).sum();
            let closing: i64 = all[..=last].iter().map(signed).sum();
            for query in [format!("?from={}&to={}", at(first), at(last)), format!("?from={}", at(first))] {
                let s = statement(&client, &payer, &query).await;
                let closing = if query.contains("&to=") { closing } else { posted };
                assert_eq!(
                    (s["opening_balance"]["amount"].as_i64(), s["closing_balance"]["amount"].as_i64()),
                    (Some(opening), Some(closing)),
                    "{query}: {s}"
                );
                let expected = if query.contains("&to=") { &all[first..=last] } else { &all[first..] };
                assert_eq!(s["entries"].as_array().unwrap().as_slice(), expected, "{query}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, all.len() * 6);
    // The same in camt.053, for the latest entry alone (read from the balance).
    let last = at(all.len() - 1);
    let xml = text(&client, &payer, &format!("?format=camt.053&from={last}")).await;
    assert_schema_valid(&xml);
}
