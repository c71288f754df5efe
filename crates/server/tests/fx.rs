//! FX through the API, on both stores: rates (exact decimal strings only), quotes (both
//! amounts fixed by the rounding rule, idempotent), cross-currency payments through the FX
//! accounts (automatic, and held then captured after the rate changed), `quote_expired` (by
//! time and by use), `no_rate`, wrong currencies and amounts, tenant isolation, and `paycore
//! verify` afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{blocking, boot_on, on_both_backends, Backend, Client, Data};
use serde_json::{json, Value};

on_both_backends!(
    a_cross_currency_payment_moves_the_quoted_amounts,
    a_held_payment_is_captured_at_the_quoted_amounts_after_the_rate_changed,
    quotes_expire_and_are_used_once,
    rates_are_exact_decimal_strings,
    quotes_follow_the_rounding_rule_and_minor_units,
    payments_must_match_their_quote,
    quotes_and_rates_belong_to_their_tenant,
    a_cross_currency_payment_is_paid_by_a_scan_until_its_quote_expires,
);

const ADMIN: &str = "sk_test_admin_0123456789abcdefghijklmnopqr";

async fn start(backend: Backend) -> Option<(Client, Data)> {
    boot_on(backend, ADMIN, |_| {}).await
}

/// A new account in `currency` with `overdraft` as its limit; its id.
async fn account(client: &Client, currency: &str, overdraft: Value) -> String {
    let a = client.post("/v1/accounts", json!({"currency": currency, "overdraft_limit": overdraft})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    a.body["id"].as_str().unwrap().to_owned()
}

/// A USD payer funded with `funds` (from an unlimited USD account) and an empty EUR payee.
async fn parties(client: &Client, funds: u64) -> (String, String) {
    let funding = account(client, "USD", json!("unlimited")).await;
    let payer = account(client, "USD", json!(0)).await;
    let payee = account(client, "EUR", json!(0)).await;
    let t = client
        .post(
            "/v1/transfers",
            json!({"debit_account": funding, "credit_account": payer, "amount": funds, "currency": "USD"}),
        )
        .await;
    assert_eq!(t.status, 201, "{}", t.body);
    (payer, payee)
}

async fn set_rate(client: &Client, base: &str, quote: &str, rate: &str) {
    let r = client.post("/v1/fx/rates", json!({"base": base, "quote": quote, "rate": rate})).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

async fn quote(client: &Client, body: Value) -> Value {
    let q = client.post("/v1/fx/quotes", body).await;
    assert_eq!(q.status, 201, "{}", q.body);
    q.body
}

fn usd_to_eur(source_amount: u64) -> Value {
    json!({"from_currency": "USD", "to_currency": "EUR", "source_amount": source_amount, "lock_seconds": 60})
}

fn fx_payment(payer: &str, payee: &str, quote: &Value, extra: Value) -> Value {
    let mut body = json!({
        "payer_account": payer,
        "payee_account": payee,
        "amount": quote["source_amount"],
        "currency": quote["from_currency"],
        "fx_quote": quote["id"],
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn posted(client: &Client, account: &str) -> i64 {
    client.balance(account).await["posted"].as_i64().unwrap()
}

/// The tenant's FX accounts as `(kind, currency) → posted`.
async fn fx_accounts(client: &Client) -> Vec<(String, String, i64)> {
    let list = client.get("/v1/fx/accounts").await;
    assert_eq!(list.status, 200, "{}", list.body);
    list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap().to_owned(),
                a["account"]["currency"].as_str().unwrap().to_owned(),
                a["account"]["balance"]["posted"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn verify_passes(data: &Data) {
    let report = blocking(data, |store| paycore_store::verify::verify(store).unwrap()).await;
    assert!(report.ok(), "{:?}", report.problems);
}

fn error(answer: &common::Answer) -> (u16, &str, &str) {
    (
        answer.status,
        answer.body["error"]["code"].as_str().unwrap_or(""),
        answer.body["error"]["param"].as_str().unwrap_or(""),
    )
}

async fn a_cross_currency_payment_moves_the_quoted_amounts(backend: Backend) {
    let Some((client, data)) = start(backend).await else { return };
    let (payer, payee) = parties(&client, 100_000).await;
    let s = client.post("/v1/fx/settings", json!({"fee_bps": 25})).await;
    assert_eq!((s.status, &s.body), (200, &json!({"fee_bps": 25})));
    set_rate(&client, "USD", "EUR", "0.92340").await;
    let rates = client.get("/v1/fx/rates").await;
    assert_eq!(rates.body["data"][0]["rate"], "0.9234");
    assert_eq!(rates.body["data"][0]["object"], "fx_rate");

    // 100.00 USD at 0.9234 is 92.34 EUR; the fee of 25 bps is 0.25 USD.
    let body = usd_to_eur(10_000);
    let first = client.post_with_key("/v1/fx/quotes", body.clone(), Some("q-1")).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let q = first.body.clone();
    assert!(q["id"].as_str().unwrap().starts_with("fxq_"));
    assert_eq!(
        (&q["rate"], &q["source_amount"], &q["target_amount"], &q["fee"], &q["used_by"]),
        (&json!("0.9234"), &json!(10_000), &json!(9_234), &json!(25), &Value::Null)
    );
    // A retry with the key is the same quote, byte for byte; another body is refused.
    let again = client.post_with_key("/v1/fx/quotes", body, Some("q-1")).await;
    assert!(again.replayed);
    assert_eq!(again.bytes, first.bytes);
    let other = client.post_with_key("/v1/fx/quotes", usd_to_eur(5), Some("q-1")).await;
    assert_eq!(other.status, 422, "{}", other.body);

    let p = client.post("/v1/payments", fx_payment(&payer, &payee, &q, json!({}))).await;
    assert_eq!(p.status, 201, "{}", p.body);
    assert_eq!(
        p.body["fx"],
        json!({"quote": q["id"], "rate": "0.9234", "target_currency": "EUR", "target_amount": 9_234, "fee": 25})
    );
    let id = p.body["id"].as_str().unwrap().to_owned();
    let c = client.post(&format!("/v1/payments/{id}/confirm"), json!({})).await;
    assert_eq!((c.status, c.body["status"].as_str()), (200, Some("succeeded")), "{}", c.body);

    assert_eq!(posted(&client, &payer).await, 100_000 - 10_000 - 25);
    assert_eq!(posted(&client, &payee).await, 9_234);
    let mut accounts = fx_accounts(&client).await;
    accounts.sort();
    assert_eq!(
        accounts,
        vec![
            ("fee_revenue".into(), "USD".into(), 25),
            ("liquidity".into(), "EUR".into(), -9_234),
            ("liquidity".into(), "USD".into(), 10_000),
        ]
    );
    let stored = client.get(&format!("/v1/fx/quotes/{}", q["id"].as_str().unwrap())).await;
    assert_eq!(stored.body["used_by"], id.as_str());
    verify_passes(&data).await;
}

async fn a_held_payment_is_captured_at_the_quoted_amounts_after_the_rate_changed(backend: Backend) {
    let Some((client, data)) = start(backend).await else { return };
    let (payer, payee) = parties(&client, 100_000).await;
    client.post("/v1/fx/settings", json!({"fee_bps": 100})).await;
    set_rate(&client, "USD", "EUR", "0.9234").await;
    let q = quote(&client, usd_to_eur(10_000)).await;
    assert_eq!((&q["target_amount"], &q["fee"]), (&json!(9_234), &json!(100)));
    let p = client.post("/v1/payments", fx_payment(&payer, &payee, &q, json!({"capture_method": "manual"}))).await;
    let id = p.body["id"].as_str().unwrap().to_owned();
    let c = client.post(&format!("/v1/payments/{id}/confirm"), json!({})).await;
    assert_eq!(c.body["status"], "requires_capture", "{}", c.body);
    let held = client.balance(&payer).await;
    assert_eq!((held["posted"].as_i64(), held["pending_debits"].as_u64()), (Some(100_000), Some(10_100)));
    assert_eq!(posted(&client, &payee).await, 0);

    // The rate moves a lot; the capture still moves the quoted amounts.
    set_rate(&client, "USD", "EUR", "0.5").await;
    let partial = client.post(&format!("/v1/payments/{id}/capture"), json!({"amount": 5_000})).await;
    assert_eq!(error(&partial), (400, "parameter_invalid", "amount"), "{}", partial.body);
    let done = client.post(&format!("/v1/payments/{id}/capture"), json!({})).await;
    assert_eq!(done.body["status"], "succeeded", "{}", done.body);
    let after = client.balance(&payer).await;
    assert_eq!((after["posted"].as_i64(), after["pending_debits"].as_u64()), (Some(100_000 - 10_100), Some(0)));
    assert_eq!(posted(&client, &payee).await, 9_234);

    // A refund of a cross-currency payment is refused for now, with nothing moved.
    let refund = client.post(&format!("/v1/payments/{id}/refunds"), json!({})).await;
    assert_eq!(error(&refund).0, 400, "{}", refund.body);
    assert_eq!(posted(&client, &payee).await, 9_234);

    // A second held payment, cancelled: both holds (amount and fee) are released.
    let q = quote(&client, usd_to_eur(1_000)).await;
    assert_eq!((&q["target_amount"], &q["fee"]), (&json!(500), &json!(10)));
    let p = client.post("/v1/payments", fx_payment(&payer, &payee, &q, json!({"capture_method": "manual"}))).await;
    let id = p.body["id"].as_str().unwrap().to_owned();
    client.post(&format!("/v1/payments/{id}/confirm"), json!({})).await;
    assert_eq!(client.balance(&payer).await["pending_debits"], 1_010);
    let cancelled = client.post(&format!("/v1/payments/{id}/cancel"), json!({})).await;
    assert_eq!(cancelled.body["status"], "cancelled", "{}", cancelled.body);
    assert_eq!(client.balance(&payer).await["pending_debits"], 0);
    verify_passes(&data).await;
}

async fn quotes_expire_and_are_used_once(backend: Backend) {
    let Some((client, data)) = start(backend).await else { return };
    let (payer, payee) = parties(&client, 100_000).await;
    set_rate(&client, "USD", "EUR", "0.9234").await;
    let short =
        quote(&client, json!({"from_currency": "USD", "to_currency": "EUR", "source_amount": 100, "lock_seconds": 1}))
            .await;
    let q = quote(&client, usd_to_eur(100)).await;
    let used = client.post("/v1/payments", fx_payment(&payer, &payee, &q, json!({}))).await;
    assert_eq!(used.status, 201, "{}", used.body);
    let again = client.post("/v1/payments", fx_payment(&payer, &payee, &q, json!({}))).await;
    assert_eq!(error(&again), (400, "quote_expired", "fx_quote"), "{}", again.body);

    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let late = client.post("/v1/payments", fx_payment(&payer, &payee, &short, json!({}))).await;
    assert_eq!(error(&late), (400, "quote_expired", "fx_quote"), "{}", late.body);
    let stored = client.get(&format!("/v1/fx/quotes/{}", short["id"].as_str().unwrap())).await;
    assert_eq!(stored.body["used_by"], Value::Null);

    // No rate: never a silent 1:1.
    let none =
        client.post("/v1/fx/quotes", json!({"from_currency": "USD", "to_currency": "JPY", "source_amount": 100})).await;
    assert_eq!(error(&none), (400, "no_rate", "to_currency"), "{}", none.body);
    let reverse =
        client.post("/v1/fx/quotes", json!({"from_currency": "EUR", "to_currency": "USD", "source_amount": 100})).await;
    assert_eq!(error(&reverse), (400, "no_rate", "to_currency"), "{}", reverse.body);
    for (body, param) in [
        (json!({"from_currency": "USD", "to_currency": "EUR"}), "source_amount"),
        (
            json!({"from_currency": "USD", "to_currency": "EUR", "source_amount": 1, "target_amount": 1}),
            "target_amount",
        ),
        (json!({"from_currency": "USD", "to_currency": "USD", "source_amount": 1}), "to_currency"),
        (
            json!({"from_currency": "USD", "to_currency": "EUR", "source_amount": 1, "lock_seconds": 3601}),
            "lock_seconds",
        ),
        (json!({"from_currency": "USD", "to_currency": "EUR", "source_amount": 1, "lock_seconds": 0}), "lock_seconds"),
        (json!({"from_currency": "USD", "to_currency": "EUR", "source_amount": 1}), "source_amount"), // 0.92 cent
        (json!({"from_currency": "USD", "to_currency": "EUR", "source_amount": 10.5}), "source_amount"),
        (json!({"from_currency": "usd", "to_currency": "EUR", "source_amount": 1}), "from_currency"),
    ] {
        let refused = client.post("/v1/fx/quotes", body.clone()).await;
        assert_eq!(
            (refused.status, refused.body["error"]["param"].as_str()),
            (400, Some(param)),
            "{body}: {}",
            refused.body
        );
    }
    verify_passes(&data).await;
}

async fn rates_are_exact_decimal_strings(backend: Backend) {
    let Some((client, _data)) = start(backend).await else { return };
    for rate in [
        json!(1.0842),
        json!(1),
        json!("0"),
        json!("0.000"),
        json!("-1.2"),
        json!("1e3"),
        json!("1,2"),
        json!("1.2345678901234"),
        json!("0.0000000000001"),
        json!(""),
        json!(null),
    ] {
        let refused = client.post("/v1/fx/rates", json!({"base": "USD", "quote": "EUR", "rate": rate})).await;
        assert_eq!(
            (refused.status, refused.body["error"]["param"].as_str()),
            (400, Some("rate")),
            "{rate}: {}",
            refused.body
        );
    }
    let same = client.post("/v1/fx/rates", json!({"base": "USD", "quote": "USD", "rate": "1"})).await;
    assert_eq!((same.status, same.body["error"]["param"].as_str()), (400, Some("quote")));
    let unknown = client.post("/v1/fx/rates", json!({"base": "XXX", "quote": "USD", "rate": "1"})).await;
    assert_eq!((unknown.status, unknown.body["error"]["param"].as_str()), (400, Some("base")));
    assert_eq!(client.get("/v1/fx/rates").await.body["data"], json!([]));
    let fee = client.post("/v1/fx/settings", json!({"fee_bps": 10_001})).await;
    assert_eq!((fee.status, fee.body["error"]["param"].as_str()), (400, Some("fee_bps")));
    assert_eq!(client.get("/v1/fx/settings").await.body, json!({"fee_bps": 0}));
}

async fn quotes_follow_the_rounding_rule_and_minor_units(backend: Backend) {
    let Some((client, _data)) = start(backend).await else { return };
    for (from, to, rate, source, target) in [
        ("USD", "INR", "82.42135", 10_000, 824_213),
        ("USD", "GBP", "0.79", 229_019, 180_925),
        ("EUR", "USD", "1.0001", 10_000, 10_001),
        ("EUR", "JPY", "161.23", 10_000, 16_123),
        ("USD", "KWD", "0.30712", 10_000, 30_712),
    ] {
        set_rate(&client, from, to, rate).await;
        let q = quote(&client, json!({"from_currency": from, "to_currency": to, "source_amount": source})).await;
        assert_eq!((&q["target_amount"], &q["fee"]), (&json!(target), &json!(0)), "{from}→{to}");
    }
    // From a fixed target, the payer pays the ceiling: 180 925 pence cost 229 019 cents.
    let q = quote(&client, json!({"from_currency": "USD", "to_currency": "GBP", "target_amount": 180_925})).await;
    assert_eq!((&q["source_amount"], &q["target_amount"]), (&json!(229_019), &json!(180_925)));
}

async fn payments_must_match_their_quote(backend: Backend) {
    let Some((client, data)) = start(backend).await else { return };
    let (payer, payee) = parties(&client, 100_000).await;
    let usd_payee = account(&client, "USD", json!(0)).await;
    set_rate(&client, "USD", "EUR", "0.9234").await;
    let q = quote(&client, usd_to_eur(10_000)).await;
    let cases = [
        (fx_payment(&payer, &usd_payee, &q, json!({})), "currency_mismatch", "payee_account"),
        (fx_payment(&payer, &payee, &q, json!({"amount": 9_999})), "parameter_invalid", "amount"),
        (fx_payment(&payer, &payee, &q, json!({"currency": "EUR"})), "currency_mismatch", "payer_account"),
        (
            fx_payment(&payer, &payee, &q, json!({"fx_quote": "fxq_00000000000000000000000000"})),
            "resource_missing",
            "fx_quote",
        ),
        (
            fx_payment(&payer, &payee, &q, json!({"fx_quote": "pay_00000000000000000000000000"})),
            "parameter_invalid",
            "fx_quote",
        ),
    ];
    for (body, code, param) in cases {
        let refused = client.post("/v1/payments", body.clone()).await;
        assert_eq!((error(&refused).1, error(&refused).2), (code, param), "{body}: {}", refused.body);
    }
    // Two currencies without a quote: refused, never 1:1.
    let plain = client
        .post("/v1/payments", json!({"payer_account": payer, "payee_account": payee, "amount": 100, "currency": "USD"}))
        .await;
    assert_eq!(error(&plain), (400, "currency_mismatch", "payee_account"), "{}", plain.body);
    // The refusals used nothing: the quote still pays.
    let p = client.post("/v1/payments", fx_payment(&payer, &payee, &q, json!({}))).await;
    assert_eq!(p.status, 201, "{}", p.body);
    // A payer short of the fee: the payment fails and nothing moves.
    let (poor, _) = parties(&client, 10_000).await;
    client.post("/v1/fx/settings", json!({"fee_bps": 1})).await;
    let q = quote(&client, usd_to_eur(10_000)).await;
    let p = client.post("/v1/payments", fx_payment(&poor, &payee, &q, json!({}))).await;
    let id = p.body["id"].as_str().unwrap();
    let c = client.post(&format!("/v1/payments/{id}/confirm"), json!({})).await;
    assert_eq!(
        (c.body["status"].as_str(), c.body["failure_code"].as_str()),
        (Some("failed"), Some("insufficient_funds"))
    );
    assert_eq!(posted(&client, &poor).await, 10_000);
    assert_eq!(posted(&client, &payee).await, 0);
    verify_passes(&data).await;
}

async fn quotes_and_rates_belong_to_their_tenant(backend: Backend) {
    let Some((admin, _data)) = start(backend).await else { return };
    let mut clients = Vec::new();
    for name in ["Alpha", "Beta"] {
        let t = admin.post("/v1/tenants", json!({"name": name})).await;
        let id = t.body["id"].as_str().unwrap();
        let k = admin.post("/v1/api_keys", json!({"tenant": id, "scopes": ["read", "write"]})).await;
        clients.push(admin.with_key(k.body["secret"].as_str().unwrap()));
    }
    let (a, b) = (&clients[0], &clients[1]);
    set_rate(a, "USD", "EUR", "0.9234").await;
    assert_eq!(b.get("/v1/fx/rates").await.body["data"], json!([]));
    let none = b.post("/v1/fx/quotes", usd_to_eur(100)).await;
    assert_eq!(error(&none).1, "no_rate");
    let q = quote(a, usd_to_eur(10_000)).await;
    let path = format!("/v1/fx/quotes/{}", q["id"].as_str().unwrap());
    assert_eq!(a.get(&path).await.status, 200);
    assert_eq!(b.get(&path).await.status, 404);
    let (payer, payee) = parties(b, 100_000).await;
    let stolen = b.post("/v1/payments", fx_payment(&payer, &payee, &q, json!({}))).await;
    assert_eq!(error(&stolen), (404, "resource_missing", "fx_quote"), "{}", stolen.body);
    assert_eq!(a.get(&path).await.body["used_by"], Value::Null);
}

/// A payment made without a payer takes a quote; a scan pays it from an account in the quote's
/// source currency at the quoted amounts, until the quote's lock ends: then `quote_expired`,
/// and nothing moves.
async fn a_cross_currency_payment_is_paid_by_a_scan_until_its_quote_expires(backend: Backend) {
    let Some((client, data)) = start(backend).await else { return };
    let (payer, payee) = parties(&client, 100_000).await;
    let euros = account(&client, "EUR", json!("unlimited")).await;
    assert_eq!(client.post("/v1/fx/settings", json!({"fee_bps": 25})).await.status, 200);
    set_rate(&client, "USD", "EUR", "0.9234").await;
    let till = |q: &Value| json!({"payee_account": payee, "amount": q["source_amount"], "currency": "USD", "fx_quote": q["id"]});
    let q = quote(&client, usd_to_eur(10_000)).await;
    let made = client.post("/v1/payments", till(&q)).await;
    assert_eq!(made.status, 201, "{}", made.body);
    assert_eq!(made.body["payer_account"], Value::Null);
    assert_eq!(made.body["fx"]["target_amount"], 9_234);
    let (id, payload) = (made.body["id"].as_str().unwrap().to_owned(), made.body["qr_payload"].clone());
    assert!(
        payload.as_str().unwrap().contains("5303840"),
        "the code is in the quote's source currency (USD): {payload}"
    );

    // The payer's account must be in the quote's source currency.
    let wrong = client.post("/v1/payments/scan", json!({"payload": payload, "payer_account": euros})).await;
    assert_eq!(error(&wrong), (400, "currency_mismatch", "payer_account"), "{}", wrong.body);
    let paid = client.post("/v1/payments/scan", json!({"payload": payload, "payer_account": payer})).await;
    assert_eq!((paid.status, paid.body["status"].as_str()), (200, Some("succeeded")), "{}", paid.body);
    assert_eq!(paid.body["payer_account"], payer.as_str());
    assert_eq!(posted(&client, &payer).await, 100_000 - 10_000 - 25);
    assert_eq!(posted(&client, &payee).await, 9_234);
    let stored = client.get(&format!("/v1/fx/quotes/{}", q["id"].as_str().unwrap())).await;
    assert_eq!(stored.body["used_by"], id.as_str());

    // A code whose quote has lapsed: refused, nothing moves, the payment stays open.
    let short = quote(
        &client,
        json!({"from_currency": "USD", "to_currency": "EUR", "source_amount": 1_000, "lock_seconds": 1}),
    )
    .await;
    let stale = client.post("/v1/payments", till(&short)).await;
    assert_eq!(stale.status, 201, "{}", stale.body);
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let late =
        client.post("/v1/payments/scan", json!({"payload": stale.body["qr_payload"], "payer_account": payer})).await;
    assert_eq!((late.status, late.body["error"]["code"].as_str()), (400, Some("quote_expired")), "{}", late.body);
    assert_eq!(posted(&client, &payer).await, 100_000 - 10_000 - 25);
    assert_eq!(posted(&client, &payee).await, 9_234);
    let open = client.get(&format!("/v1/payments/{}", stale.body["id"].as_str().unwrap())).await;
    assert_eq!(
        (open.body["status"].as_str(), &open.body["payer_account"]),
        (Some("requires_confirmation"), &Value::Null)
    );
    verify_passes(&data).await;
}
