//! The API end to end, in process: the real router, engine and store (the embedded one on a
//! temporary data folder; the money paths also on PostgreSQL), driven over HTTP on a free port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{on_both_backends, Answer, Backend};
use paycore_server::Secret;
use serde_json::{json, Value};
use std::time::Duration;

const KEY: &str = "sk_test_0123456789abcdefghijklmnopqrstuv";
const NO_SUCH_ACCOUNT: &str = "acct_00000000000000000000000000";

on_both_backends!(
    fund_and_pay_automatically,
    manual_capture_of_part_releases_the_rest,
    refunds_never_exceed_the_captured_amount,
    idempotent_retries_replay_the_same_bytes,
    tenants_cannot_see_each_other,
    bulk_transfers_and_linked_chains,
    holds_post_and_void_with_client_ids,
);

fn balance(posted: i64, pending_debits: u64, available: i64) -> Value {
    json!({"posted": posted, "pending_debits": pending_debits, "pending_credits": 0, "available": available})
}

fn error_of(a: &Answer) -> (u16, &str, Option<&str>) {
    (a.status, a.body["error"]["code"].as_str().unwrap_or("?"), a.body["error"]["param"].as_str())
}

async fn fund_and_pay_automatically(backend: Backend) {
    let Some((api, _data)) = common::boot_on(backend, KEY, |_| {}).await else { return };
    let (funding, payer, payee) = api.parties(1000).await;
    let funding_view = api.get(&format!("/v1/accounts/{funding}")).await.body;
    assert_eq!(funding_view["overdraft_limit"], "unlimited");
    assert_eq!(funding_view["balance"], json!({"posted": -1000, "pending_debits": 0, "pending_credits": 0}));

    let pay = api.payment(&payer, &payee, 300, json!({"description": "coffee"})).await;
    let confirmed = api.post(&format!("/v1/payments/{pay}/confirm"), json!({})).await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    assert_eq!(confirmed.body["status"], "succeeded");
    assert_eq!(confirmed.body["amount_captured"], 300);
    assert_eq!(confirmed.body["description"], "coffee");
    assert!(confirmed.body["failure_code"].is_null());

    assert_eq!(api.balance(&payer).await, balance(700, 0, 700));
    assert_eq!(api.balance(&payee).await, balance(300, 0, 300));
    let again = api.post(&format!("/v1/payments/{pay}/confirm"), json!({})).await;
    assert_eq!(error_of(&again), (409, "payment_unexpected_state", None));
    assert!(again.body["error"]["message"].as_str().unwrap().contains("succeeded"));

    let fetched = api.get(&format!("/v1/payments/{pay}")).await;
    assert_eq!(fetched.body, confirmed.body);

    let list = api.get(&format!("/v1/accounts/{payer}/transfers")).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body["object"], "list");
    assert_eq!(list.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(list.body["data"][0]["amount"], 300);
    assert_eq!(list.body["data"][0]["debit_account"], payer.as_str());
    assert_eq!(list.body["data"][1]["amount"], 1000);
    assert_eq!(list.body["has_more"], false);
}

async fn manual_capture_of_part_releases_the_rest(backend: Backend) {
    let Some((api, _data)) = common::boot_on(backend, KEY, |_| {}).await else { return };
    let (_, payer, payee) = api.parties(1000).await;
    let pay = api.payment(&payer, &payee, 100, json!({"capture_method": "manual"})).await;
    let held = api.post_raw(&format!("/v1/payments/{pay}/confirm"), Vec::new()).await;
    assert_eq!(held.body["status"], "requires_capture", "{}", held.body);
    assert_eq!(api.balance(&payer).await, balance(1000, 100, 900));

    let too_much = api.post(&format!("/v1/payments/{pay}/capture"), json!({"amount": 101})).await;
    assert_eq!(error_of(&too_much), (400, "amount_too_large", Some("amount")));
    assert!(too_much.body["error"]["message"].as_str().unwrap().contains("100"));

    let captured = api.post(&format!("/v1/payments/{pay}/capture"), json!({"amount": 60})).await;
    assert_eq!(captured.status, 200, "{}", captured.body);
    assert_eq!(captured.body["status"], "succeeded");
    assert_eq!(captured.body["amount_captured"], 60);
    assert_eq!(api.balance(&payer).await, balance(940, 0, 940));
    assert_eq!(api.balance(&payee).await, balance(60, 0, 60));

    let cancel = api.post(&format!("/v1/payments/{pay}/cancel"), json!({})).await;
    assert_eq!(error_of(&cancel), (409, "payment_unexpected_state", None));
}

