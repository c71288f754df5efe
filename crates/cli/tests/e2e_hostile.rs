//! Malformed and hostile requests against the real `paycore` binary: each one is a 4xx with the
//! one error shape and the offending field named, nothing changes in the ledger, and the server
//! keeps running.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{assert_error_shape, Resp, Server};
use serde_json::{json, Value};

/// One hostile request and what it must get back.
struct Case {
    name: &'static str,
    path: String,
    body: Body,
    idempotency_key: Option<String>,
    status: u16,
    /// The `error.param` expected (`None`: must be null).
    param: Option<&'static str>,
    /// The `error.code` expected, where the contract fixes it.
    code: Option<&'static str>,
}

enum Body {
    Json(Value),
    Raw(Vec<u8>, Option<&'static str>),
}

/// Fixed accounts used by every case.
struct Fixture {
    payer: String,
    payee: String,
    usd: String,
}

impl Fixture {
    fn payment(&self) -> Value {
        json!({"payer_account": self.payer, "payee_account": self.payee, "amount": 100, "currency": "EUR"})
    }

    /// A valid payment body with `field` replaced (or removed, for `None`).
    fn payment_with(&self, field: &str, value: Option<Value>) -> Value {
        let mut body = self.payment();
        match value {
            Some(v) => body[field] = v,
            None => {
                body.as_object_mut().expect("object").remove(field);
            }
        }
        body
    }

