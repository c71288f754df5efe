//! Interest: quotes (the issue's examples, and bad parameters named), terms on accounts, and
//! runs through the engine — accrual over a month on each day's closing balance, nothing twice
//! (a repeated run, a service stopped half way and started again), `min_balance`, debit
//! interest on a credit line, tenant isolation. On both stores. The service's clock is a
//! `ManualClock`, so that days pass.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{on_both_backends, Backend, Client, Data};
use paycore_server::{ManualClock, ServiceClock};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "sk_test_interest_0123456789abcdefghijklmno";
const DAY_NS: u64 = 86_400_000_000_000;
/// 2026-11-01T10:00:00Z.
const NOV_1: u64 = 1_793_527_200_000_000_000;

on_both_backends!(
    quotes_hold_the_issues_examples_and_name_bad_parameters,
    a_month_accrues_on_closing_balances_and_posts_once,
    a_run_stopped_half_way_credits_each_account_once,
    debit_interest_is_charged_on_a_credit_line,
    tenants_see_and_run_only_their_own_interest,
);

/// The day `n` days after 2026-11-01 at 10:00 UTC.
fn day(n: u64) -> u64 {
    NOV_1 + n * DAY_NS
}

async fn boot(backend: Backend, clock: &Arc<ManualClock>) -> Option<(Client, Data)> {
    let clock = ServiceClock(clock.clone());
    common::boot_on(backend, KEY, move |c| c.clock = clock).await
}

async fn quote(client: &Client, query: &str) -> common::Answer {
    client.get(&format!("/v1/interest/quote?{query}")).await
}

async fn quotes_hold_the_issues_examples_and_name_bad_parameters(backend: Backend) {
    let clock = Arc::new(ManualClock::new(NOV_1));
    let Some((client, _data)) = boot(backend, &clock).await else { return };
    let examples = [
        ("principal=100000&annual_rate=0.035&days=30", 288),
        ("principal=100000000&annual_rate=0.035&days=30&day_count=act/365&compounding=daily", 288_072),
        ("principal=100000&annual_rate=0.035&days=365", 3562),
        ("principal=1000000&annual_rate=0.05&days=31&day_count=act%2F360&compounding=none", 4306),
        ("principal=1000000&annual_rate=0.05&days=31&day_count=act/365&compounding=none", 4247),
        ("principal=36500&annual_rate=0.125&days=1", 12),
    ];
    for (query, interest) in examples {
        let q = quote(&client, query).await;
        assert_eq!(q.status, 200, "{query}: {}", q.body);
        assert_eq!(q.body["interest"], interest, "{query}: {}", q.body);
        assert_eq!(q.body["amount"], q.body["principal"].as_u64().unwrap() + interest);
    }
    let q = quote(&client, "principal=100000&annual_rate=0.035&days=30").await;
    assert_eq!((q.body["currency"].as_str(), q.body["day_count"].as_str()), (Some("USD"), Some("act/365")));
    assert!(q.body["exact_amount"].as_str().unwrap().starts_with("1002.88071"), "{}", q.body);
    let tie = quote(&client, "principal=36500&annual_rate=0.125&days=1&compounding=none").await;
    assert_eq!(tie.body["exact_interest"], "0.125");
    let yen = quote(&client, "principal=36500&annual_rate=0.125&days=1&currency=JPY").await;
    assert_eq!((yen.body["interest"].as_u64(), yen.body["exact_interest"].as_str()), (Some(12), Some("12.5")));

    let bad = [
        ("annual_rate=0.035&days=30", "parameter_missing", "principal"),
        ("principal=100000&days=30", "parameter_missing", "annual_rate"),
        ("principal=100000&annual_rate=0.035", "parameter_missing", "days"),
        ("principal=-1&annual_rate=0.035&days=30", "parameter_invalid", "principal"),
        ("principal=10.5&annual_rate=0.035&days=30", "parameter_invalid", "principal"),
        ("principal=100000&annual_rate=3.5%25&days=30", "parameter_invalid", "annual_rate"),
        ("principal=100000&annual_rate=1e-2&days=30", "parameter_invalid", "annual_rate"),
        ("principal=100000&annual_rate=1.5&days=30", "parameter_invalid", "annual_rate"),
        ("principal=100000&annual_rate=0.035&days=3661", "parameter_invalid", "days"),
        ("principal=100000&annual_rate=0.035&days=30&day_count=30/360", "parameter_invalid", "day_count"),
        ("principal=100000&annual_rate=0.035&days=30&compounding=yearly", "parameter_invalid", "compounding"),
        ("principal=100000&annual_rate=0.035&days=30&currency=XXX", "invalid_currency", "currency"),
        ("principal=100000&annual_rate=0.035&days=30&rate=1", "unknown_parameter", "rate"),
        ("principal=1&principal=2&annual_rate=0.035&days=30", "parameter_invalid", "principal"),
    ];
    let document = client.send(client.http.get(format!("{}/openapi.json", client.base))).await.body;
    for (path, method) in [
        ("/v1/interest/quote", "get"),
        ("/v1/interest/runs", "post"),
        ("/v1/accounts/{id}/interest", "put"),
        ("/v1/accounts/{id}/interest", "get"),
        ("/v1/accounts/{id}/interest", "delete"),
    ] {
        assert!(document["paths"][path][method].is_object(), "{method} {path} missing from /openapi.json");
    }
    let rate = &document["components"]["schemas"]["InterestTermsBody"]["properties"]["annual_rate"];
    assert_eq!(rate["type"], "string", "{rate}");
    assert!(rate["pattern"].is_string(), "{rate}");
    for (query, code, param) in bad {
        let q = quote(&client, query).await;
        assert_eq!(q.status, 400, "{query}: {}", q.body);
        assert_eq!(
            (q.body["error"]["code"].as_str(), q.body["error"]["param"].as_str()),
            (Some(code), Some(param)),
            "{query}"
        );
    }
}