#[tokio::test]
async fn cancel_releases_a_hold() {
    let (api, _dir) = common::boot(KEY, |_| {}).await;
    let (_, payer, payee) = api.parties(500).await;
    let pay = api.payment(&payer, &payee, 200, json!({"capture_method": "manual"})).await;
    api.post(&format!("/v1/payments/{pay}/confirm"), json!({})).await;
    assert_eq!(api.balance(&payer).await, balance(500, 200, 300));
    let cancelled = api.post(&format!("/v1/payments/{pay}/cancel"), json!({})).await;
    assert_eq!(cancelled.body["status"], "cancelled", "{}", cancelled.body);
    assert_eq!(api.balance(&payer).await, balance(500, 0, 500));
    assert_eq!(api.balance(&payee).await, balance(0, 0, 0));
}

async fn refunds_never_exceed_the_captured_amount(backend: Backend) {
    let Some((api, _data)) = common::boot_on(backend, KEY, |_| {}).await else { return };
    let (_, payer, payee) = api.parties(1000).await;
    let pay = api.payment(&payer, &payee, 100, json!({})).await;
    api.post(&format!("/v1/payments/{pay}/confirm"), json!({})).await;

    let part = api.post(&format!("/v1/payments/{pay}/refunds"), json!({"amount": 30})).await;
    assert_eq!(part.status, 201, "{}", part.body);
    assert_eq!(part.body["object"], "refund");
    assert_eq!(part.body["status"], "succeeded");
    assert_eq!(part.body["amount"], 30);
    assert_eq!(part.body["payment"], pay.as_str());
    assert!(part.body["id"].as_str().unwrap().starts_with("re_"));

    let too_much = api.post(&format!("/v1/payments/{pay}/refunds"), json!({"amount": 71})).await;
    assert_eq!(error_of(&too_much), (400, "amount_too_large", Some("amount")));
    assert!(too_much.body["error"]["message"].as_str().unwrap().contains("70"));

    let rest = api.post_raw(&format!("/v1/payments/{pay}/refunds"), Vec::new()).await;
    assert_eq!((rest.status, &rest.body["amount"]), (201, &json!(70)), "{}", rest.body);
    let more = api.post(&format!("/v1/payments/{pay}/refunds"), json!({"amount": 1})).await;
    assert_eq!(error_of(&more), (400, "amount_too_large", Some("amount")));

    assert_eq!(api.balance(&payer).await, balance(1000, 0, 1000));
    assert_eq!(api.balance(&payee).await, balance(0, 0, 0));
    let payment = api.get(&format!("/v1/payments/{pay}")).await;
    assert_eq!(payment.body["amount_refunded"], 100);
    let refunds = api.get(&format!("/v1/payments/{pay}/refunds")).await;
    let amounts: Vec<&Value> = refunds.body["data"].as_array().unwrap().iter().map(|r| &r["amount"]).collect();
    assert_eq!(amounts, [&json!(30), &json!(70)]);
}

#[tokio::test]
async fn a_payment_without_funds_fails_and_changes_nothing() {
    let (api, _dir) = common::boot(KEY, |_| {}).await;
    let (funding, payer, payee) = api.parties(50).await;
    let pay = api.payment(&payer, &payee, 100, json!({})).await;
    let failed = api.post(&format!("/v1/payments/{pay}/confirm"), json!({})).await;
    assert_eq!(failed.status, 200, "{}", failed.body);
    assert_eq!(failed.body["status"], "failed");
    assert_eq!(failed.body["failure_code"], "insufficient_funds");
    assert_eq!(api.balance(&payer).await, balance(50, 0, 50));
    assert_eq!(api.balance(&payee).await, balance(0, 0, 0));
    assert_eq!(api.balance(&funding).await["posted"], -50);

    let t = api.transfer(&payer, &payee, 51).await;
    assert_eq!(error_of(&t), (422, "insufficient_funds", None));
}