    /// The same body, as raw JSON text with `amount` replaced by `amount_text` verbatim (for
    /// numbers serde_json cannot represent).
    fn payment_raw_amount(&self, amount_text: &str) -> Vec<u8> {
        format!(
            r#"{{"payer_account":"{}","payee_account":"{}","amount":{amount_text},"currency":"EUR"}}"#,
            self.payer, self.payee
        )
        .into_bytes()
    }
}

fn case(name: &'static str, path: &str, body: Value, status: u16, param: Option<&'static str>) -> Case {
    Case { name, path: path.to_owned(), body: Body::Json(body), idempotency_key: None, status, param, code: None }
}

fn raw(
    name: &'static str,
    path: &str,
    bytes: Vec<u8>,
    ct: Option<&'static str>,
    status: u16,
    param: Option<&'static str>,
) -> Case {
    Case { name, path: path.to_owned(), body: Body::Raw(bytes, ct), idempotency_key: None, status, param, code: None }
}

impl Case {
    fn code(mut self, code: &'static str) -> Case {
        self.code = Some(code);
        self
    }
}

fn cases(f: &Fixture) -> Vec<Case> {
    let p = "/v1/payments";
    let json_ct = Some("application/json");
    let mut deep = vec![b'['; 100_000];
    deep.extend(vec![b']'; 100_000]);
    let mut deep_transfers = br#"{"transfers":"#.to_vec();
    deep_transfers.extend(vec![b'['; 100_000]);
    deep_transfers.extend(vec![b']'; 100_000]);
    deep_transfers.push(b'}');
    let mut deep_object = Vec::new();
    for _ in 0..100_000 {
        deep_object.extend_from_slice(br#"{"a":"#);
    }
    deep_object.extend_from_slice(b"1");
    deep_object.extend(vec![b'}'; 100_000]);
    let mut invalid_utf8 = f.payment().to_string().into_bytes();
    let desc = br#","description":"caf\xff\xfe"}"#;
    invalid_utf8.pop();
    invalid_utf8.extend_from_slice(desc);
    let huge = {
        let mut body = br#"{"payer_account":"x","description":""#.to_vec();
        body.extend(vec![b'a'; 10 * 1024 * 1024]);
        body.extend_from_slice(br#""}"#);
        body
    };
    let mut long_key = case("Idempotency-Key of 300 characters", p, f.payment(), 400, Some("Idempotency-Key"));
    long_key.idempotency_key = Some("k".repeat(300));

    vec![
        // Wrong types for amount.
        case("amount as a string", p, f.payment_with("amount", Some(json!("10"))), 400, Some("amount")),
        case("amount as a boolean", p, f.payment_with("amount", Some(json!(true))), 400, Some("amount")),
        case("amount null", p, f.payment_with("amount", Some(Value::Null)), 400, Some("amount")),
        case("amount as an object", p, f.payment_with("amount", Some(json!({"value": 10}))), 400, Some("amount")),
        case("amount missing", p, f.payment_with("amount", None), 400, Some("amount")),
        // Out of range or inexact amounts.
        case("negative amount", p, f.payment_with("amount", Some(json!(-10))), 400, Some("amount")),
        case("zero amount", p, f.payment_with("amount", Some(json!(0))), 400, Some("amount")),
        case("fractional amount", p, f.payment_with("amount", Some(json!(10.5))), 400, Some("amount")),
        raw("amount 1e3", p, f.payment_raw_amount("1e3"), json_ct, 400, Some("amount")),
        raw("amount 10.0", p, f.payment_raw_amount("10.0"), json_ct, 400, Some("amount")),
        raw("amount 1e30", p, f.payment_raw_amount("1e30"), json_ct, 400, Some("amount")),
        raw("amount 2^64", p, f.payment_raw_amount("18446744073709551616"), json_ct, 400, Some("amount")),
        raw("amount u64::MAX", p, f.payment_raw_amount("18446744073709551615"), json_ct, 400, Some("amount")),
        raw("amount i64::MAX + 1", p, f.payment_raw_amount("9223372036854775808"), json_ct, 400, Some("amount")),
        raw("amount with 400 digits", p, f.payment_raw_amount(&"9".repeat(400)), json_ct, 400, Some("amount")),
        // Currencies.
        case("unknown currency", p, f.payment_with("currency", Some(json!("XYZ"))), 400, Some("currency")),
        case("lower-case currency", p, f.payment_with("currency", Some(json!("eur"))), 400, Some("currency")),
        case("currency as a number", p, f.payment_with("currency", Some(json!(978))), 400, Some("currency")),
        case("missing currency", p, f.payment_with("currency", None), 400, Some("currency")),
        case("currency of another account", p, f.payment_with("currency", Some(json!("USD"))), 400, Some("payer_account"))
            .code("currency_mismatch"),
        case("payee in another currency", p, f.payment_with("payee_account", Some(json!(f.usd))), 400, Some("payee_account"))
            .code("currency_mismatch"),
        // Accounts.
        case(
            "unknown payer (well formed)",
            p,
            f.payment_with("payer_account", Some(json!("acct_00000000000000000000000001"))),
            400,
            Some("payer_account"),
        )
        .code("account_not_found"),
        case(
            "unknown payee (well formed)",
            p,
            f.payment_with("payee_account", Some(json!("acct_00000000000000000000000001"))),
            400,
            Some("payee_account"),
        )
        .code("account_not_found"),
        case("malformed payer id", p, f.payment_with("payer_account", Some(json!("acct_!!"))), 400, Some("payer_account")),
        case("payment id as payer", p, f.payment_with("payer_account", Some(json!("pay_00000000000000000000000001"))), 400, Some("payer_account")),
        // (A payment without a payer is scan to pay; one without a payee is nothing.)
        case("payee missing", p, f.payment_with("payee_account", None), 400, Some("payee_account")),
        case("merchant name too long", p, f.payment_with("merchant", Some(json!({"name": "x".repeat(26), "city": "Paris", "country": "FR", "category_code": "5812"}))), 400, Some("merchant.name")),
        case("scan of a changed code", "/v1/payments/scan", json!({"payload": "00020101021226480010io.paycore6304FFFF", "payer_account": f.payer}), 400, Some("payload"))
            .code("qr_crc_mismatch"),
        case("same payer and payee", p, f.payment_with("payee_account", Some(json!(f.payer))), 400, Some("payee_account"))
            .code("same_account"),
        // Other fields.
        case("unknown field", p, f.payment_with("amount_in_dollars", Some(json!(1))), 400, Some("amount_in_dollars")),
        case("unknown capture method", p, f.payment_with("capture_method", Some(json!("later"))), 400, Some("capture_method")),
        case("zero expiry", p, f.payment_with("expires_in_seconds", Some(json!(0))), 400, Some("expires_in_seconds")),
        case("negative expiry", p, f.payment_with("expires_in_seconds", Some(json!(-1))), 400, Some("expires_in_seconds")),
        case("description as a number", p, f.payment_with("description", Some(json!(5))), 400, Some("description")),
        case("description of 1001 characters", p, f.payment_with("description", Some(json!("é".repeat(1001)))), 400, Some("description")),
        case("expiry beyond a year", p, f.payment_with("expires_in_seconds", Some(json!(31_622_401))), 400, Some("expires_in_seconds")),
        case("body is an array", p, json!([f.payment()]), 400, None),
        case("body is a number", p, json!(42), 400, None),
        // serde accepts a sequence for a struct; a body must be an object.
        case(
            "payment as a positional array",
            p,
            json!([f.payer, f.payee, 100, "EUR", null, null, null]),
            400,
            None,
        ),
        // Not JSON, or not JSON as promised.
        raw("truncated JSON", p, b"{".to_vec(), json_ct, 400, None),
        raw("not JSON at all", p, b"amount=10&currency=EUR".to_vec(), json_ct, 400, None),
        raw("empty body", p, Vec::new(), json_ct, 400, Some("payee_account")).code("parameter_missing"),
        raw("trailing garbage", p, [f.payment().to_string().as_bytes(), b"}}"].concat(), json_ct, 400, None),
        raw("duplicate amount field", p, f.payment_raw_amount("1,\"amount\":2"), json_ct, 400, Some("amount")),
        raw("wrong content type", p, f.payment().to_string().into_bytes(), Some("text/plain"), 400, None),
        raw("form content type", p, b"amount=10".to_vec(), Some("application/x-www-form-urlencoded"), 400, None),
        raw("10 MiB body", p, huge, json_ct, 413, None),
        raw("100 000 nested arrays", p, deep, json_ct, 400, None),
        raw("100 000 nested objects", p, deep_object, json_ct, 400, Some("a")).code("unknown_parameter"),
        raw("100 000 nested arrays in a bulk transfer", "/v1/transfers", deep_transfers, json_ct, 400, None),
        raw("invalid UTF-8", p, invalid_utf8, json_ct, 400, None),
        long_key,
        // Other endpoints.
        case("account: unknown currency", "/v1/accounts", json!({"currency": "XYZ"}), 400, Some("currency")),
        case("account: negative overdraft", "/v1/accounts", json!({"currency": "EUR", "overdraft_limit": -1}), 400, Some("overdraft_limit")),
        case("account: overdraft as text", "/v1/accounts", json!({"currency": "EUR", "overdraft_limit": "lots"}), 400, Some("overdraft_limit")),
        case("account: overdraft 1e30", "/v1/accounts", json!({"currency": "EUR", "overdraft_limit": 1e30}), 400, Some("overdraft_limit")),
        case(
            "transfer: amount as a string",
            "/v1/transfers",
            json!({"debit_account": f.payer, "credit_account": f.payee, "amount": "10", "currency": "EUR"}),
            400,
            Some("amount"),
        ),
        case(
            "transfer: negative amount",
            "/v1/transfers",
            json!({"debit_account": f.payer, "credit_account": f.payee, "amount": -10, "currency": "EUR"}),
            400,
            Some("amount"),
        ),
        case(
            "bulk transfer: bad amount in item 1",
            "/v1/transfers",
            json!({"transfers": [
                {"debit_account": f.payer, "credit_account": f.payee, "amount": 1, "currency": "EUR"},
                {"debit_account": f.payer, "credit_account": f.payee, "amount": 1.5, "currency": "EUR"},
            ]}),
            400,
            Some("transfers[1].amount"),
        ),
        case("bulk transfer: empty", "/v1/transfers", json!({"transfers": []}), 400, Some("transfers")),
        case(
            "transfer: more than the payer has",
            "/v1/transfers",
            json!({"debit_account": f.payer, "credit_account": f.payee, "amount": 1_001, "currency": "EUR"}),
            422,
            None,
        )
        .code("insufficient_funds"),
        case(
            "transfer: unknown debit account",
            "/v1/transfers",
            json!({"debit_account": "acct_00000000000000000000000001", "credit_account": f.payee, "amount": 1, "currency": "EUR"}),
            422,
            None,
        )
        .code("account_not_found"),
        case("confirm: unknown payment", "/v1/payments/pay_00000000000000000000000001/confirm", json!({}), 404, Some("id")),
        case("confirm: malformed payment id", "/v1/payments/pay_!!/confirm", json!({}), 404, Some("id")),
        case("capture: unknown payment", "/v1/payments/pay_00000000000000000000000001/capture", json!({}), 404, Some("id")),
        case("refund: unknown payment", "/v1/payments/pay_00000000000000000000000001/refunds", json!({}), 404, Some("id")),
    ]
}

async fn send(server: &Server, case: &Case) -> Resp {
    match (&case.body, &case.idempotency_key) {
        (Body::Json(body), Some(key)) => server.post_with_key(&case.path, body.clone(), key).await,
        (Body::Json(body), None) => server.post(&case.path, body.clone()).await,
        (Body::Raw(bytes, ct), _) => {
            // Each on a client of its own: a connection the server closes after a 413 stays out
            // of the shared pool. The server reads what a refused body still sends before it
            // closes (lingering close), so the client gets the answer, not a reset.
            server.with_fresh_client().raw_post(&case.path, bytes.clone(), *ct).await
        }
    }
}

/// Every hostile request gets the exact 4xx and names the field; afterwards nothing has changed
/// and the server still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_and_change_nothing() {
    let server = Server::start();
    let funding = server.funding_account("EUR").await;
    let payer = server.open_account("EUR", None).await;
    let payee = server.open_account("EUR", None).await;
    let usd = server.open_account("USD", None).await;
    server.fund(&payer, 1_000).await;
    let fixture = Fixture { payer: payer.clone(), payee: payee.clone(), usd };

    let before = [server.balance(&funding).await, server.balance(&payer).await, server.balance(&payee).await];
    let transfers_before = server.all_transfers(&payer, 100).await.len();

    let mut failures = Vec::new();
    for case in cases(&fixture) {
        let resp = send(&server, &case).await;
        let mut problems = Vec::new();
        if resp.status.as_u16() != case.status {
            problems.push(format!("status {} (expected {})", resp.status.as_u16(), case.status));
        }
        if !resp.body.get("error").is_some_and(Value::is_object) {
            problems.push("body is not the error shape".to_owned());
        } else {
            let error = &resp.body["error"];
            for field in ["type", "code", "message"] {
                if !error[field].is_string() {
                    problems.push(format!("error.{field} is not a string"));
                }
            }
            if error["param"] != json!(case.param) {
                problems.push(format!("param {} (expected {:?})", error["param"], case.param));
            }
            if let Some(code) = case.code {
                if error["code"] != json!(code) {
                    problems.push(format!("code {} (expected {code})", error["code"]));
                }
            }
        }
        if !server.healthy().await {
            failures.push(format!("{}: THE SERVER STOPPED ANSWERING /healthz", case.name));
            break;
        }
        if !problems.is_empty() {
            let mut text = resp.text();
            text.truncate(300);
            failures.push(format!("{} → {}: {}", case.name, problems.join(", "), text));
        }
    }

    // Nothing changed.
    let after = [server.balance(&funding).await, server.balance(&payer).await, server.balance(&payee).await];
    assert_eq!(before, after, "balances changed");
    assert_eq!(server.all_transfers(&payer, 100).await.len(), transfers_before, "transfers were made");
    assert!(server.healthy().await, "the server died");

    assert!(failures.is_empty(), "{} hostile cases failed:\n  {}", failures.len(), failures.join("\n  "));
}

/// Reads of things that do not exist, and of things that are not ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_404() {
    let server = Server::start();
    for path in [
        "/v1/accounts/nonsense",
        "/v1/accounts/acct_00000000000000000000000001",
        "/v1/accounts/acct_00000000000000000000000001/transfers",
        "/v1/payments/pay_00000000000000000000000001",
        "/v1/payments/nonsense",
        "/v1/no-such-route",
    ] {
        let resp = server.get(path).await;
        assert_eq!(resp.status.as_u16(), 404, "GET {path}: {}", resp.text());
        assert_error_shape(&resp);
    }
    // A method the route does not take.
    let url = server.url("/v1/payments");
    let resp = server.send(|| server.authed(server.client.delete(&url))).await.expect("DELETE");
    assert_eq!(resp.status.as_u16(), 405, "{}", resp.text());
    assert_error_shape(&resp);
    // A payment id of another kind in a payment path.
    let account = server.open_account("EUR", None).await;
    let resp = server.get(&format!("/v1/payments/{account}")).await;
    assert_eq!(resp.status.as_u16(), 404, "{}", resp.text());
    assert_error_shape(&resp);
    // A bad pagination parameter names itself.
    for query in ["limit=0", "limit=-1", "limit=abc", "limit=100000", "starting_after=nonsense"] {
        let resp = server.get(&format!("/v1/accounts/{account}/transfers?{query}")).await;
        assert_eq!(resp.status.as_u16(), 400, "{query}: {}", resp.text());
        let param = query.split('=').next().expect("param");
        assert_eq!(assert_error_shape(&resp)["param"], json!(param), "{query}: {}", resp.text());
    }
}

/// Manual-capture and refund limits: more than allowed is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_and_refund_limits() {
    let server = Server::start();
    let payer = server.open_account("EUR", None).await;
    let payee = server.open_account("EUR", None).await;
    server.fund(&payer, 1_000).await;