/// Polls the batch until it has ended; its last state.
async fn finished(client: &Client, batch: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = client.get(&format!("/v1/batches/{batch}")).await;
        assert_eq!(b.status, 200, "{}", b.body);
        if b.body["status"] == "completed" {
            return b.body;
        }
        assert!(Instant::now() < deadline, "the batch did not end: {}", b.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn posted(client: &Client, account: &str) -> i64 {
    client.balance(account).await["posted"].as_i64().unwrap()
}

/// An EUR account with these interest terms (and overdraft); its id.
async fn interest_account(client: &Client, overdraft: Value, terms: Value) -> String {
    let a =
        client.post("/v1/accounts", json!({"currency": "EUR", "overdraft_limit": overdraft, "interest": terms})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    a.body["id"].as_str().unwrap().to_owned()
}

async fn run(client: &Client, through: &str) -> common::Answer {
    client.post("/v1/interest/runs", json!({"through": through})).await
}

async fn a_month_accrues_on_closing_balances_and_posts_once(backend: Backend) {
    let clock = Arc::new(ManualClock::new(day(0)));
    let Some((client, data)) = boot(backend, &clock).await else { return };
    let funding = client.account(json!("unlimited")).await;
    let terms = json!({"annual_rate": "0.035", "day_count": "act/365", "compounding": "daily", "posting": "monthly"});
    let saver = interest_account(&client, json!(0), terms.clone()).await;
    let t = client.transfer(&funding, &saver, 100_000).await;
    assert_eq!(t.status, 201, "{}", t.body);
    // `min_balance`: a day ending at 499.99 under a 500.00 minimum earns nothing; one at
    // 500.00 earns.
    let below = interest_account(&client, json!(0), json!({"annual_rate": "0.035", "min_balance": 50_000})).await;
    let at = interest_account(&client, json!(0), json!({"annual_rate": "0.035", "min_balance": 50_000})).await;
    assert_eq!(client.transfer(&funding, &below, 49_999).await.status, 201);
    assert_eq!(client.transfer(&funding, &at, 50_000).await.status, 201);
    // Money that arrives on day 15 earns from day 15 on: 16 days of 1 000.00.
    let late = interest_account(&client, json!(0), terms).await;
    clock.set(day(14));
    assert_eq!(client.transfer(&funding, &late, 100_000).await.status, 201);

    let shown = client.get(&format!("/v1/accounts/{saver}/interest")).await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(
        (shown.body["since"].as_str(), shown.body["accrued_through"].as_str()),
        (Some("2026-11-01"), Some("2026-10-31"))
    );
    assert_eq!(shown.body["annual_rate"], "0.035");

    // The month has not ended: nothing to post, and no day of the future.
    let early = run(&client, "2026-11-14").await;
    assert_eq!(
        (early.status, early.body["batch"].clone(), early.body["accounts_accrued"].as_u64()),
        (200, Value::Null, Some(0))
    );
    let future = run(&client, "2026-11-16").await;
    assert_eq!(future.status, 400, "{}", future.body);
    assert_eq!(future.body["error"]["param"], "through");
    assert_eq!(run(&client, "2026-11-31").await.body["error"]["param"], "through");

    clock.set(day(30));
    let first = run(&client, "2026-11-30").await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.body["accounts_accrued"], 4);
    let credit_of = |account: &str| {
        first.body["postings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["account"] == account)
            .map(|p| p["credit"].as_u64().unwrap())
    };
    let late_expected = quote(&client, "principal=100000&annual_rate=0.035&days=16").await.body["interest"].as_u64();
    let at_expected = quote(&client, "principal=50000&annual_rate=0.035&days=30").await.body["interest"].as_u64();
    assert_eq!(credit_of(&saver), Some(288), "{}", first.body);
    assert_eq!(credit_of(&below), Some(0), "{}", first.body);
    assert_eq!(credit_of(&at), at_expected);
    assert_eq!(credit_of(&late), late_expected);
    assert_eq!(first.body["postings"][0]["period"], "2026-11");
    let batch = first.body["batch"]["id"].as_str().unwrap().to_owned();
    assert_eq!(first.body["batch"]["format"], "interest");
    let ended = finished(&client, &batch).await;
    assert_eq!(
        (ended["counts"]["succeeded"].as_u64(), ended["counts"]["failed"].as_u64()),
        (Some(3), Some(0)),
        "{ended}"
    );

    let expense = first.body["interest_accounts"][0]["expense"].as_str().unwrap().to_owned();
    let paid = 288 + at_expected.unwrap() + late_expected.unwrap();
    assert_eq!(posted(&client, &saver).await, 100_288);
    assert_eq!(posted(&client, &below).await, 49_999);
    assert_eq!(posted(&client, &expense).await, -i64::try_from(paid).unwrap());
    let shown = client.get(&format!("/v1/accounts/{saver}/interest")).await;
    assert_eq!(
        (shown.body["accrued_through"].as_str(), shown.body["credit_posted"].as_u64()),
        (Some("2026-11-30"), Some(288))
    );
    assert_eq!(shown.body["last_batch"], batch.as_str());
    let items = client.get(&format!("/v1/batches/{batch}/items")).await;
    assert_eq!(items.body["data"][0]["reference"], "interest 2026-11 credit", "{}", items.body);

    // The same period again: nothing.
    let again = run(&client, "2026-11-30").await;
    assert_eq!(
        (again.status, again.body["batch"].clone(), again.body["accounts_accrued"].as_u64()),
        (200, Value::Null, Some(0))
    );
    assert_eq!(posted(&client, &saver).await, 100_288);

    // Stopping interest: the account no longer accrues; a second delete finds nothing.
    assert_eq!(client.delete(&format!("/v1/accounts/{below}/interest")).await.body["deleted"], true);
    assert_eq!(client.delete(&format!("/v1/accounts/{below}/interest")).await.status, 404);
    assert_eq!(client.get(&format!("/v1/accounts/{below}/interest")).await.status, 404);

    let report = common::blocking(&data, |store| paycore_store::verify::verify(store).unwrap()).await;
    assert!(report.ok(), "{:?}", report.problems);
}

async fn a_run_stopped_half_way_credits_each_account_once(backend: Backend) {
    let clock = Arc::new(ManualClock::new(day(0)));
    let Some(data) = Data::new(backend) else { return };
    let mut config = common::config(&data, KEY);
    config.clock = ServiceClock(clock.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (base, serving) = common::serve(&config, async move {
        let _ = stopped.await;
    })
    .await;
    let client = Client { base, http: reqwest::Client::new(), key: KEY.to_owned() };
    let funding = client.account(json!("unlimited")).await;
    let mut savers = Vec::new();
    for _ in 0..40 {
        let saver = interest_account(
            &client,
            json!(0),
            json!({"annual_rate": "0.05", "posting": "daily", "compounding": "daily"}),
        )
        .await;
        assert_eq!(client.transfer(&funding, &saver, 1_000_000).await.status, 201);
        savers.push(saver);
    }
    clock.set(day(10));
    // Ten days of daily postings for forty accounts: 400 items.
    let first = run(&client, "2026-11-10").await;
    assert_eq!(first.status, 201, "{}", first.body);
    let batch = first.body["batch"]["id"].as_str().unwrap().to_owned();
    // Stop at once: the batch is created (durably, with every account's accrual), and its job
    // stops at its next chunk.
    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();

    let (base, _serving) = common::serve(&config, std::future::pending()).await;
    let client = Client { base, http: reqwest::Client::new(), key: KEY.to_owned() };
    let ended = finished(&client, &batch).await;
    assert_eq!(
        (ended["counts"]["succeeded"].as_u64(), ended["counts"]["failed"].as_u64()),
        (Some(400), Some(0)),
        "{ended}"
    );
    let expected =
        quote(&client, "principal=1000000&annual_rate=0.05&days=10").await.body["interest"].as_i64().unwrap();
    for saver in &savers {
        assert_eq!(posted(&client, saver).await, 1_000_000 + expected);
    }
    let again = run(&client, "2026-11-10").await;
    assert_eq!((again.status, again.body["batch"].clone()), (200, Value::Null));
    let report = common::blocking(&data, |store| paycore_store::verify::verify(store).unwrap()).await;
    assert!(report.ok(), "{:?}", report.problems);
}

async fn debit_interest_is_charged_on_a_credit_line(backend: Backend) {
    let clock = Arc::new(ManualClock::new(day(0)));
    let Some((client, _data)) = boot(backend, &clock).await else { return };
    let funding = client.account(json!("unlimited")).await;
    // A float for a rate is refused, naming the field; so is a debit rate without a credit line.
    let float = client.post("/v1/accounts", json!({"currency": "EUR", "interest": {"annual_rate": 0.035}})).await;
    assert_eq!(
        (float.status, float.body["error"]["param"].as_str()),
        (400, Some("interest.annual_rate")),
        "{}",
        float.body
    );
    let percent = client.post("/v1/accounts", json!({"currency": "EUR", "interest": {"annual_rate": "3.5%"}})).await;
    assert_eq!(percent.body["error"]["param"], "interest.annual_rate");
    let no_line = client
        .post("/v1/accounts", json!({"currency": "EUR", "interest": {"annual_rate": "0", "debit_rate": "0.1825"}}))
        .await;
    assert_eq!((no_line.status, no_line.body["error"]["param"].as_str()), (400, Some("interest.debit_rate")));

    let line = client.account(json!(200_000)).await;
    let set = client
        .send_as_key(
            client
                .http
                .put(format!("{}/v1/accounts/{line}/interest", client.base))
                .json(&json!({"annual_rate": "0.01", "debit_rate": "0.1825"})),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!((set.body["debit_rate"].as_str(), set.body["posting"].as_str()), (Some("0.1825"), Some("monthly")));
    let bad = client
        .send_as_key(
            client.http.put(format!("{}/v1/accounts/{line}/interest", client.base)).json(&json!({"annual_rate": "x"})),
        )
        .await;
    assert_eq!((bad.status, bad.body["error"]["param"].as_str()), (400, Some("annual_rate")));
    assert_eq!(client.transfer(&line, &funding, 10_000).await.status, 201);

    clock.set(day(30));
    let first = run(&client, "2026-11-30").await;
    assert_eq!(first.status, 201, "{}", first.body);
    // 100.00 overdrawn at 18.25 %, compounded daily for 30 days: 1.51.
    assert_eq!(
        (first.body["postings"][0]["credit"].as_u64(), first.body["postings"][0]["debit"].as_u64()),
        (Some(0), Some(151))
    );
    finished(&client, first.body["batch"]["id"].as_str().unwrap()).await;
    let income = first.body["interest_accounts"][0]["income"].as_str().unwrap().to_owned();
    assert_eq!(posted(&client, &line).await, -10_151);
    assert_eq!(posted(&client, &income).await, 151);
}

async fn tenants_see_and_run_only_their_own_interest(backend: Backend) {
    let clock = Arc::new(ManualClock::new(day(0)));
    let Some((admin, _data)) = boot(backend, &clock).await else { return };
    let mut tenants = Vec::new();
    for name in ["a", "b"] {
        let t = admin.post("/v1/tenants", json!({"name": name})).await;
        let id = t.body["id"].as_str().unwrap().to_owned();
        let k = admin.post("/v1/api_keys", json!({"tenant": id, "scopes": ["read", "write"]})).await;
        tenants.push(admin.with_key(k.body["secret"].as_str().unwrap()));
    }
    let (a, b) = (&tenants[0], &tenants[1]);
    let funding = a.account(json!("unlimited")).await;
    let saver = interest_account(a, json!(0), json!({"annual_rate": "0.035"})).await;
    assert_eq!(a.transfer(&funding, &saver, 100_000).await.status, 201);
    let path = format!("/v1/accounts/{saver}/interest");
    assert_eq!(b.get(&path).await.status, 404);
    assert_eq!(b.delete(&path).await.status, 404);
    let put = b.send_as_key(b.http.put(format!("{}{path}", b.base)).json(&json!({"annual_rate": "0.5"}))).await;
    assert_eq!(put.status, 404, "{}", put.body);
    clock.set(day(30));
    let theirs = run(b, "2026-11-30").await;
    assert_eq!((theirs.status, theirs.body["accounts_accrued"].as_u64()), (200, Some(0)), "{}", theirs.body);
    let ours = run(a, "2026-11-30").await;
    assert_eq!(ours.body["postings"][0]["credit"], 288, "{}", ours.body);
    // The batch ends before the test does (a batch job still following its batch would keep
    // the runtime from shutting down).
    finished(a, ours.body["batch"]["id"].as_str().unwrap()).await;
    assert_eq!(posted(a, &saver).await, 100_288);
    assert_eq!(a.get(&path).await.body["annual_rate"], "0.035");
}