async fn idempotent_retries_replay_the_same_bytes(backend: Backend) {
    let Some((api, _data)) = common::boot_on(backend, KEY, |_| {}).await else { return };
    let (_, payer, payee) = api.parties(1000).await;
    let body = json!({"payer_account": payer, "payee_account": payee, "amount": 10, "currency": "EUR"});
    let first = api.post_with_key("/v1/payments", body.clone(), Some("order-1")).await;
    assert_eq!((first.status, first.replayed), (201, false), "{}", first.body);
    let retry = api.post_with_key("/v1/payments", body.clone(), Some("order-1")).await;
    assert_eq!((retry.status, retry.replayed), (201, true));
    assert_eq!(retry.bytes, first.bytes);

    let mut other = body.clone();
    other["amount"] = json!(11);
    let reused = api.post_with_key("/v1/payments", other, Some("order-1")).await;
    assert_eq!(reused.status, 422);
    assert_eq!(reused.body["error"]["type"], "idempotency_error");
    assert_eq!(reused.body["error"]["code"], "idempotency_key_reused");

    // Confirm twice with a key: one payment, one debit.
    let pay = first.body["id"].as_str().unwrap();
    let c1 = api.post_with_key(&format!("/v1/payments/{pay}/confirm"), json!({}), Some("confirm-1")).await;
    let c2 = api.post_with_key(&format!("/v1/payments/{pay}/confirm"), json!({}), Some("confirm-1")).await;
    assert_eq!((c1.status, c2.status, c2.replayed), (200, 200, true));
    assert_eq!(c1.bytes, c2.bytes);
    assert_eq!(api.balance(&payer).await, balance(990, 0, 990));

    // A single transfer without an id: the replay names the same transfer.
    let t = json!({"debit_account": payer, "credit_account": payee, "amount": 5, "currency": "EUR"});
    let t1 = api.post_with_key("/v1/transfers", t.clone(), Some("tr-1")).await;
    let t2 = api.post_with_key("/v1/transfers", t.clone(), Some("tr-1")).await;
    assert_eq!((t1.status, t2.status, t1.replayed, t2.replayed), (201, 201, false, true), "{}", t1.body);
    assert_eq!(t1.bytes, t2.bytes);
    assert_eq!(api.balance(&payer).await, balance(985, 0, 985));

    // Accounts with metadata replay whole.
    let a = json!({"currency": "EUR", "reference": "NL91ABNA0417164300", "metadata": {"owner": "ada"}});
    let a1 = api.post_with_key("/v1/accounts", a.clone(), Some("acct-1")).await;
    let a2 = api.post_with_key("/v1/accounts", a.clone(), Some("acct-1")).await;
    assert_eq!((a1.status, a2.status, a2.replayed), (201, 201, true));
    assert_eq!(a1.bytes, a2.bytes);
    assert_eq!(a1.body["metadata"], json!({"owner": "ada"}));
    assert_eq!(a1.body["reference"], "NL91ABNA0417164300");
    let dup = api.post("/v1/accounts", a).await;
    assert_eq!(error_of(&dup), (409, "reference_already_exists", Some("reference")));

    let bad_key = api.post_with_key("/v1/accounts", json!({"currency": "EUR"}), Some("")).await;
    assert_eq!(error_of(&bad_key), (400, "parameter_invalid", Some("Idempotency-Key")));
}

