//! Cross-currency batch items through the API, on both stores: a CSV file and a pain.001 file
//! from a USD payer to EUR and GBP payees lock one quote per currency pair at validation (shown
//! on the batch), each item moves payer → liquidity(USD) and liquidity(target) → payee plus its
//! fee, a pair without a rate is `no_rate` (never 1:1), an atomic batch with a failing item
//! moves nothing, and `paycore verify` checks every leg against the quotes afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{blocking, on_both_backends, Backend, Client, Data};
use serde_json::{json, Value};
use std::time::Duration;

on_both_backends!(
    a_csv_batch_pays_eur_and_gbp_payees_from_a_usd_payer,
    a_pain001_in_euros_is_paid_from_a_dollar_account,
    a_pair_without_a_rate_is_never_paid_one_to_one,
    an_atomic_cross_currency_batch_with_a_failing_item_moves_nothing,
);

const KEY: &str = "sk_test_fxbatch_0123456789abcdefghijklmno";
const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/samples");

async fn start(backend: Backend) -> Option<(Client, Data)> {
    common::boot_on(backend, KEY, |_| {}).await
}

/// A new account in `currency` with `reference`, holding `funds` (from an unlimited account).
async fn account(client: &Client, currency: &str, reference: &str, funds: u64) -> String {
    let a = client.post("/v1/accounts", json!({"currency": currency, "reference": reference})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body["id"].as_str().unwrap().to_owned();
    if funds > 0 {
        let f = client.post("/v1/accounts", json!({"currency": currency, "overdraft_limit": "unlimited"})).await;
        let funding = f.body["id"].as_str().unwrap();
        let t = client
            .post(
                "/v1/transfers",
                json!({"debit_account": funding, "credit_account": id, "amount": funds, "currency": currency}),
            )
            .await;
        assert_eq!(t.body["result"], "ok", "{}", t.body);
    }
    id
}

async fn set_rate(client: &Client, base: &str, quote: &str, rate: &str) {
    let r = client.post("/v1/fx/rates", json!({"base": base, "quote": quote, "rate": rate})).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

async fn set_fee(client: &Client, fee_bps: u32) {
    let s = client.post("/v1/fx/settings", json!({"fee_bps": fee_bps})).await;
    assert_eq!(s.status, 200, "{}", s.body);
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

fn counts(batch: &Value) -> (u64, u64, u64, u64) {
    let c = &batch["counts"];
    let n = |k: &str| c[k].as_u64().unwrap();
    (n("total"), n("succeeded"), n("failed"), n("invalid"))
}

/// The batch's quotes as `(from, to, rate, source_amount, target_amount, fee)`.
fn quotes(batch: &Value) -> Vec<(String, String, String, u64, u64, u64)> {
    let Some(quotes) = batch["fx_quotes"].as_array() else { return Vec::new() };
    quotes
        .iter()
        .map(|q| {
            assert!(q["id"].as_str().unwrap().starts_with("fxq_"), "{q}");
            let s = |k: &str| q[k].as_str().unwrap().to_owned();
            let n = |k: &str| q[k].as_u64().unwrap();
            (s("from"), s("to"), s("rate"), n("source_amount"), n("target_amount"), n("fee"))
        })
        .collect()
}

fn quote(
    from: &str,
    to: &str,
    rate: &str,
    source: u64,
    target: u64,
    fee: u64,
) -> (String, String, String, u64, u64, u64) {
    (from.to_owned(), to.to_owned(), rate.to_owned(), source, target, fee)
}

async fn posted(client: &Client, account: &str) -> i64 {
    client.balance(account).await["posted"].as_i64().unwrap()
}

/// The tenant's FX accounts as `(kind, currency, posted, pending debits)`, sorted.
async fn fx_accounts(client: &Client) -> Vec<(String, String, i64, i64)> {
    let list = client.get("/v1/fx/accounts").await;
    assert_eq!(list.status, 200, "{}", list.body);
    let mut found: Vec<_> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let balance = &a["account"]["balance"];
            (
                a["kind"].as_str().unwrap().to_owned(),
                a["account"]["currency"].as_str().unwrap().to_owned(),
                balance["posted"].as_i64().unwrap(),
                balance["pending_debits"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    found.sort();
    found
}

fn fx(kind: &str, currency: &str, posted: i64) -> (String, String, i64, i64) {
    (kind.to_owned(), currency.to_owned(), posted, 0)
}

/// The items as `(line, status, failure_code)`.
async fn items(client: &Client, id: &str) -> Vec<(u64, String, Option<String>)> {
    let listed = client.get(&format!("/v1/batches/{id}/items?limit=100")).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["line"].as_u64().unwrap(),
                i["status"].as_str().unwrap().to_owned(),
                i["failure_code"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

async fn verify_passes(data: &Data) {
    let report = blocking(data, |store| paycore_store::verify::verify(store).unwrap()).await;
    assert!(report.ok(), "{:?}", report.problems);
    assert!(report.batch_items > 0);
}

async fn a_csv_batch_pays_eur_and_gbp_payees_from_a_usd_payer(backend: Backend) {
    let Some((api, data)) = start(backend).await else { return };
    let payer = account(&api, "USD", "ACME-USD", 100_000).await;
    let eur1 = account(&api, "EUR", "EUR-1", 0).await;
    let eur2 = account(&api, "EUR", "EUR-2", 0).await;
    let gbp = account(&api, "GBP", "GBP-1", 0).await;
    let usd = account(&api, "USD", "USD-1", 0).await;
    set_fee(&api, 25).await;
    set_rate(&api, "USD", "EUR", "0.9234").await;
    set_rate(&api, "USD", "GBP", "0.79").await;
    let file = "payer,payee,amount,currency,reference\n\
                ACME-USD,EUR-1,92.34,EUR,r1\n\
                ACME-USD,GBP-1,100.00,GBP,r2\n\
                ACME-USD,EUR-2,10.00,EUR,r3\n\
                ACME-USD,USD-1,5.00,USD,r4\n";
    let id = upload(&api, "format=csv", "text/csv", file.as_bytes().to_vec()).await;
    let batch = wait_batch(&api, &id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(counts(&batch), (4, 4, 0, 0), "{batch}");
    // Per item, the ceiling at the rate and of the fee: 92.34 EUR is exactly 100.00 USD (fee
    // 0.25); 10.00 EUR is 10.83 (fee 0.03); 100.00 GBP at 0.79 is 126.59 (fee 0.32).
    assert_eq!(
        quotes(&batch),
        vec![quote("USD", "EUR", "0.9234", 11_083, 10_234, 28), quote("USD", "GBP", "0.79", 12_659, 10_000, 32)]
    );
    // The control totals stay in the items' currencies.
    let totals: Vec<(&str, u64)> = batch["control_totals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["currency"].as_str().unwrap(), t["sum"].as_u64().unwrap()))
        .collect();
    assert_eq!(totals, vec![("EUR", 10_234), ("GBP", 10_000), ("USD", 500)]);

    assert_eq!(posted(&api, &payer).await, 100_000 - 11_083 - 28 - 12_659 - 32 - 500);
    assert_eq!(posted(&api, &eur1).await, 9_234);
    assert_eq!(posted(&api, &eur2).await, 1_000);
    assert_eq!(posted(&api, &gbp).await, 10_000);
    assert_eq!(posted(&api, &usd).await, 500);
    assert_eq!(
        fx_accounts(&api).await,
        vec![
            fx("fee_revenue", "USD", 60),
            fx("liquidity", "EUR", -10_234),
            fx("liquidity", "GBP", -10_000),
            fx("liquidity", "USD", 23_742),
        ]
    );
    // The report carries each item in its own currency.
    let report = api.get(&format!("/v1/batches/{id}/report?format=csv")).await;
    assert_eq!(
        String::from_utf8(report.bytes).unwrap(),
        "line,reference,payer,payee,amount,currency,status,failure_code\n\
         2,r1,ACME-USD,EUR-1,92.34,EUR,succeeded,\n\
         3,r2,ACME-USD,GBP-1,100.00,GBP,succeeded,\n\
         4,r3,ACME-USD,EUR-2,10.00,EUR,succeeded,\n\
         5,r4,ACME-USD,USD-1,5.00,USD,succeeded,\n"
    );
    // A batch's quote is the batch's alone: no payment can take it.
    let quote_id = batch["fx_quotes"][0]["id"].as_str().unwrap();
    let taken = api
        .post(
            "/v1/payments",
            json!({"payer_account": payer, "payee_account": eur1, "amount": 11_083, "currency": "USD", "fx_quote": quote_id}),
        )
        .await;
    assert_eq!((taken.status, taken.body["error"]["code"].as_str()), (400, Some("quote_expired")), "{}", taken.body);
    verify_passes(&data).await;
}

async fn a_pain001_in_euros_is_paid_from_a_dollar_account(backend: Backend) {
    let Some((api, data)) = start(backend).await else { return };
    // sepa_king's DK sample, its debtor holding dollars: EUR 6543.14 and 112.72.
    let debtor = account(&api, "USD", "DE87200500001234567890", 1_000_000).await;
    let c1 = account(&api, "EUR", "DE21500500009876543210", 0).await;
    let c2 = account(&api, "EUR", "DE21500500001234567897", 0).await;
    set_rate(&api, "USD", "EUR", "0.9234").await;
    let file = std::fs::read(format!("{SAMPLES}/iso20022/pain.001.001.03_sepaking_DK-sample_2tx_EUR.xml")).unwrap();
    let id = upload(&api, "format=pain.001", "application/xml", file).await;
    let batch = wait_batch(&api, &id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(counts(&batch), (2, 2, 0, 0), "{batch}");
    // ⌈654 314 ÷ 0.9234⌉ = 708 593 and ⌈11 272 ÷ 0.9234⌉ = 12 208 cents; no fee is set.
    assert_eq!(quotes(&batch), vec![quote("USD", "EUR", "0.9234", 720_801, 665_586, 0)]);
    assert_eq!(posted(&api, &debtor).await, 1_000_000 - 720_801);
    assert_eq!(posted(&api, &c1).await, 654_314);
    assert_eq!(posted(&api, &c2).await, 11_272);
    assert_eq!(
        fx_accounts(&api).await,
        vec![fx("fee_revenue", "USD", 0), fx("liquidity", "EUR", -665_586), fx("liquidity", "USD", 720_801)]
    );
    let pain002 = String::from_utf8(api.get(&format!("/v1/batches/{id}/report?format=pain.002")).await.bytes).unwrap();
    assert_eq!(pain002.matches("<TxSts>ACCP</TxSts>").count(), 2, "{pain002}");
    assert!(pain002.contains(r#"Ccy="EUR">6543.14<"#), "{pain002}");
    verify_passes(&data).await;
}

async fn a_pair_without_a_rate_is_never_paid_one_to_one(backend: Backend) {
    let Some((api, data)) = start(backend).await else { return };
    let payer = account(&api, "USD", "ACME-USD", 100_000).await;
    let eur = account(&api, "EUR", "EUR-1", 0).await;
    let jpy = account(&api, "JPY", "JPY-1", 0).await;
    set_rate(&api, "USD", "EUR", "0.9234").await;
    let file = "payer,payee,amount,currency\nACME-USD,EUR-1,10.00,EUR\nACME-USD,JPY-1,1000,JPY\n";

    // Under reject_file (the default) the whole file is refused, naming the item and its pair.
    let id = upload(&api, "format=csv", "text/csv", file.as_bytes().to_vec()).await;
    let batch = wait_batch(&api, &id).await;
    assert_eq!(batch["status"], "rejected", "{batch}");
    assert_eq!(batch["rejection"]["code"], "invalid_items", "{batch}");
    let error = &batch["rejection"]["errors"][0];
    assert_eq!((error["line"].as_u64(), error["code"].as_str()), (Some(3), Some("no_rate")), "{batch}");
    assert!(error["message"].as_str().unwrap().contains("no rate for USD to JPY"), "{batch}");
    assert!(batch.get("fx_quotes").is_none(), "{batch}");
    assert_eq!(posted(&api, &payer).await, 100_000);

    // Skipping invalid items: the EUR item is paid, the JPY one is invalid and moves nothing.
    let id = upload(&api, "format=csv&on_invalid=skip_invalid", "text/csv", file.as_bytes().to_vec()).await;
    let batch = wait_batch(&api, &id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(counts(&batch), (2, 1, 0, 1), "{batch}");
    assert_eq!(
        items(&api, &id).await,
        vec![(2, "succeeded".to_owned(), None), (3, "invalid".to_owned(), Some("no_rate".to_owned()))]
    );
    assert_eq!(quotes(&batch), vec![quote("USD", "EUR", "0.9234", 1_083, 1_000, 0)]);
    assert_eq!(posted(&api, &payer).await, 100_000 - 1_083);
    assert_eq!((posted(&api, &eur).await, posted(&api, &jpy).await), (1_000, 0));
    verify_passes(&data).await;
}

async fn an_atomic_cross_currency_batch_with_a_failing_item_moves_nothing(backend: Backend) {
    let Some((api, data)) = start(backend).await else { return };
    let payer = account(&api, "USD", "ACME-USD", 10_000).await;
    let eur = account(&api, "EUR", "EUR-1", 0).await;
    let gbp = account(&api, "GBP", "GBP-1", 0).await;
    set_fee(&api, 25).await;
    set_rate(&api, "USD", "EUR", "0.9234").await;
    set_rate(&api, "USD", "GBP", "0.79").await;
    // 50.00 EUR costs 54.15 + 0.14 USD, which the payer has; 200.00 GBP costs 253.17 + 0.64.
    let file = "payer,payee,amount,currency\nACME-USD,EUR-1,50.00,EUR\nACME-USD,GBP-1,200.00,GBP\n";
    let id = upload(&api, "format=csv&mode=atomic", "text/csv", file.as_bytes().to_vec()).await;
    let batch = wait_batch(&api, &id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(counts(&batch), (2, 0, 2, 0), "{batch}");
    assert_eq!(
        quotes(&batch),
        vec![quote("USD", "EUR", "0.9234", 5_415, 5_000, 14), quote("USD", "GBP", "0.79", 25_317, 20_000, 64)]
    );
    let failed = items(&api, &id).await;
    assert_eq!(failed.iter().map(|i| i.1.as_str()).collect::<Vec<_>>(), ["failed", "failed"], "{failed:?}");
    assert_eq!(failed[1].2.as_deref(), Some("insufficient_funds"));
    let balance = api.balance(&payer).await;
    assert_eq!((balance["posted"].as_i64(), balance["pending_debits"].as_i64()), (Some(10_000), Some(0)), "{balance}");
    assert_eq!((posted(&api, &eur).await, posted(&api, &gbp).await), (0, 0));
    for (kind, currency, posted, pending) in fx_accounts(&api).await {
        assert_eq!((posted, pending), (0, 0), "{kind} {currency}");
    }
    verify_passes(&data).await;
}
