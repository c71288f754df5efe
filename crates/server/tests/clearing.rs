//! Clearing windows through the API, on both stores: the example with its exact
//! figures, the next window opening at the previous closing balances, an empty window refused,
//! the CSV bytes, tenants and currencies kept apart, holds counted at their post, a restart
//! between the transfers and the close, idempotent retries, and `verify` afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{on_both_backends, Answer, Backend, Client, Data};
use serde_json::{json, Value};

on_both_backends!(
    the_example_nets_to_zero_and_the_next_window_opens_at_its_closings,
    tenants_and_currencies_are_kept_apart,
    holds_count_at_their_post_and_a_restart_keeps_the_open_window,
);

const KEY: &str = "sk_test_clearing_0123456789abcdefghijklmn";

/// An account of `currency` that may go below zero without limit; its id.
async fn account(client: &Client, currency: &str) -> String {
    let a = client.post("/v1/accounts", json!({"currency": currency, "overdraft_limit": "unlimited"})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    a.body["id"].as_str().unwrap().to_owned()
}

async fn pay(client: &Client, debit: &str, credit: &str, amount: u64, currency: &str) {
    let t = client
        .post(
            "/v1/transfers",
            json!({"debit_account": debit, "credit_account": credit, "amount": amount, "currency": currency}),
        )
        .await;
    assert_eq!((t.status, t.body["result"].as_str()), (201, Some("ok")), "{}", t.body);
}

async fn close(client: &Client, currency: &str) -> Answer {
    client.post("/v1/clearing/windows/close", json!({"currency": currency})).await
}

/// A window that closed: 201 with the object.
async fn closed(client: &Client, currency: &str) -> Value {
    let c = close(client, currency).await;
    assert_eq!(c.status, 201, "{}", c.body);
    assert_eq!(c.body["object"], "clearing_window");
    assert!(c.body["id"].as_str().unwrap().starts_with("cw_"));
    c.body
}

/// (account, opening, debits, credits, net, closing) of each position.
fn positions(window: &Value) -> Vec<(String, i64, u64, u64, i64, i64)> {
    window["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["account"].as_str().unwrap().to_owned(),
                p["opening"].as_i64().unwrap(),
                p["debits"].as_u64().unwrap(),
                p["credits"].as_u64().unwrap(),
                p["net"].as_i64().unwrap(),
                p["closing"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn position(
    account: &str,
    opening: i64,
    debits: u64,
    credits: u64,
    net: i64,
    closing: i64,
) -> (String, i64, u64, u64, i64, i64) {
    (account.to_owned(), opening, debits, credits, net, closing)
}

fn error(answer: &Answer) -> (u16, &str, Option<&str>) {
    (answer.status, answer.body["error"]["code"].as_str().unwrap_or(""), answer.body["error"]["param"].as_str())
}

/// `paycore verify` over the service's store, beside the running service.
async fn verify(data: &Data) {
    let report = common::blocking(data, |store| paycore_store::verify::verify(store).unwrap()).await;
    assert!(report.ok(), "{:?}", report.problems);
    assert!(report.clearing_windows > 0);
}

async fn the_example_nets_to_zero_and_the_next_window_opens_at_its_closings(backend: Backend) {
    let Some((api, data)) = common::boot_on(backend, KEY, |_| {}).await else { return };
    let (a, b, c) = (account(&api, "EUR").await, account(&api, "EUR").await, account(&api, "EUR").await);
    // Nothing moved yet: nothing to close.
    let empty = close(&api, "EUR").await;
    assert_eq!(error(&empty), (409, "window_empty", Some("currency")), "{}", empty.body);

    pay(&api, &a, &b, 100, "EUR").await;
    pay(&api, &b, &c, 60, "EUR").await;
    pay(&api, &c, &a, 30, "EUR").await;
    pay(&api, &a, &c, 20, "EUR").await;
    let first = closed(&api, "EUR").await;
    assert_eq!(
        positions(&first),
        vec![position(&a, 0, 120, 30, -90, -90), position(&b, 0, 60, 100, 40, 40), position(&c, 0, 30, 80, 50, 50)]
    );
    assert_eq!(
        (&first["currency"], &first["sequence"], &first["opened_at"], &first["gross_volume"], &first["net_total"]),
        (&json!("EUR"), &json!(1), &Value::Null, &json!(210), &json!(0))
    );
    assert_eq!(first["account_count"], 3);
    let id = first["id"].as_str().unwrap();

    // Read back: the same object, as JSON and as CSV.
    let got = api.get(&format!("/v1/clearing/windows/{id}")).await;
    assert_eq!((got.status, &got.body), (200, &first));
    let csv = api.get(&format!("/v1/clearing/windows/{id}?format=csv")).await;
    assert_eq!(csv.status, 200);
    let closed_at = first["closed_at"].as_str().unwrap();
    let expected = format!(
        "window,currency,sequence,opened_at,closed_at,account,opening,debits,credits,net,closing\n\
         {id},EUR,1,,{closed_at},{a},0,120,30,-90,-90\n\
         {id},EUR,1,,{closed_at},{b},0,60,100,40,40\n\
         {id},EUR,1,,{closed_at},{c},0,30,80,50,50\n"
    );
    assert_eq!(String::from_utf8(csv.bytes).unwrap(), expected);

    // The balances agree with the closings.
    assert_eq!(api.balance(&a).await["posted"], -90);

    // The next window opens with these closing balances.
    pay(&api, &b, &a, 40, "EUR").await;
    let second = closed(&api, "EUR").await;
    assert_eq!(positions(&second), vec![position(&a, -90, 0, 40, 40, -50), position(&b, 40, 40, 0, -40, 0)]);
    assert_eq!(
        (&second["sequence"], &second["opened_at"], &second["gross_volume"]),
        (&json!(2), &first["closed_at"], &json!(40))
    );
    let again = close(&api, "EUR").await;
    assert_eq!(error(&again), (409, "window_empty", Some("currency")));

    // The listing: last closed first, without positions, by cursor.
    let page = api.get("/v1/clearing/windows?limit=1").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!((&page.body["has_more"], &page.body["data"][0]["id"]), (&json!(true), &second["id"]));
    assert_eq!(page.body["data"][0]["account_count"], 2);
    assert!(page.body["data"][0].get("positions").is_none());
    let cursor = page.body["next_cursor"].as_str().unwrap();
    let rest = api.get(&format!("/v1/clearing/windows?starting_after={cursor}")).await;
    assert_eq!((&rest.body["has_more"], rest.body["data"].as_array().unwrap().len()), (&json!(false), 1));
    assert_eq!(rest.body["data"][0]["id"], first["id"]);

    // Bad requests name the field; unknown windows are 404.
    let cases = [
        (
            api.post("/v1/clearing/windows/close", json!({"currency": "eur"})).await,
            400,
            "invalid_currency",
            Some("currency"),
        ),
        (api.post("/v1/clearing/windows/close", json!({})).await, 400, "parameter_missing", Some("currency")),
        (
            api.post("/v1/clearing/windows/close", json!({"currency": "EUR", "x": 1})).await,
            400,
            "unknown_parameter",
            Some("x"),
        ),
        (api.get(&format!("/v1/clearing/windows/{id}?format=xml")).await, 400, "parameter_invalid", Some("format")),
        (api.get("/v1/clearing/windows?limit=0").await, 400, "parameter_invalid", Some("limit")),
        (api.get("/v1/clearing/windows?currency=XYZ").await, 400, "invalid_currency", Some("currency")),
        (api.get("/v1/clearing/windows?starting_after=tr_1").await, 400, "parameter_invalid", Some("starting_after")),
        (api.get("/v1/clearing/windows/cw_00000000000000000000000000").await, 404, "resource_missing", Some("id")),
        (api.get("/v1/clearing/windows/nope").await, 404, "resource_missing", Some("id")),
    ];
    for (answer, status, code, param) in &cases {
        assert_eq!(error(answer), (*status, *code, *param), "{}", answer.body);
    }

    // An idempotent retry answers the same closed window and closes nothing more.
    pay(&api, &c, &b, 5, "EUR").await;
    let keyed = api.post_with_key("/v1/clearing/windows/close", json!({"currency": "EUR"}), Some("close-3")).await;
    assert_eq!(keyed.status, 201, "{}", keyed.body);
    let retried = api.post_with_key("/v1/clearing/windows/close", json!({"currency": "EUR"}), Some("close-3")).await;
    assert_eq!((retried.status, &retried.bytes, retried.replayed), (201, &keyed.bytes, true));
    assert_eq!(api.get("/v1/clearing/windows").await.body["data"].as_array().unwrap().len(), 3);

    verify(&data).await;
}

/// A new tenant and a read/write key for it.
async fn tenant(admin: &Client, name: &str) -> Client {
    let t = admin.post("/v1/tenants", json!({"name": name})).await;
    assert_eq!(t.status, 201, "{}", t.body);
    let k = admin.post("/v1/api_keys", json!({"tenant": t.body["id"], "scopes": ["read", "write"]})).await;
    assert_eq!(k.status, 201, "{}", k.body);
    admin.with_key(k.body["secret"].as_str().unwrap())
}

async fn tenants_and_currencies_are_kept_apart(backend: Backend) {
    let Some((admin, data)) = common::boot_on(backend, KEY, |_| {}).await else { return };
    let (alpha, beta) = (tenant(&admin, "Alpha").await, tenant(&admin, "Beta").await);
    let (a1, a2) = (account(&alpha, "EUR").await, account(&alpha, "EUR").await);
    let (u1, u2) = (account(&alpha, "USD").await, account(&alpha, "USD").await);
    let (b1, b2) = (account(&beta, "EUR").await, account(&beta, "EUR").await);
    pay(&alpha, &a1, &a2, 10, "EUR").await;
    pay(&alpha, &u1, &u2, 700, "USD").await;
    pay(&beta, &b1, &b2, 3, "EUR").await;

    let eur = closed(&alpha, "EUR").await;
    assert_eq!(positions(&eur), vec![position(&a1, 0, 10, 0, -10, -10), position(&a2, 0, 0, 10, 10, 10)]);
    // Beta's EUR window is its own: still open, with its own transfer only.
    let other = beta.get(&format!("/v1/clearing/windows/{}", eur["id"].as_str().unwrap())).await;
    assert_eq!(error(&other), (404, "resource_missing", Some("id")));
    assert_eq!(beta.get("/v1/clearing/windows").await.body["data"], json!([]));
    let beta_eur = closed(&beta, "EUR").await;
    assert_eq!(positions(&beta_eur), vec![position(&b1, 0, 3, 0, -3, -3), position(&b2, 0, 0, 3, 3, 3)]);
    assert_eq!(beta_eur["sequence"], 1);

    // USD is a window of its own, untouched by the EUR close.
    let usd = closed(&alpha, "USD").await;
    assert_eq!((&usd["sequence"], &usd["gross_volume"]), (&json!(1), &json!(700)));
    let listed = alpha.get("/v1/clearing/windows?currency=USD").await;
    let ids: Vec<&Value> = listed.body["data"].as_array().unwrap().iter().map(|w| &w["id"]).collect();
    assert_eq!(ids, vec![&usd["id"]]);
    assert_eq!(alpha.get("/v1/clearing/windows").await.body["data"].as_array().unwrap().len(), 2);
    let empty = close(&alpha, "USD").await;
    assert_eq!(error(&empty), (409, "window_empty", Some("currency")));
    assert_eq!(error(&close(&beta, "USD").await), (409, "window_empty", Some("currency")));

    verify(&data).await;
}

async fn holds_count_at_their_post_and_a_restart_keeps_the_open_window(backend: Backend) {
    let Some(data) = Data::new(backend) else { return };
    let config = common::config(&data, KEY);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (base, task) = common::serve(&config, async move {
        let _ = stopped.await;
    })
    .await;
    let api = Client { base, http: reqwest::Client::new(), key: KEY.to_owned() };
    let (a, b) = (account(&api, "EUR").await, account(&api, "EUR").await);
    let hold = "tr_01aaaaaaaaaaaaaaaaaaaaaaaa";
    let h = api
        .post(
            "/v1/transfers",
            json!({"id": hold, "debit_account": a, "credit_account": b, "amount": 50, "currency": "EUR", "pending": true}),
        )
        .await;
    assert_eq!((h.status, h.body["result"].as_str()), (201, Some("ok")), "{}", h.body);
    // A hold moves no posted money: nothing to close.
    assert_eq!(error(&close(&api, "EUR").await), (409, "window_empty", Some("currency")));
    let post = api.post("/v1/transfers", json!({"post_pending_id": hold, "amount": 20})).await;
    assert_eq!((post.status, post.body["result"].as_str()), (201, Some("ok")), "{}", post.body);
    pay(&api, &b, &a, 5, "EUR").await;

    // A restart between the transfers and the close.
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let (base, _serving) = common::serve(&config, std::future::pending()).await;
    let api = Client { base, http: reqwest::Client::new(), key: KEY.to_owned() };
    let window = closed(&api, "EUR").await;
    assert_eq!(positions(&window), vec![position(&a, 0, 20, 5, -15, -15), position(&b, 0, 5, 20, 15, 15)]);
    assert_eq!(window["gross_volume"], 25);

    verify(&data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_describes_every_clearing_route() {
    let (api, _data) = common::boot(KEY, |_| {}).await;
    let doc = api.send(api.http.get(format!("{}/openapi.json", api.base))).await;
    assert_eq!(doc.status, 200);
    let paths = &doc.body["paths"];
    let close = &paths["/v1/clearing/windows/close"]["post"];
    assert_eq!(close["tags"], json!(["clearing"]));
    assert!(close["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .unwrap()
        .ends_with("/ClearingWindowJson"));
    assert!(close["responses"]["409"].is_object(), "{close}");
    assert!(paths["/v1/clearing/windows"]["get"]["responses"]["200"].is_object());
    let retrieve = &paths["/v1/clearing/windows/{id}"]["get"];
    assert!(retrieve["responses"]["404"].is_object());
    let format = retrieve["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "format").unwrap();
    assert_eq!(format["schema"]["enum"], json!(["json", "csv", null]));
    let schemas = &doc.body["components"]["schemas"];
    assert!(schemas["ClearingWindowJson"]["properties"]["positions"].is_object());
    assert!(schemas["ClearingPositionJson"]["properties"]["net"].is_object());
    let currencies = schemas["CloseClearingWindow"]["properties"]["currency"]["enum"].as_array().unwrap();
    assert!(currencies.contains(&json!("EUR")));
}
