//! The operator console (`/console`) over HTTP against the real service: sign-in and its
//! cookie, CSRF, scopes, tenant isolation, pages that show what the API answers, actions that
//! move money once, and batch uploads; then in a real browser (`browser`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "console/browser.rs"]
mod browser;
mod common;
#[path = "console/webdriver.rs"]
mod webdriver;

use common::{on_both_backends, Backend, Client};
use serde_json::{json, Value};
use std::time::Duration;

const ADMIN: &str = "sk_test_console_admin_0123456789abcdefghij";

on_both_backends!(
    capture_and_refund_move_the_money_once_and_only_with_the_csrf_token,
    the_batch_list_shows_what_get_v1_batches_lists_and_no_other_tenants
);

/// A console session over HTTP: its cookie and CSRF token. Redirects are not followed, so
/// that tests see them.
pub struct Console {
    pub base: String,
    pub http: reqwest::Client,
    pub cookie: String,
    pub csrf: String,
}

/// The page's answer: status, `Location` and body.
pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub body: String,
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn page(request: reqwest::RequestBuilder) -> Page {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let location = response.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
    let set_cookies = response.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    Page { status, location, set_cookies, body: response.text().await.unwrap() }
}

/// The value of the first `attribute="…"` after `marker` in `html`.
pub fn attribute_after(html: &str, marker: &str, attribute: &str) -> Option<String> {
    let rest = &html[html.find(marker)?..];
    let start = rest.find(&format!("{attribute}=\""))? + attribute.len() + 2;
    Some(rest[start..start + rest[start..].find('"')?].to_owned())
}

/// The cookie `name=value` a `Set-Cookie` list sets.
fn cookie_of(set_cookies: &[String], name: &str) -> Option<String> {
    set_cookies.iter().find(|c| c.starts_with(&format!("{name}="))).map(|c| c.split(';').next().unwrap().to_owned())
}

/// Signs in with `key` as a browser would: the form, its token cookie, the post.
async fn sign_in_answer(base: &str, key: &str) -> (Page, String) {
    let http = no_redirects();
    let form = page(http.get(format!("{base}/console/sign-in"))).await;
    assert_eq!(form.status, 200);
    let token = attribute_after(&form.body, "name=\"sign_in\"", "value").unwrap();
    let token_cookie = cookie_of(&form.set_cookies, "paycore_console_sign_in").unwrap();
    let answer = page(
        http.post(format!("{base}/console/sign-in"))
            .header("cookie", &token_cookie)
            .form(&[("key", key), ("sign_in", token.as_str())]),
    )
    .await;
    (answer, token_cookie)
}

impl Console {
    pub async fn sign_in(base: &str, key: &str) -> Console {
        let (answer, _) = sign_in_answer(base, key).await;
        assert_eq!((answer.status, answer.location.as_deref()), (303, Some("/console/accounts")), "{}", answer.body);
        let cookie = cookie_of(&answer.set_cookies, "paycore_console").unwrap();
        let mut console = Console { base: base.to_owned(), http: no_redirects(), cookie, csrf: String::new() };
        let accounts = console.get("/console/accounts").await;
        assert_eq!(accounts.status, 200, "{}", accounts.body);
        console.csrf = attribute_after(&accounts.body, "name=\"csrf-token\"", "content").unwrap();
        console
    }

    pub async fn get(&self, path: &str) -> Page {
        page(self.http.get(format!("{}{path}", self.base)).header("cookie", &self.cookie)).await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        page(self.http.post(format!("{}{path}", self.base)).header("cookie", &self.cookie).form(form)).await
    }

    /// Uploads a batch file as the page's script does.
    pub async fn upload(&self, query: &str, content_type: &str, file: &str, csrf: Option<&str>) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/console/batches?{query}", self.base))
            .header("cookie", &self.cookie)
            .header("content-type", content_type)
            .body(file.to_owned());
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The confirmation page of `action` on `payment`: its idempotency key.
    pub async fn confirmation_key(&self, payment: &str, action: &str) -> String {
        let confirm = self.get(&format!("/console/payments/{payment}/{action}")).await;
        assert_eq!(confirm.status, 200, "{}", confirm.body);
        attribute_after(&confirm.body, "name=\"idempotency_key\"", "value").unwrap()
    }
}