#[tokio::test]
async fn bad_inputs_name_the_field_and_change_nothing() {
    let (api, _dir) = common::boot(KEY, |_| {}).await;
    let (funding, payer, payee) = api.parties(1000).await;
    let transfer = |amount: Value, currency: &str| {
        json!({"debit_account": funding, "credit_account": payer, "amount": amount, "currency": currency}).to_string()
    };
    let payment = |amount: Value| {
        json!({"payer_account": payer, "payee_account": payee, "amount": amount, "currency": "EUR"}).to_string()
    };
    let cases: Vec<(&str, String, u16, &str, Option<&str>)> = vec![
        ("/v1/transfers", transfer(json!(10.5), "EUR"), 400, "parameter_invalid", Some("amount")),
        ("/v1/transfers", transfer(json!(-5), "EUR"), 400, "parameter_invalid", Some("amount")),
        ("/v1/transfers", transfer(json!(0), "EUR"), 400, "parameter_invalid", Some("amount")),
        ("/v1/transfers", transfer(json!("ten"), "EUR"), 400, "parameter_invalid", Some("amount")),
        ("/v1/transfers", transfer(json!(1e30), "EUR"), 400, "parameter_invalid", Some("amount")),
        ("/v1/transfers", transfer(json!(1u64 << 63), "EUR"), 400, "parameter_invalid", Some("amount")),
        ("/v1/transfers", transfer(json!(5), "EURO"), 400, "invalid_currency", Some("currency")),
        ("/v1/transfers", transfer(json!(5), "eur"), 400, "invalid_currency", Some("currency")),
        (
            "/v1/transfers",
            json!({"debit_account": NO_SUCH_ACCOUNT, "credit_account": payer, "amount": 5, "currency": "EUR"}).to_string(),
            422,
            "account_not_found",
            None,
        ),
        (
            "/v1/transfers",
            json!({"debit_account": "pay_00000000000000000000000000", "credit_account": payer, "amount": 5, "currency": "EUR"}).to_string(),
            400,
            "parameter_invalid",
            Some("debit_account"),
        ),
        (
            "/v1/transfers",
            json!({"transfers": [{"debit_account": funding, "credit_account": payer, "amount": 1, "currency": "EUR"},
                                 {"debit_account": funding, "credit_account": payer, "amount": 1.5, "currency": "EUR"}]}).to_string(),
            400,
            "parameter_invalid",
            Some("transfers[1].amount"),
        ),
        (
            "/v1/transfers",
            json!({"transfers": [{"debit_account": funding, "credit_account": payer, "amount": 1, "currency": "eur"}]}).to_string(),
            400,
            "invalid_currency",
            Some("transfers[0].currency"),
        ),
        (
            "/v1/transfers",
            json!({"post_pending_id": "tr_00000000000000000000000000", "debit_account": funding}).to_string(),
            400,
            "parameter_invalid",
            Some("debit_account"),
        ),
        ("/v1/transfers", json!({"credit_account": payer, "amount": 1, "currency": "EUR"}).to_string(), 400, "parameter_missing", Some("debit_account")),
        ("/v1/transfers", r#"{"amount": 5,"#.to_owned(), 400, "invalid_json", None),
        ("/v1/transfers", r#"{"transfers": []}"#.to_owned(), 400, "parameter_invalid", Some("transfers")),
        ("/v1/payments", payment(json!(10.5)), 400, "parameter_invalid", Some("amount")),
        ("/v1/payments", payment(json!(-1)), 400, "parameter_invalid", Some("amount")),
        ("/v1/payments", payment(json!("10")), 400, "parameter_invalid", Some("amount")),
        ("/v1/payments", payment(json!(1e30)), 400, "parameter_invalid", Some("amount")),
        ("/v1/payments", r#"{"payer_account": }"#.to_owned(), 400, "invalid_json", None),
        ("/v1/payments", r#"{"payer_account": 1"#.to_owned(), 400, "parameter_invalid", Some("payer_account")),
        (
            "/v1/payments",
            json!({"payer_account": NO_SUCH_ACCOUNT, "payee_account": payee, "amount": 5, "currency": "EUR"}).to_string(),
            400,
            "account_not_found",
            Some("payer_account"),
        ),
        (
            "/v1/payments",
            json!({"payer_account": payer, "payee_account": payee, "amount": 5, "currency": "USD"}).to_string(),
            400,
            "currency_mismatch",
            Some("payer_account"),
        ),
        (
            "/v1/payments",
            json!({"payer_account": payer, "payee_account": payer, "amount": 5, "currency": "EUR"}).to_string(),
            400,
            "same_account",
            Some("payee_account"),
        ),
        (
            "/v1/payments",
            json!({"payer_account": payer, "payee_account": payee, "amount": 5, "currency": "EUR", "tip": 1}).to_string(),
            400,
            "unknown_parameter",
            Some("tip"),
        ),
        (
            "/v1/payments",
            json!({"payer_account": payer, "payee_account": payee, "amount": 5, "currency": "EUR", "capture_method": "later"}).to_string(),
            400,
            "parameter_invalid",
            Some("capture_method"),
        ),
        (
            "/v1/payments",
            json!({"payer_account": payer, "payee_account": payee, "amount": 5, "currency": "EUR", "expires_in_seconds": 31622401}).to_string(),
            400,
            "parameter_invalid",
            Some("expires_in_seconds"),
        ),
        ("/v1/accounts", json!({"currency": "EUR", "overdraft_limit": -1}).to_string(), 400, "parameter_invalid", Some("overdraft_limit")),
        ("/v1/accounts", json!({"currency": "XXX"}).to_string(), 400, "invalid_currency", Some("currency")),
        ("/v1/accounts", json!({"currency": "EUR", "reference": ""}).to_string(), 400, "parameter_invalid", Some("reference")),
        ("/v1/accounts", json!({"currency": "EUR", "metadata": {"a": 1}}).to_string(), 400, "parameter_invalid", Some("metadata.a")),
        ("/v1/payments/pay_00000000000000000000000000/confirm", "{}".to_owned(), 404, "resource_missing", Some("id")),
        ("/v1/payments/nonsense/confirm", "{}".to_owned(), 404, "resource_missing", Some("id")),
        ("/v1/payments/nonsense/confirm", r#"{"x":1}"#.to_owned(), 404, "resource_missing", Some("id")),
    ];
    for (path, body, status, code, param) in &cases {
        let a = api.post_raw(path, body.clone().into_bytes()).await;
        assert_eq!(error_of(&a), (*status, *code, *param), "{path} {body}: {}", a.body);
        assert_eq!(a.body["error"]["type"], "invalid_request_error");
        assert!(!a.body["error"]["message"].as_str().unwrap().is_empty());
    }

    let mut huge = br#"{"debit_account":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'a', 5 * 1024 * 1024));
    huge.extend(br#""}"#);
    let a = api.post_raw("/v1/transfers", huge).await;
    assert_eq!(error_of(&a), (413, "body_too_large", None));

    let form = api
        .send(
            api.http
                .post(format!("{}/v1/transfers", api.base))
                .bearer_auth(&api.key)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("amount=5"),
        )
        .await;
    assert_eq!(error_of(&form), (400, "invalid_json", None));

    for path in ["/v1/accounts/acct_nope", &format!("/v1/accounts/{NO_SUCH_ACCOUNT}"), "/v1/payments/pay_x"] {
        let a = api.get(path).await;
        assert_eq!(error_of(&a), (404, "resource_missing", Some("id")), "{path}");
    }
    let a = api.get(&format!("/v1/accounts/{payer}/transfers?limit=1000")).await;
    assert_eq!(error_of(&a), (400, "parameter_invalid", Some("limit")));
    let a = api.get("/v1/nothing").await;
    assert_eq!(error_of(&a), (404, "route_not_found", None));
    let a = api.send(api.http.delete(format!("{}/v1/accounts", api.base)).bearer_auth(&api.key)).await;
    assert_eq!(error_of(&a), (405, "method_not_allowed", None));

    assert_eq!(api.balance(&payer).await, balance(1000, 0, 1000));
    assert_eq!(api.balance(&payee).await, balance(0, 0, 0));
    assert_eq!(api.balance(&funding).await["posted"], -1000);
}

#[tokio::test]
async fn keys_are_checked() {
    let (api, _dir) = common::boot(KEY, |_| {}).await;
    let wrong = api.with_key("sk_wrong");
    let a = wrong.post("/v1/accounts", json!({"currency": "EUR"})).await;
    assert_eq!(error_of(&a), (401, "invalid_api_key", None));
    assert_eq!(a.body["error"]["type"], "authentication_error");
    let a = api.send(api.http.get(format!("{}/v1/accounts/{NO_SUCH_ACCOUNT}", api.base))).await;
    assert_eq!(error_of(&a), (401, "invalid_api_key", None));
    let a = api.send(api.http.get(format!("{}/healthz", api.base))).await;
    assert_eq!((a.status, a.body), (200, json!({"status": "ok", "role": "all"})));
}

#[tokio::test]
async fn unconfirmed_and_uncaptured_payments_expire() {
    let (api, _dir) = common::boot(KEY, |_| {}).await;
    let (_, payer, payee) = api.parties(1000).await;
    let held = api.payment(&payer, &payee, 100, json!({"capture_method": "manual", "expires_in_seconds": 1})).await;
    let open = api.payment(&payer, &payee, 100, json!({"expires_in_seconds": 1})).await;
    let h = api.post(&format!("/v1/payments/{held}/confirm"), json!({})).await;
    assert_eq!(h.body["status"], "requires_capture", "{}", h.body);
    assert_eq!(api.balance(&payer).await, balance(1000, 100, 900));

    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(api.get(&format!("/v1/payments/{held}")).await.body["status"], "expired");
    assert_eq!(api.get(&format!("/v1/payments/{open}")).await.body["status"], "expired");
    assert_eq!(api.balance(&payer).await, balance(1000, 0, 1000));
    assert_eq!(api.balance(&payee).await, balance(0, 0, 0));
    let late = api.post(&format!("/v1/payments/{open}/confirm"), json!({})).await;
    assert_eq!(error_of(&late), (409, "payment_unexpected_state", None));
}

async fn tenants_cannot_see_each_other(backend: Backend) {
    let Some((api, data)) = common::boot_on(backend, KEY, |_| {}).await else { return };
    let (_, payer, payee) = api.parties(1000).await;
    let pay = api.payment(&payer, &payee, 10, json!({})).await;

    common::blocking(&data, |store| {
        paycore_server::insert_key(store, &Secret::new("sk_other_tenant".to_owned())).unwrap();
    })
    .await;
    let other = api.with_key("sk_other_tenant");
    let other_account = other.account(json!("unlimited")).await;

    assert_eq!(error_of(&other.get(&format!("/v1/accounts/{payer}")).await), (404, "resource_missing", Some("id")));
    assert_eq!(error_of(&other.get(&format!("/v1/payments/{pay}")).await), (404, "resource_missing", Some("id")));
    assert_eq!(
        error_of(&other.get(&format!("/v1/accounts/{payer}/transfers")).await),
        (404, "resource_missing", Some("id"))
    );
    let confirm = other.post(&format!("/v1/payments/{pay}/confirm"), json!({})).await;
    assert_eq!(error_of(&confirm), (404, "resource_missing", Some("id")));
    let steal = other.transfer(&payer, &other_account, 10).await;
    assert_eq!(error_of(&steal), (422, "account_not_found", None));
    let pay_from = other
        .post(
            "/v1/payments",
            json!({"payer_account": payer, "payee_account": other_account, "amount": 10, "currency": "EUR"}),
        )
        .await;
    assert_eq!(error_of(&pay_from), (400, "account_not_found", Some("payer_account")));

    assert_eq!(api.balance(&payer).await, balance(1000, 0, 1000));
    assert_eq!(api.get(&format!("/v1/payments/{pay}")).await.body["status"], "requires_confirmation");
}

async fn bulk_transfers_and_linked_chains(backend: Backend) {
    let Some((api, _data)) = common::boot_on(backend, KEY, |_| {}).await else { return };
    let (funding, payer, payee) = api.parties(100).await;
    let item = |d: &str, c: &str, amount: u64, linked: bool| json!({"debit_account": d, "credit_account": c, "amount": amount, "currency": "EUR", "linked": linked});
    let bulk = api
        .post(
            "/v1/transfers",
            json!({"transfers": [
                item(&funding, &payer, 50, true),
                item(&payer, &payee, 1000, false),
                item(&payer, &payee, 10, false),
            ]}),
        )
        .await;
    assert_eq!(bulk.status, 200, "{}", bulk.body);
    let results: Vec<&str> =
        bulk.body["data"].as_array().unwrap().iter().map(|r| r["result"].as_str().unwrap()).collect();
    assert_eq!(results, ["linked_event_failed", "insufficient_funds", "ok"]);
    assert_eq!(bulk.body["data"][2]["index"], 2);
    assert!(bulk.body["data"][2]["id"].as_str().unwrap().starts_with("tr_"));
    assert_eq!(api.balance(&payer).await, balance(90, 0, 90));
    assert_eq!(api.balance(&payee).await, balance(10, 0, 10));
    assert_eq!(api.balance(&funding).await["posted"], -100);
}

/// A bulk body of 8 189 transfers (over 1 MB, which the server parses in two halves at once):
/// every item applied and answered in order, a retry answered `exists` item by item, and a
/// body whose bad item is in its second half refused as a whole, naming that item.
#[tokio::test]
async fn a_full_bulk_request_applies_every_item_and_a_bad_item_anywhere_moves_nothing() {
    let (api, _dir) = common::boot(KEY, |_| {}).await;
    let (funding, payer, _) = api.parties(0).await;
    let id = |i: usize| format!("tr_01{i:024}");
    let body = |bad: Option<(usize, Value)>| {
        let items: Vec<Value> = (0..8189)
            .map(|i| {
                let amount = match &bad {
                    Some((at, amount)) if *at == i => amount.clone(),
                    _ => json!(1 + i % 7),
                };
                json!({"id": id(i), "debit_account": funding, "credit_account": payer, "amount": amount, "currency": "EUR"})
            })
            .collect();
        json!({ "transfers": items })
    };
    let total: i64 = (0..8189).map(|i| 1 + (i % 7) as i64).sum();
    for (at, amount) in [(6000, json!(1.5)), (8188, json!("ten")), (4100, json!(-1))] {
        let refused = api.post("/v1/transfers", body(Some((at, amount)))).await;
        let param = format!("transfers[{at}].amount");
        assert_eq!(error_of(&refused), (400, "parameter_invalid", Some(param.as_str())), "{}", refused.body);
    }
    assert_eq!(api.balance(&payer).await, balance(0, 0, 0));

    let applied = api.post("/v1/transfers", body(None)).await;
    assert_eq!(applied.status, 200, "{}", applied.body);
    let data = applied.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 8189);
    for (i, result) in data.iter().enumerate() {
        assert_eq!(result, &json!({"index": i, "id": id(i), "result": "ok"}));
    }
    assert_eq!(api.balance(&payer).await, balance(total, 0, total));

    let again = api.post("/v1/transfers", body(None)).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert!(again.body["data"].as_array().unwrap().iter().all(|r| r["result"] == "exists"));
    assert_eq!(api.balance(&payer).await, balance(total, 0, total));
}

async fn holds_post_and_void_with_client_ids(backend: Backend) {
    let Some((api, _data)) = common::boot_on(backend, KEY, |_| {}).await else { return };
    let (_, payer, payee) = api.parties(100).await;
    let hold = "tr_01aaaaaaaaaaaaaaaaaaaaaaaa";
    let body = json!({"id": hold, "debit_account": payer, "credit_account": payee, "amount": 40, "currency": "EUR", "pending": true, "timeout_seconds": 3600});
    let h = api.post("/v1/transfers", body.clone()).await;
    assert_eq!(
        (h.status, h.body["result"].as_str(), h.body["kind"].as_str()),
        (201, Some("ok"), Some("pending")),
        "{}",
        h.body
    );
    assert!(h.body["expires_at"].as_str().unwrap().ends_with('Z'));
    let again = api.post("/v1/transfers", body).await;
    assert_eq!((again.status, again.body["result"].as_str()), (200, Some("exists")));
    assert_eq!(api.balance(&payer).await, balance(100, 40, 60));

    let post = api.post("/v1/transfers", json!({"post_pending_id": hold, "amount": 25})).await;
    assert_eq!(
        (post.status, post.body["kind"].as_str(), post.body["amount"].as_u64()),
        (201, Some("post_pending"), Some(25)),
        "{}",
        post.body
    );
    assert_eq!(post.body["pending_id"], hold);
    assert_eq!(post.body["debit_account"], payer.as_str());
    assert_eq!(api.balance(&payer).await, balance(75, 0, 75));
    let void = api.post("/v1/transfers", json!({"void_pending_id": hold})).await;
    assert_eq!(error_of(&void), (422, "pending_already_posted", Some("void_pending_id")));
    let missing = api.post("/v1/transfers", json!({"void_pending_id": "tr_01bbbbbbbbbbbbbbbbbbbbbbbb"})).await;
    assert_eq!(error_of(&missing), (422, "pending_not_found", Some("void_pending_id")));

    // Pagination over the payer's three transfers, newest first.
    let page = api.get(&format!("/v1/accounts/{payer}/transfers?limit=2")).await;
    assert_eq!(page.body["has_more"], true);
    let cursor = page.body["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(page.body["data"][1]["id"], cursor.as_str());
    let rest = api.get(&format!("/v1/accounts/{payer}/transfers?limit=2&starting_after={cursor}")).await;
    assert_eq!(rest.body["data"].as_array().unwrap().len(), 1, "{}", rest.body);
    assert_eq!(rest.body["has_more"], false);
    assert!(rest.body["next_cursor"].is_null());
}

#[tokio::test]
async fn openapi_and_metrics() {
    let (api, _dir) = common::boot(KEY, |_| {}).await;
    api.parties(10).await;
    let doc = api.send(api.http.get(format!("{}/openapi.json", api.base))).await;
    assert_eq!(doc.status, 200);
    let paths = doc.body["paths"].as_object().unwrap();
    for path in [
        "/v1/accounts",
        "/v1/accounts/{id}",
        "/v1/accounts/{id}/transfers",
        "/v1/transfers",
        "/v1/payments",
        "/v1/payments/{id}",
        "/v1/payments/{id}/confirm",
        "/v1/payments/{id}/capture",
        "/v1/payments/{id}/cancel",
        "/v1/payments/{id}/refunds",
    ] {
        assert!(paths.contains_key(path), "{path} missing from /openapi.json");
    }
    assert!(doc.body["components"]["schemas"]["ErrorBody"].is_object());
    assert!(doc.body["components"]["schemas"]["PaymentJson"].is_object());

    let metrics = api.http.get(format!("{}/metrics", api.base)).send().await.unwrap().text().await.unwrap();
    for name in [
        "paycore_engine_commit_seconds",
        "paycore_engine_batch_events",
        "paycore_engine_queue_depth",
        "paycore_http_request_duration_seconds",
        "paycore_store_history_behind_seconds{partition=\"0\"}",
        "paycore_store_balances_behind_seconds{partition=\"0\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert!(metrics.contains(r#"route="/v1/accounts""#), "{metrics}");
}

/// A bulk body that ends (the client closes its sending side) before its `Content-Length` is
/// refused with a clear 400 `invalid_json`, and nothing of it is applied.
#[tokio::test]
async fn a_body_shorter_than_its_content_length_is_refused_and_moves_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (api, _dir) = common::boot(KEY, |_| {}).await;
    let (funding, payer, _) = api.parties(0).await;
    let item = json!({"debit_account": funding, "credit_account": payer, "amount": 1, "currency": "EUR"});
    let body = json!({ "transfers": vec![item; 4000] }).to_string().into_bytes();
    let address = api.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /v1/transfers HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        api.key,
        body.len() + 100
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains(r#""code":"invalid_json""#), "{answer}");
    assert_eq!(api.balance(&payer).await, balance(0, 0, 0));
}
