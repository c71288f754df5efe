//! Limits: rate limiting per key (429 `rate_limited` with `Retry-After`), the line count of
//! batch files (`too_many_lines`, naming `max_batch_lines`), and accounts' risk limits and
//! status (`PATCH /v1/accounts/{id}`, its audit), decided inside the engine's batch, on both
//! stores.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::{json, Value};
use std::time::Duration;

const KEY: &str = "sk_test_limits_0123456789abcdefghijklmnop";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    let (service, _dir) = common::boot(KEY, |c| {
        c.rate_limit_per_second = 5;
        c.rate_limit_burst = 10;
    })
    .await;
    let base = service.base;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..30 {
        let response = http.get(format!("{base}/v1/webhook_endpoints")).bearer_auth(KEY).send().await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 && limited.is_none() {
            let retry = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            let body: Value = response.json().await.unwrap();
            limited = Some((retry, body));
        }
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!((10..=12).contains(&ok), "{statuses:?}");
    let (retry, body) = limited.expect("no 429");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(body["error"]["message"].as_str().unwrap().contains("rate_limit_per_second"));
    // Other keys have their own bucket; and the bucket refills.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = http.get(format!("{base}/v1/webhook_endpoints")).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(again.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_file_over_the_line_limit_is_rejected_naming_it() {
    let (service, _dir) = common::boot(KEY, |c| c.max_batch_lines = 3).await;
    let base = service.base;
    let http = reqwest::Client::new();
    let post = |items: Value| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http
                .post(format!("{base}/v1/batches?payer=acct_00000000000000000000000000&currency=EUR"))
                .bearer_auth(KEY)
                .json(&json!({"items": items}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
        }
    };
    let item = json!({"payee": "X", "amount": 1});
    let big = post(json!([item, item, item, item])).await;
    let small = post(json!([item, item, item])).await;
    for (id, rejected_for_lines) in [(big, true), (small, false)] {
        let mut batch = Value::Null;
        for _ in 0..200 {
            batch = http
                .get(format!("{base}/v1/batches/{id}"))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if batch["status"] != "validating" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let code = batch["rejection"]["code"].as_str();
        if rejected_for_lines {
            assert_eq!(batch["status"], "rejected", "{batch}");
            assert_eq!(code, Some("too_many_lines"), "{batch}");
            assert!(batch["rejection"]["message"].as_str().unwrap().contains("max_batch_lines"), "{batch}");
        } else {
            assert_ne!(code, Some("too_many_lines"), "{batch}");
        }
    }
}

// Risk limits and account status (`PATCH /v1/accounts/{id}`), decided inside the engine's
// batch, on both stores.

use common::{on_both_backends, Answer, Backend, Client};

on_both_backends!(
    thirty_concurrent_payments_against_a_daily_limit_of_ten_of_them,
    max_payment_and_velocity_refuse_transfers_naming_the_limit,
    a_frozen_account_takes_credits_and_refuses_debits,
    only_an_empty_account_closes_and_then_it_takes_nothing,
    patch_errors_name_the_field,
    the_audit_lists_who_changed_what_and_when,
    another_tenants_account_is_missing,
    limits_survive_a_restart_rebuilt_from_the_transfers,
    batch_items_get_the_same_codes,
);

async fn patch(client: &Client, account: &str, body: Value) -> Answer {
    client.send_as_key(client.http.patch(format!("{}/v1/accounts/{account}", client.base)).json(&body)).await
}

async fn patched(client: &Client, account: &str, body: Value) -> Value {
    let a = patch(client, account, body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body
}

async fn boot_limits(backend: Backend) -> Option<(Client, common::Data)> {
    common::boot_on(backend, KEY, |c| {
        c.rate_limit_per_second = 100_000;
        c.rate_limit_burst = 100_000;
    })
    .await
}

/// `paycore verify` over the service's store finds nothing wrong.
async fn verify_passes(data: &common::Data) {
    let report = common::blocking(data, |store| paycore_store::verify::verify(store).unwrap()).await;
    assert!(report.ok(), "{:?}", report.problems);
}

fn code(a: &Answer) -> (u16, Option<&str>) {
    (a.status, a.body["error"]["code"].as_str())
}

async fn thirty_concurrent_payments_against_a_daily_limit_of_ten_of_them(backend: Backend) {
    let Some((client, data)) = boot_limits(backend).await else { return };
    let (_, payer, payee) = client.parties(5_000).await;
    let account = patched(&client, &payer, json!({"limits": {"daily_outflow": 1000}})).await;
    assert_eq!(account["limits"], json!({"max_payment": null, "daily_outflow": 1000, "velocity": null}));
    let mut payments = Vec::new();
    for _ in 0..30 {
        payments.push(client.payment(&payer, &payee, 100, json!({})).await);
    }
    let confirms = payments.iter().map(|id| {
        let client = client.clone();
        let path = format!("/v1/payments/{id}/confirm");
        tokio::spawn(async move { client.post(&path, json!({})).await })
    });
    let answers: Vec<Answer> = futures_util::future::join_all(confirms).await.into_iter().map(Result::unwrap).collect();
    let succeeded = answers.iter().filter(|a| a.status == 200 && a.body["status"] == "succeeded").count();
    assert_eq!(succeeded, 10);
    for refused in answers.iter().filter(|a| a.status != 200) {
        assert_eq!(code(refused), (422, Some("limit_exceeded")), "{}", refused.body);
        assert_eq!(
            refused.body["error"]["limit"],
            json!({"account": payer, "name": "daily_outflow", "limit": 1000, "requested": 100, "remaining": 0})
        );
    }
    // Refused, not failed: the other twenty still wait for a confirmation.
    let mut waiting = 0;
    for id in &payments {
        if client.get(&format!("/v1/payments/{id}")).await.body["status"] == "requires_confirmation" {
            waiting += 1;
        }
    }
    assert_eq!(waiting, 20);
    assert_eq!(client.balance(&payer).await["posted"], 4000);
    assert_eq!(client.balance(&payee).await["posted"], 1000);
    verify_passes(&data).await;
}

async fn max_payment_and_velocity_refuse_transfers_naming_the_limit(backend: Backend) {
    let Some((client, data)) = boot_limits(backend).await else { return };
    let (_, payer, payee) = client.parties(5_000).await;
    patched(&client, &payer, json!({"limits": {"max_payment": 500, "velocity": {"count": 2, "window_seconds": 3600}}}))
        .await;
    let over = client.transfer(&payer, &payee, 501).await;
    assert_eq!(code(&over), (422, Some("limit_exceeded")), "{}", over.body);
    assert_eq!(over.body["error"]["param"], "amount");
    assert_eq!(
        over.body["error"]["limit"],
        json!({"account": payer, "name": "max_payment", "limit": 500, "requested": 501, "remaining": 500})
    );
    assert_eq!(client.transfer(&payer, &payee, 500).await.status, 201); // equal passes
    assert_eq!(client.transfer(&payer, &payee, 1).await.status, 201);
    let third = client.transfer(&payer, &payee, 1).await;
    assert_eq!(code(&third), (422, Some("velocity_exceeded")), "{}", third.body);
    // With an Idempotency-Key the refusal and its replay are the same bytes, details included.
    patched(&client, &payer, json!({"limits": {"velocity": null}})).await;
    let body = json!({"debit_account": payer, "credit_account": payee, "amount": 600, "currency": "EUR"});
    let first = client.post_with_key("/v1/transfers", body.clone(), Some("over-1")).await;
    let again = client.post_with_key("/v1/transfers", body, Some("over-1")).await;
    assert_eq!(code(&first), (422, Some("limit_exceeded")));
    assert_eq!(first.bytes, again.bytes);
    assert!(again.replayed);
    // A bulk request reports one code per transfer.
    let bulk = client
        .post(
            "/v1/transfers",
            json!({"transfers": [
                {"debit_account": payer, "credit_account": payee, "amount": 501, "currency": "EUR"},
                {"debit_account": payer, "credit_account": payee, "amount": 5, "currency": "EUR"},
            ]}),
        )
        .await;
    assert_eq!(bulk.status, 200, "{}", bulk.body);
    assert_eq!(bulk.body["data"][0]["result"], "limit_exceeded");
    assert_eq!(bulk.body["data"][1]["result"], "ok");
    assert_eq!(client.balance(&payer).await["posted"], 5_000 - 506);
    verify_passes(&data).await;
}

async fn a_frozen_account_takes_credits_and_refuses_debits(backend: Backend) {
    let Some((client, data)) = boot_limits(backend).await else { return };
    let (funding, payer, payee) = client.parties(1_000).await;
    let payment = client.payment(&payer, &payee, 100, json!({})).await;
    assert_eq!(patched(&client, &payer, json!({"status": "frozen"})).await["status"], "frozen");
    assert_eq!(code(&client.transfer(&payer, &payee, 1).await), (422, Some("account_frozen")));
    assert_eq!(client.transfer(&funding, &payer, 50).await.status, 201);
    let confirm = client.post(&format!("/v1/payments/{payment}/confirm"), json!({})).await;
    assert_eq!(code(&confirm), (422, Some("account_frozen")), "{}", confirm.body);
    assert_eq!(client.get(&format!("/v1/payments/{payment}")).await.body["status"], "requires_confirmation");
    assert_eq!(client.balance(&payer).await["posted"], 1_050);
    patched(&client, &payer, json!({"status": "active"})).await;
    let confirm = client.post(&format!("/v1/payments/{payment}/confirm"), json!({})).await;
    assert_eq!(confirm.body["status"], "succeeded", "{}", confirm.body);
    assert_eq!(client.balance(&payer).await["posted"], 950);
    verify_passes(&data).await;
}

async fn only_an_empty_account_closes_and_then_it_takes_nothing(backend: Backend) {
    let Some((client, data)) = boot_limits(backend).await else { return };
    let (funding, payer, _) = client.parties(300).await;
    let refused = patch(&client, &payer, json!({"status": "closed"})).await;
    assert_eq!(code(&refused), (409, Some("account_not_empty")), "{}", refused.body);
    assert_eq!(refused.body["error"]["param"], "status");
    assert_eq!(client.transfer(&payer, &funding, 300).await.status, 201);
    let closed = patched(&client, &payer, json!({"status": "closed"})).await;
    assert_eq!(closed["status"], "closed");
    assert_eq!(code(&client.transfer(&funding, &payer, 1).await), (422, Some("account_closed")));
    assert_eq!(code(&client.transfer(&payer, &funding, 1).await), (422, Some("account_closed")));
    assert_eq!(code(&patch(&client, &payer, json!({"status": "active"})).await), (422, Some("account_closed")));
    assert_eq!(client.balance(&payer).await["posted"], 0);
    verify_passes(&data).await;
}

async fn patch_errors_name_the_field(backend: Backend) {
    let Some((client, _data)) = boot_limits(backend).await else { return };
    let account = client.account(json!(0)).await;
    let cases = [
        (json!({"status": "gone"}), "status"),
        (json!({"status": null}), "status"),
        (json!({"limits": {"velocity": {"count": 0, "window_seconds": 60}}}), "limits.velocity.count"),
        (json!({"limits": {"velocity": {"count": 3, "window_seconds": 86401}}}), "limits.velocity.window_seconds"),
        (json!({"limits": {"max_payment": -1}}), "limits.max_payment"),
        (json!({"limits": {"daily_outflow": 9223372036854775808u64}}), "limits.daily_outflow"),
        (json!({"limits": {"daily_outflow": "100"}}), "limits.daily_outflow"),
    ];
    for (body, param) in cases {
        let a = patch(&client, &account, body.clone()).await;
        assert_eq!(a.status, 400, "{body}: {}", a.body);
        assert_eq!(a.body["error"]["param"], param, "{body}: {}", a.body);
    }
    let unknown = patch(&client, &account, json!({"limits": {"weekly": 5}})).await;
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    for missing in ["acct_00000000000000000000000000", "nope"] {
        assert_eq!(code(&patch(&client, missing, json!({"status": "frozen"})).await), (404, Some("resource_missing")));
    }
    // Nothing changed, nothing was audited.
    let a = client.get(&format!("/v1/accounts/{account}")).await;
    assert_eq!((a.body["status"].as_str(), &a.body["limits"]["velocity"]), (Some("active"), &Value::Null));
    assert_eq!(client.get(&format!("/v1/accounts/{account}/audit")).await.body["data"], json!([]));
}

async fn the_audit_lists_who_changed_what_and_when(backend: Backend) {
    let Some((client, _data)) = boot_limits(backend).await else { return };
    let account = client.account(json!(0)).await;
    patched(
        &client,
        &account,
        json!({"limits": {"daily_outflow": 1000, "velocity": {"count": 5, "window_seconds": 60}}}),
    )
    .await;
    patched(&client, &account, json!({"status": "frozen", "limits": {"daily_outflow": 2000}})).await;
    let cleared = patched(&client, &account, json!({"limits": null})).await;
    assert_eq!(cleared["limits"], json!({"max_payment": null, "daily_outflow": null, "velocity": null}));
    assert_eq!(cleared["status"], "frozen"); // absent: kept
    let audit = client.get(&format!("/v1/accounts/{account}/audit")).await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    let rows = audit.body["data"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[0]["before"],
        json!({"limits": {"max_payment": null, "daily_outflow": 2000, "velocity": {"count": 5, "window_seconds": 60}}})
    );
    assert_eq!(rows[0]["after"], json!({"limits": {"max_payment": null, "daily_outflow": null, "velocity": null}}));
    assert_eq!(rows[1]["before"], json!({"status": "active", "limits": {"daily_outflow": 1000}}));
    assert_eq!(rows[1]["after"], json!({"status": "frozen", "limits": {"daily_outflow": 2000}}));
    assert_eq!(rows[2]["before"], json!({"limits": {"daily_outflow": null, "velocity": null}}));
    for row in rows {
        assert_eq!(row["object"], "account_audit_entry");
        assert_eq!(row["account"], account.as_str());
        assert!(row["actor"].as_str().unwrap().starts_with("key_"), "{row}");
    }
    assert!(rows[0]["created_at"].as_str() > rows[1]["created_at"].as_str());
    // Pages.
    let first = client.get(&format!("/v1/accounts/{account}/audit?limit=2")).await;
    assert_eq!((first.body["data"].as_array().unwrap().len(), &first.body["has_more"]), (2, &json!(true)));
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = client.get(&format!("/v1/accounts/{account}/audit?limit=2&starting_after={cursor}")).await;
    assert_eq!(second.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(second.body["data"][0], rows[2]);
    assert_eq!(client.get(&format!("/v1/accounts/{account}/audit?limit=0")).await.status, 400);
}

async fn another_tenants_account_is_missing(backend: Backend) {
    let Some((admin, _data)) = boot_limits(backend).await else { return };
    let account = admin.account(json!(0)).await;
    let tenant = admin.post("/v1/tenants", json!({"name": "other"})).await.body["id"].as_str().unwrap().to_owned();
    let key = admin.post("/v1/api_keys", json!({"tenant": tenant, "scopes": ["read", "write"]})).await;
    let other = admin.with_key(key.body["secret"].as_str().unwrap());
    assert_eq!(code(&patch(&other, &account, json!({"status": "frozen"})).await), (404, Some("resource_missing")));
    assert_eq!(other.get(&format!("/v1/accounts/{account}/audit")).await.status, 404);
    assert_eq!(admin.get(&format!("/v1/accounts/{account}")).await.body["status"], "active");
    // The other tenant's own change names its key as the actor.
    let own = other.account(json!(0)).await;
    patched(&other, &own, json!({"limits": {"max_payment": 1}})).await;
    let audit = other.get(&format!("/v1/accounts/{own}/audit")).await;
    assert_eq!(audit.body["data"][0]["actor"], key.body["id"]);
}

async fn limits_survive_a_restart_rebuilt_from_the_transfers(backend: Backend) {
    let Some(data) = common::Data::new(backend) else { return };
    let config = common::config(&data, KEY);
    let start = |config: &paycore_server::Config| {
        let config = config.clone();
        async move {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let (base, task) = common::serve(&config, async move {
                let _ = stopped.await;
            })
            .await;
            (Client { base, http: reqwest::Client::new(), key: KEY.to_owned() }, stop, task)
        }
    };
    let (client, stop, task) = start(&config).await;
    let (_, payer, payee) = client.parties(5_000).await;
    patched(
        &client,
        &payer,
        json!({"limits": {"daily_outflow": 1000, "velocity": {"count": 2, "window_seconds": 3600}}}),
    )
    .await;
    assert_eq!(client.transfer(&payer, &payee, 600).await.status, 201);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    let (client, stop, task) = start(&config).await;
    let over = client.transfer(&payer, &payee, 401).await;
    assert_eq!(code(&over), (422, Some("limit_exceeded")), "{}", over.body);
    assert_eq!(over.body["error"]["limit"]["remaining"], 400);
    assert_eq!(client.transfer(&payer, &payee, 300).await.status, 201);
    // Two debits in the hour, one of them before the restart: the window was rebuilt too.
    assert_eq!(code(&client.transfer(&payer, &payee, 50).await), (422, Some("velocity_exceeded")));
    assert_eq!(client.balance(&payer).await["posted"], 4_100);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    verify_passes(&data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_the_new_routes() {
    let (client, _data) = common::boot(KEY, |_| {}).await;
    let doc = client.get("/openapi.json").await.body;
    let patch = &doc["paths"]["/v1/accounts/{id}"]["patch"];
    assert_eq!(
        patch["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/UpdateAccount"
    );
    for status in ["200", "400", "404", "409", "422"] {
        assert!(patch["responses"][status].is_object(), "PATCH {status}");
    }
    assert!(doc["paths"]["/v1/accounts/{id}/audit"]["get"]["responses"]["200"].is_object());
    for schema in ["UpdateAccount", "UpdateLimits", "VelocityJson", "LimitsJson", "AuditEntryJson", "LimitDetail"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    let account = &doc["components"]["schemas"]["AccountJson"]["properties"];
    assert!(account["status"].is_object() && account["limits"].is_object());
}

async fn batch_items_get_the_same_codes(backend: Backend) {
    let Some((client, data)) = boot_limits(backend).await else { return };
    let payer = client.post("/v1/accounts", json!({"currency": "EUR", "reference": "PAYER-LIMITED"})).await;
    let payer = payer.body["id"].as_str().unwrap().to_owned();
    let funding = client.account(json!("unlimited")).await;
    assert_eq!(client.transfer(&funding, &payer, 5_000).await.status, 201);
    patched(&client, &payer, json!({"limits": {"daily_outflow": 1000}})).await;
    let payee = client.account(json!(0)).await;
    let closed = client.account(json!(0)).await;
    patched(&client, &closed, json!({"status": "closed"})).await;
    let csv = format!(
        "payee,amount,currency,reference\n{payee},4.00,EUR,r1\n{payee},4.00,EUR,r2\n{payee},4.00,EUR,r3\n{closed},1.00,EUR,r4\n"
    );
    let request = client
        .http
        .post(format!("{}/v1/batches?payer=PAYER-LIMITED", client.base))
        .header("content-type", "text/csv")
        .body(csv);
    let answer = client.send_as_key(request).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.body["id"].as_str().unwrap().to_owned();
    let mut batch = Value::Null;
    for _ in 0..400 {
        batch = client.get(&format!("/v1/batches/{id}")).await.body;
        if !matches!(batch["status"].as_str(), Some("validating" | "processing")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(batch["status"], "completed", "{batch}");
    let items = client.get(&format!("/v1/batches/{id}/items")).await.body;
    let results: Vec<(&str, Option<&str>)> = items["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["status"].as_str().unwrap(), i["failure_code"].as_str()))
        .collect();
    assert_eq!(
        results,
        [
            ("succeeded", None),
            ("succeeded", None),
            ("failed", Some("limit_exceeded")),
            ("failed", Some("account_closed"))
        ]
    );
    assert_eq!(client.balance(&payer).await["posted"], 4_200);
    verify_passes(&data).await;
}