    let created = server.create_payment(&payer, &payee, 300, json!({"capture_method": "manual"})).await;
    let id = created.expect(201)["id"].as_str().expect("id").to_owned();
    // Capture before confirmation: wrong state.
    let early = server.post(&format!("/v1/payments/{id}/capture"), json!({})).await;
    early.expect_error(409, "payment_unexpected_state", None);
    server.post(&format!("/v1/payments/{id}/confirm"), json!({})).await.expect(200);
    for (amount, status) in [(json!(301), 400), (json!(0), 400), (json!(-1), 400), (json!("5"), 400)] {
        let resp = server.post(&format!("/v1/payments/{id}/capture"), json!({"amount": amount})).await;
        assert_eq!(resp.status.as_u16(), status, "capture {amount}: {}", resp.text());
        assert_eq!(assert_error_shape(&resp)["param"], json!("amount"), "capture {amount}: {}", resp.text());
    }
    let balance = server.balance(&payer).await;
    assert_eq!(balance["pending_debits"], json!(300), "{balance}");
    server.post(&format!("/v1/payments/{id}/capture"), json!({"amount": 200})).await.expect(200);
    for amount in [201, 0] {
        let resp = server.post(&format!("/v1/payments/{id}/refunds"), json!({"amount": amount})).await;
        assert_eq!(resp.status.as_u16(), 400, "refund {amount}: {}", resp.text());
        assert_eq!(assert_error_shape(&resp)["param"], json!("amount"), "refund {amount}: {}", resp.text());
    }
    server.post(&format!("/v1/payments/{id}/refunds"), json!({"amount": 200})).await.expect(201);
    let nothing_left = server.post(&format!("/v1/payments/{id}/refunds"), json!({"amount": 1})).await;
    assert_eq!(nothing_left.status.as_u16(), 400, "{}", nothing_left.text());
    assert_eq!(server.posted(&payer).await, 1_000);
    assert_eq!(server.posted(&payee).await, 0);
}