/// A payment of `amount` from `payer` to `payee`, manual capture, confirmed (held).
async fn held_payment(api: &Client, payer: &str, payee: &str, amount: u64) -> String {
    let pay = api.payment(payer, payee, amount, json!({"capture_method": "manual"})).await;
    let confirmed = api.post(&format!("/v1/payments/{pay}/confirm"), json!({})).await;
    assert_eq!(confirmed.body["status"], "requires_capture", "{}", confirmed.body);
    pay
}

/// A new tenant's key with `scopes`.
async fn key_for(admin: &Client, tenant: &str, scopes: &[&str]) -> String {
    let k = admin.post("/v1/api_keys", json!({"tenant": tenant, "scopes": scopes})).await;
    assert_eq!(k.status, 201, "{}", k.body);
    k.body["secret"].as_str().unwrap().to_owned()
}

async fn new_tenant(admin: &Client) -> String {
    let t = admin.post("/v1/tenants", json!({"name": "other"})).await;
    assert_eq!(t.status, 201, "{}", t.body);
    t.body["id"].as_str().unwrap().to_owned()
}

async fn posted(api: &Client, account: &str) -> i64 {
    api.balance(account).await["posted"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_the_session() {
    let (api, _data) = common::boot(ADMIN, |_| {}).await;
    let base = api.base.clone();
    // Signed out: every page sends to the sign-in form.
    let http = no_redirects();
    let away = page(http.get(format!("{base}/console/accounts"))).await;
    assert_eq!((away.status, away.location.as_deref()), (303, Some("/console/sign-in")));
    // A wrong key: 401, no session.
    let (wrong, _) = sign_in_answer(&base, "sk_not_a_key").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("Invalid API key provided."), "{}", wrong.body);
    assert!(cookie_of(&wrong.set_cookies, "paycore_console").is_none());
    // A sign-in posted without the form's own token (from another site): 403.
    let forged = page(http.post(format!("{base}/console/sign-in")).form(&[("key", ADMIN), ("sign_in", "x")])).await;
    assert_eq!(forged.status, 403);
    assert!(cookie_of(&forged.set_cookies, "paycore_console").is_none());
    // The right key: a session cookie that scripts cannot read and other sites cannot send.
    let (answer, _) = sign_in_answer(&base, ADMIN).await;
    assert_eq!(answer.status, 303);
    let set = answer.set_cookies.iter().find(|c| c.starts_with("paycore_console=")).unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age=28800"] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains("Secure"), "no TLS, no proxy saying so: {set}");
    assert!(!set.contains(ADMIN), "the cookie carries the key: {set}");
    // Behind a TLS proxy the cookie is Secure.
    let form = page(http.get(format!("{base}/console/sign-in")).header("x-forwarded-proto", "https")).await;
    assert!(form.set_cookies.iter().all(|c| c.ends_with("; Secure")), "{:?}", form.set_cookies);
    // The key is never in a page.
    let console = Console::sign_in(&base, ADMIN).await;
    for path in ["/console/accounts", "/console/payments", "/console/batches", "/console/health"] {
        let shown = console.get(path).await;
        assert_eq!(shown.status, 200, "{path}");
        assert!(!shown.body.contains(ADMIN), "{path} shows the key");
        assert!(shown.body.contains("name=\"csrf-token\""), "{path}");
    }
    // Sign-out needs the token, then ends the session: the old cookie opens nothing.
    assert_eq!(console.post("/console/sign-out", &[("csrf", "wrong")]).await.status, 403);
    assert_eq!(console.get("/console/accounts").await.status, 200);
    let out = console.post("/console/sign-out", &[("csrf", &console.csrf)]).await;
    assert_eq!((out.status, out.location.as_deref()), (303, Some("/console/sign-in")));
    assert!(out.set_cookies.iter().any(|c| c.starts_with("paycore_console=;") && c.contains("Max-Age=0")));
    let after = console.get("/console/accounts").await;
    assert_eq!((after.status, after.location.as_deref()), (303, Some("/console/sign-in")));
    // A revoked key's session ends too.
    let tenant = new_tenant(&api).await;
    let key = key_for(&api, &tenant, &["read"]).await;
    let session = Console::sign_in(&base, &key).await;
    let k = api.post("/v1/api_keys", json!({"tenant": tenant, "scopes": ["read"]})).await;
    let (id, secret) = (k.body["id"].as_str().unwrap().to_owned(), k.body["secret"].as_str().unwrap().to_owned());
    let revoked = Console::sign_in(&base, &secret).await;
    assert_eq!(api.delete(&format!("/v1/api_keys/{id}")).await.status, 200);
    assert_eq!(revoked.get("/console/accounts").await.status, 303);
    assert_eq!(session.get("/console/accounts").await.status, 200, "another key's session goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_show_the_figures_the_api_returns() {
    let (api, _data) = common::boot(ADMIN, |_| {}).await;
    let funding = api.account(json!("unlimited")).await;
    let a = api.post("/v1/accounts", json!({"currency": "EUR", "reference": "DE89370400440532013000"})).await;
    let payer = a.body["id"].as_str().unwrap().to_owned();
    let payee = api.account(json!(0)).await;
    assert_eq!(api.transfer(&funding, &payer, 123_756).await.body["result"], "ok");
    let pay = held_payment(&api, &payer, &payee, 300).await;
    let console = Console::sign_in(&api.base, ADMIN).await;
    // Found by reference and by id.
    for q in ["DE89370400440532013000", payer.as_str()] {
        let found = console.get(&format!("/console/accounts?q={q}")).await;
        assert_eq!(found.location, Some(format!("/console/accounts/{payer}")), "{q}");
    }
    let missing = console.get("/console/accounts?q=NOPE").await;
    assert_eq!(missing.status, 404);
    // The balances as the API has them: 1 237,56 € posted, 3,00 € held, 1 234,56 € available.
    let balance = api.balance(&payer).await;
    assert_eq!((balance["posted"].as_i64(), balance["pending_debits"].as_u64()), (Some(123_756), Some(300)));
    assert_eq!(balance["available"].as_i64(), Some(123_456));
    let shown = console.get(&format!("/console/accounts/{payer}")).await;
    assert_eq!(shown.status, 200);
    let cell = |id: &str| {
        let at = shown.body.find(&format!("id=\"{id}\">")).unwrap() + id.len() + 6;
        shown.body[at..at + shown.body[at..].find('<').unwrap()].to_owned()
    };
    assert_eq!(cell("balance-posted"), "1\u{a0}237,56\u{a0}€");
    assert_eq!(cell("balance-held"), "3,00\u{a0}€");
    assert_eq!(cell("balance-available"), "1\u{a0}234,56\u{a0}€");
    assert!(shown.body.contains("Posted balance over the last 2 transfers"), "the chart");
    assert!(shown.body.contains(&funding), "the transfer's counterparty");
    // Transfer history pages with the API's cursor.
    for _ in 0..21 {
        assert_eq!(api.transfer(&funding, &payee, 1).await.body["result"], "ok");
    }
    let api_page = api.get(&format!("/v1/accounts/{payee}/transfers")).await;
    let cursor = api_page.body["next_cursor"].as_str().unwrap();
    let first = console.get(&format!("/console/accounts/{payee}")).await;
    assert!(first.body.contains(&format!("?starting_after={cursor}")), "the next page's link");
    let older = console.get(&format!("/console/accounts/{payee}?starting_after={cursor}")).await;
    let api_older = api.get(&format!("/v1/accounts/{payee}/transfers?starting_after={cursor}")).await;
    let ids: Vec<&str> = api_older.body["data"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    // The payee's 21 transfers and the payment's hold that credits it later: two left.
    assert_eq!(ids.len(), 2);
    assert!(ids.iter().all(|id| older.body.contains(id)));
    // The payment as the API has it, with its hold and the actions its state allows.
    let p = console.get(&format!("/console/payments/{pay}")).await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains("id=\"payment-status\">requires_capture<"), "{}", p.body);
    assert!(p.body.contains("id=\"payment-amount\">3,00\u{a0}€<"));
    assert!(p.body.contains("id=\"action-capture\"") && p.body.contains("id=\"action-cancel\""));
    assert!(!p.body.contains("id=\"action-refund\""));
    assert!(p.body.contains("pending"), "the hold transfer");
    // The list: `GET /v1/payments`, newest first, by status, paged; the console shows the same.
    let second = api.payment(&payer, &payee, 700, json!({})).await;
    let all = api.get("/v1/payments").await;
    let listed: Vec<&str> = all.body["data"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(listed, [second.as_str(), pay.as_str()]);
    let held = api.get("/v1/payments?status=requires_capture&limit=1").await;
    assert_eq!((held.body["data"][0]["id"].as_str(), &held.body["has_more"]), (Some(pay.as_str()), &json!(false)));
    let first = api.get("/v1/payments?limit=1").await;
    assert_eq!((first.body["data"][0]["id"].as_str(), &first.body["has_more"]), (Some(second.as_str()), &json!(true)));
    let rest = api.get(&format!("/v1/payments?starting_after={second}")).await;
    assert_eq!(rest.body["data"][0]["id"].as_str(), Some(pay.as_str()));
    for (query, param) in [("status=paid", "status"), ("limit=0", "limit"), ("sort=id", "sort")] {
        let refused = api.get(&format!("/v1/payments?{query}")).await;
        assert_eq!((refused.status, refused.body["error"]["param"].as_str()), (400, Some(param)), "{query}");
    }
    let list = console.get("/console/payments").await;
    let (at_second, at_pay) = (list.body.find(&second).unwrap(), list.body.find(&pay).unwrap());
    assert!(at_second < at_pay, "newest first");
    assert!(list.body.contains("data-live=\"yes\""));
    let filtered = console.get("/console/payments?status=requires_confirmation").await;
    assert!(filtered.body.contains(&second) && !filtered.body.contains(&pay));
    assert!(filtered.body.contains("<option value=\"requires_confirmation\" selected>"), "{}", filtered.body);
    // Looked up by id; unknown ids and unknown pages are the console's 404 page.
    let found = console.get(&format!("/console/payments?id={pay}")).await;
    assert_eq!(found.location, Some(format!("/console/payments/{pay}")));
    for path in ["/console/payments/pay_00000000000000000000000000", "/console/payments/junk", "/console/nope"] {
        let missing = console.get(path).await;
        assert_eq!(missing.status, 404, "{path}");
        assert!(missing.body.contains("<html"), "{path}");
    }
    // Health: the figures of /metrics.
    let figures: Value = serde_json::from_str(&console.get("/console/health/figures").await.body).unwrap();
    assert!(figures["paycore_engine_batch_events_count"].as_u64().unwrap() > 0, "{figures}");
    assert_eq!(figures["paycore_engine_queue_depth"], 0);
}

async fn capture_and_refund_move_the_money_once_and_only_with_the_csrf_token(backend: Backend) {
    let Some((api, _data)) = common::boot_on(backend, ADMIN, |_| {}).await else { return };
    let (_, payer, payee) = api.parties(10_000).await;
    let pay = held_payment(&api, &payer, &payee, 1_000).await;
    let console = Console::sign_in(&api.base, ADMIN).await;
    let key = console.confirmation_key(&pay, "capture").await;
    let path = format!("/console/payments/{pay}/capture");
    // Without the token, or with another: 403, and nothing moved.
    for csrf in [None, Some("0".repeat(64))] {
        let mut form = vec![("idempotency_key", key.as_str()), ("amount", "")];
        if let Some(csrf) = &csrf {
            form.push(("csrf", csrf));
        }
        let refused = console.post(&path, &form).await;
        assert_eq!(refused.status, 403, "{}", refused.body);
        assert!(refused.body.contains("csrf_token_invalid"));
    }
    assert_eq!(api.get(&format!("/v1/payments/{pay}")).await.body["status"], "requires_capture");
    assert_eq!(posted(&api, &payee).await, 0);
    // With it: captured, through the API's own handler.
    let form = [("csrf", console.csrf.as_str()), ("idempotency_key", key.as_str()), ("amount", "")];
    let done = console.post(&path, &form).await;
    assert_eq!(done.location, Some(format!("/console/payments/{pay}?done=capture")), "{}", done.body);
    let p = api.get(&format!("/v1/payments/{pay}")).await;
    assert_eq!((p.body["status"].as_str(), p.body["amount_captured"].as_u64()), (Some("succeeded"), Some(1_000)));
    assert_eq!((posted(&api, &payer).await, posted(&api, &payee).await), (9_000, 1_000));
    // The same form sent again (a double click, a reload) is its replay: nothing moves.
    let again = console.post(&path, &form).await;
    assert_eq!(again.status, 303, "{}", again.body);
    assert_eq!((posted(&api, &payer).await, posted(&api, &payee).await), (9_000, 1_000));
    // A partial refund in the currency's decimals, then the rest; then nothing is left.
    let shown = console.get(&format!("/console/payments/{pay}?done=capture")).await;
    assert!(shown.body.contains("Captured.") && shown.body.contains("id=\"action-refund\""));
    let key = console.confirmation_key(&pay, "refund").await;
    let refund = format!("/console/payments/{pay}/refund");
    let bad = console.post(&refund, &[("csrf", &console.csrf), ("idempotency_key", &key), ("amount", "2.001")]).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let done = console.post(&refund, &[("csrf", &console.csrf), ("idempotency_key", &key), ("amount", "2.50")]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!((posted(&api, &payer).await, posted(&api, &payee).await), (9_250, 750));
    let key = console.confirmation_key(&pay, "refund").await;
    let done = console.post(&refund, &[("csrf", &console.csrf), ("idempotency_key", &key)]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!((posted(&api, &payer).await, posted(&api, &payee).await), (10_000, 0));
    let p = console.get(&format!("/console/payments/{pay}")).await;
    assert!(p.body.contains("id=\"payment-refunded\">10,00\u{a0}€<"));
    assert!(!p.body.contains("id=\"action-"), "nothing left to do");
    let refunds = api.get(&format!("/v1/payments/{pay}/refunds")).await;
    assert_eq!(refunds.body["data"].as_array().unwrap().len(), 2);
    // The payment's state decides: a capture now is the API's 409, and moves nothing.
    let key = format!("console-late-{pay}");
    let late = console.post(&path, &[("csrf", &console.csrf), ("idempotency_key", &key)]).await;
    assert_eq!(late.status, 409, "{}", late.body);
    assert!(late.body.contains("payment_unexpected_state"));
    // A cancel of another held payment.
    let second = held_payment(&api, &payer, &payee, 400).await;
    assert_eq!(api.balance(&payer).await["pending_debits"], 400);
    let key = console.confirmation_key(&second, "cancel").await;
    let done = console
        .post(&format!("/console/payments/{second}/cancel"), &[("csrf", &console.csrf), ("idempotency_key", &key)])
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(api.get(&format!("/v1/payments/{second}")).await.body["status"], "cancelled");
    assert_eq!(api.balance(&payer).await["pending_debits"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_key_sees_no_buttons_that_write_and_its_posts_are_403() {
    let (admin, _data) = common::boot(ADMIN, |_| {}).await;
    let tenant = new_tenant(&admin).await;
    let api = admin.with_key(&key_for(&admin, &tenant, &["read", "write"]).await);
    let (_, payer, payee) = api.parties(5_000).await;
    let pay = held_payment(&api, &payer, &payee, 1_000).await;
    let reader = Console::sign_in(&api.base, &key_for(&admin, &tenant, &["read"]).await).await;
    let p = reader.get(&format!("/console/payments/{pay}")).await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains("id=\"read-only\""));
    assert!(!p.body.contains("id=\"action-"), "a read key sees an action");
    let batches = reader.get("/console/batches").await;
    assert!(!batches.body.contains("id=\"upload\""), "a read key sees the upload form");
    assert_eq!(reader.get(&format!("/console/payments/{pay}/capture")).await.status, 403);
    // Its posts, with a valid token, are refused and move nothing.
    let refused = reader
        .post(&format!("/console/payments/{pay}/capture"), &[("csrf", &reader.csrf), ("idempotency_key", "k1")])
        .await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("insufficient_scope"));
    let (status, body) = reader
        .upload("format=csv", "text/csv", &format!("payee,amount,currency\n{payee},1.00,EUR\n"), Some(&reader.csrf))
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("insufficient_scope")));
    assert_eq!(api.get(&format!("/v1/payments/{pay}")).await.body["status"], "requires_capture");
    assert_eq!(posted(&api, &payee).await, 0);
    // A key that may write but not read has no console.
    let (writer, _) = sign_in_answer(&api.base, &key_for(&admin, &tenant, &["write"]).await).await;
    assert_eq!(writer.status, 403);
    assert!(writer.body.contains("lacks the `read` scope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_ids_are_the_consoles_404_and_move_nothing() {
    let (admin, _data) = common::boot(ADMIN, |_| {}).await;
    let a = new_tenant(&admin).await;
    let api = admin.with_key(&key_for(&admin, &a, &["read", "write"]).await);
    let (_, payer, payee) = api.parties(5_000).await;
    let r = api.post("/v1/accounts", json!({"currency": "EUR", "reference": "A-ONLY"})).await;
    assert_eq!(r.status, 201);
    let pay = held_payment(&api, &payer, &payee, 1_000).await;
    let (status, batch) = Console::sign_in(&api.base, api.key.as_str())
        .await
        .upload(
            &format!("format=csv&payer={payer}"),
            "text/csv",
            &format!("payee,amount,currency\n{payee},1.00,EUR\n"),
            None,
        )
        .await;
    assert_eq!(status, 403, "an upload without the token: {batch}");
    let a_console = Console::sign_in(&api.base, api.key.as_str()).await;
    let (status, batch) = a_console
        .upload(
            &format!("format=csv&payer={payer}"),
            "text/csv",
            &format!("payee,amount,currency\n{payee},1.00,EUR\n"),
            Some(&a_console.csrf),
        )
        .await;
    assert_eq!(status, 202, "{batch}");
    let batch = batch["id"].as_str().unwrap().to_owned();
    assert_eq!(finished_batch(&a_console, &batch).await["status"], "completed");
    let paid = posted(&api, &payee).await;
    assert_eq!(paid, 100);
    let b = new_tenant(&admin).await;
    let other = Console::sign_in(&api.base, &key_for(&admin, &b, &["read", "write"]).await).await;
    for path in [
        format!("/console/accounts/{payer}"),
        format!("/console/payments/{pay}"),
        format!("/console/payments/{pay}/capture"),
        format!("/console/batches/{batch}"),
        format!("/console/batches/{batch}/report?format=csv"),
        "/console/accounts?q=A-ONLY".to_owned(),
    ] {
        let shown = other.get(&path).await;
        assert_eq!(shown.status, 404, "{path}: {}", shown.body);
        for private in ["balance-posted", "payment-status", "batch-status", "payee,amount"] {
            assert!(!shown.body.contains(private), "{path} shows {private}");
        }
    }
    let refused = other
        .post(&format!("/console/payments/{pay}/capture"), &[("csrf", &other.csrf), ("idempotency_key", "k2")])
        .await;
    assert_eq!(refused.status, 404);
    assert_eq!(api.get(&format!("/v1/payments/{pay}")).await.body["status"], "requires_capture");
    assert_eq!(posted(&api, &payee).await, paid);
}

/// Waits until a batch is no longer validating or processing; its JSON from the console.
pub async fn finished_batch(console: &Console, id: &str) -> Value {
    for _ in 0..400 {
        let answer = console.get(&format!("/console/batches/{id}/status")).await;
        let batch: Value = serde_json::from_str(&answer.body).unwrap();
        if !matches!(batch["status"].as_str(), Some("validating" | "processing")) {
            return batch;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("batch {id} did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_errors_is_shown_per_line_and_a_good_one_is_paid_with_its_report() {
    let (api, _data) = common::boot(ADMIN, |_| {}).await;
    let (_, payer, payee) = api.parties(10_000).await;
    let console = Console::sign_in(&api.base, ADMIN).await;
    let bad =
        format!("payee,amount,currency\n{payee},1.00,EUR\n{payee},abc,EUR\n{payee},2.00,EUR\n{payee},1.005,EUR\n");
    let (status, answer) =
        console.upload(&format!("format=csv&payer={payer}"), "text/csv", &bad, Some(&console.csrf)).await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["id"].as_str().unwrap();
    let finished = finished_batch(&console, id).await;
    assert_eq!(finished["status"], "rejected", "{finished}");
    let shown = console.get(&format!("/console/batches/{id}")).await;
    assert!(shown.body.contains("id=\"invalid-lines\""), "{}", shown.body);
    let api_items = api.get(&format!("/v1/batches/{id}/items?status=invalid")).await;
    let lines: Vec<u64> =
        api_items.body["data"].as_array().unwrap().iter().map(|i| i["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [3, 5]);
    for item in api_items.body["data"].as_array().unwrap() {
        let row = format!("<td class=\"num\">{}</td><td>{}</td>", item["line"], item["location"].as_str().unwrap());
        assert!(shown.body.contains(&row), "{row}");
    }
    assert_eq!(posted(&api, &payee).await, 0, "nothing paid");
    // A good file: completed, counted, its totals and the report the API gives.
    let good = format!("payee,amount,currency,reference\n{payee},1.00,EUR,r1\n{payee},2.50,EUR,r2\n");
    let (status, answer) =
        console.upload(&format!("format=csv&payer={payer}"), "text/csv", &good, Some(&console.csrf)).await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["id"].as_str().unwrap();
    assert_eq!(finished_batch(&console, id).await["status"], "completed");
    assert_eq!(posted(&api, &payee).await, 350);
    let shown = console.get(&format!("/console/batches/{id}")).await;
    assert!(shown.body.contains("id=\"count-succeeded\">2<"), "{}", shown.body);
    assert!(shown.body.contains("3,50\u{a0}€"), "the control total");
    let report = console.get(&format!("/console/batches/{id}/report?format=csv")).await;
    assert_eq!(report.status, 200);
    assert_eq!(report.body.as_bytes(), api.get(&format!("/v1/batches/{id}/report?format=csv")).await.bytes);
    let pain002 = console.get(&format!("/console/batches/{id}/report?format=pain.002")).await;
    assert!(pain002.body.contains("pain.002"), "{}", pain002.body);
}

/// Where each of `ids` first appears in `body` (`None` if it does not).
fn positions(body: &str, ids: &[String]) -> Vec<Option<usize>> {
    ids.iter().map(|id| body.find(&format!("/console/batches/{id}\""))).collect()
}

/// `/console/batches` lists what `GET /v1/batches` lists, newest first, with its status filter
/// and cursor pages; another tenant's batches appear on no page.
async fn the_batch_list_shows_what_get_v1_batches_lists_and_no_other_tenants(backend: Backend) {
    let Some((admin, _data)) = common::boot_on(backend, ADMIN, |_| {}).await else { return };
    let a = new_tenant(&admin).await;
    let api = admin.with_key(&key_for(&admin, &a, &["read", "write"]).await);
    let (_, payer, payee) = api.parties(10_000).await;
    let console = Console::sign_in(&api.base, api.key.as_str()).await;
    let mut uploaded = Vec::new();
    for file in [
        format!("payee,amount,currency\n{payee},1.00,EUR\n"),
        format!("payee,amount,currency\n{payee},abc,EUR\n"),
        format!("payee,amount,currency\n{payee},2.00,EUR\n"),
    ] {
        let (status, batch) =
            console.upload(&format!("format=csv&payer={payer}"), "text/csv", &file, Some(&console.csrf)).await;
        assert_eq!(status, 202, "{batch}");
        let id = batch["id"].as_str().unwrap().to_owned();
        finished_batch(&console, &id).await;
        uploaded.push(id);
    }
    // Another tenant's batch, taken in through the API.
    let b = new_tenant(&admin).await;
    let other = admin.with_key(&key_for(&admin, &b, &["read", "write"]).await);
    let (_, b_payer, b_payee) = other.parties(1_000).await;
    let other_console = Console::sign_in(&other.base, other.key.as_str()).await;
    let (status, theirs) = other_console
        .upload(
            &format!("format=csv&payer={b_payer}"),
            "text/csv",
            &format!("payee,amount,currency\n{b_payee},1.00,EUR\n"),
            Some(&other_console.csrf),
        )
        .await;
    assert_eq!(status, 202, "{theirs}");
    let theirs = theirs["id"].as_str().unwrap().to_owned();
    finished_batch(&other_console, &theirs).await;

    // The API: newest first, this tenant's only.
    let listed = api.get("/v1/batches").await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let ids: Vec<String> =
        listed.body["data"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap().to_owned()).collect();
    let newest_first: Vec<String> = uploaded.iter().rev().cloned().collect();
    assert_eq!(ids, newest_first);
    let statuses: Vec<&str> =
        listed.body["data"].as_array().unwrap().iter().map(|b| b["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["completed", "rejected", "completed"]);
    assert_eq!(listed.body["data"][0], api.get(&format!("/v1/batches/{}", ids[0])).await.body, "a row is the batch");
    assert_eq!(listed.body["has_more"], false);

    // The console shows those, in that order, and not the other tenant's.
    let shown = console.get("/console/batches").await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    let at: Vec<usize> = positions(&shown.body, &ids).into_iter().map(|p| p.expect("every listed batch")).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "newest first: {at:?}");
    assert!(!shown.body.contains(&theirs), "another tenant's batch is listed");
    assert!(!other_console.get("/console/batches").await.body.contains(&ids[0]));

    // The status filter is the API's.
    let rejected = api.get("/v1/batches?status=rejected").await;
    assert_eq!(rejected.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(rejected.body["data"][0]["id"], ids[1].as_str());
    let shown = console.get("/console/batches?status=rejected").await;
    let only: Vec<bool> = positions(&shown.body, &ids).iter().map(Option::is_some).collect();
    assert_eq!(only, [false, true, false], "only the rejected batch");
    assert!(shown.body.contains("<option value=\"rejected\" selected>"), "the filter shows its choice");
    let all = console.get("/console/batches?status=&id=").await;
    assert!(positions(&all.body, &ids).iter().all(Option::is_some), "the empty filter is all");

    // Cursor pages: two, then the rest through the page's "Older batches" link.
    let first = console.get("/console/batches?limit=2").await;
    assert_eq!(positions(&first.body, &ids)[2], None);
    let older = attribute_after(&first.body, "id=\"older\"", "href").unwrap().replace("&amp;", "&");
    assert_eq!(older, format!("/console/batches?status=&starting_after={}", ids[1]));
    let second = console.get(&older).await;
    assert_eq!(positions(&second.body, &ids)[..2], [None, None]);
    assert!(positions(&second.body, &ids)[2].is_some());
    let api_second = api.get(&format!("/v1/batches?starting_after={}", ids[1])).await;
    assert_eq!(api_second.body["data"].as_array().unwrap().len(), 1);

    // Bad parameters are the API's 400s, on the page as in the API.
    let bad = console.get("/console/batches?status=done").await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("parameter_invalid"), "{}", bad.body);
    for (query, code) in [
        ("status=done", "parameter_invalid"),
        ("limit=0", "parameter_invalid"),
        ("starting_after=pay_x", "parameter_invalid"),
        ("colour=red", "unknown_parameter"),
    ] {
        let answer = api.get(&format!("/v1/batches?{query}")).await;
        assert_eq!((answer.status, answer.body["error"]["code"].as_str()), (400, Some(code)), "{query}");
    }
}
