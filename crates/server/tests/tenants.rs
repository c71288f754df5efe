//! Tenants and API keys: an admin key makes tenants and their keys; two tenants try to read
//! and move each other's money through every endpoint and get 404 `resource_missing` for
//! another tenant's object named in the path, and `account_not_found` for another tenant's
//! account named in a body, with every balance unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{on_both_backends, Answer, Backend, Client};
use serde_json::{json, Value};
use std::time::Duration;

on_both_backends!(tenants_cannot_read_or_move_each_others_money);

const ADMIN: &str = "sk_test_admin_0123456789abcdefghijklmnopqr";

/// A new tenant and a read/write key for it.
async fn tenant(admin: &Client, name: &str) -> (String, Client) {
    let t = admin.post("/v1/tenants", json!({"name": name})).await;
    assert_eq!(t.status, 201, "{}", t.body);
    assert_eq!(t.body["name"], name);
    let id = t.body["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ten_"));
    let k = admin.post("/v1/api_keys", json!({"tenant": id, "scopes": ["read", "write"]})).await;
    assert_eq!(k.status, 201, "{}", k.body);
    assert_eq!(k.body["tenant"], id.as_str());
    let secret = k.body["secret"].as_str().unwrap();
    assert!(secret.starts_with("sk_"));
    (id, admin.with_key(secret))
}

async fn batch(client: &Client, payer: &str, payee: &str) -> Answer {
    client
        .post(
            &format!("/v1/batches?payer={payer}&currency=EUR"),
            json!({"items": [{"payee": payee, "amount": 5, "reference": "B1"}]}),
        )
        .await
}

async fn wait_batch(client: &Client, id: &str) -> Value {
    for _ in 0..200 {
        let b = client.get(&format!("/v1/batches/{id}")).await;
        assert_eq!(b.status, 200, "{}", b.body);
        if !matches!(b.body["status"].as_str(), Some("validating" | "processing")) {
            return b.body;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("batch {id} did not finish");
}

/// The answer for an object of another tenant named in the path: the same as for an id that
/// does not exist (404 `resource_missing` on `id`), so it tells nothing of the object.
fn assert_missing(answer: &Answer, what: &str) {
    let error = &answer.body["error"];
    assert_eq!(
        (answer.status, error["code"].as_str(), error["param"].as_str()),
        (404, Some("resource_missing"), Some("id")),
        "{what}: {}",
        answer.body
    );
}

/// The answer for another tenant's account named in a request body: `status` with the code
/// `account_not_found` on `param` (no param for a transfer: it names the debit or the credit
/// account).
fn assert_account_not_found(answer: &Answer, status: u16, param: Option<&str>) {
    let error = &answer.body["error"];
    assert_eq!(
        (answer.status, error["code"].as_str(), error["param"].as_str()),
        (status, Some("account_not_found"), param),
        "{}",
        answer.body
    );
}

/// A batch naming another tenant's account (as payer or payee) is accepted for validation and
/// then rejected as a whole: its one item is invalid with `account_not_found` on `side`.
async fn assert_batch_rejected(client: &Client, accepted: &Answer, side: &str) {
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let done = wait_batch(client, accepted.body["id"].as_str().unwrap()).await;
    assert_ne!(done.body_succeeded(), Some(1), "{done}");
    assert_eq!((done["status"].as_str(), done.body_succeeded()), (Some("rejected"), Some(0)), "{done}");
    assert_eq!(done["counts"]["invalid"], 1, "{done}");
    let error = &done["rejection"]["errors"][0];
    assert_eq!(error["code"], "account_not_found", "{done}");
    let message = error["message"].as_str().unwrap();
    assert!(message.starts_with(&format!("{side}: no account")), "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_keys_make_tenants_and_keys_and_revoke_them() {
    let (admin, _dir) = common::boot(ADMIN, |_| {}).await;
    let (tenant_a, a) = tenant(&admin, "Alpha").await;

    // Tenant keys are not admin keys.
    let refused = a.post("/v1/tenants", json!({})).await;
    assert_eq!((refused.status, refused.body["error"]["code"].as_str()), (403, Some("insufficient_scope")));
    let refused = a.post("/v1/api_keys", json!({"tenant": tenant_a, "scopes": ["read"]})).await;
    assert_eq!(refused.status, 403);
    assert_eq!(a.delete("/v1/api_keys/key_00000000000000000000000000").await.status, 403);

    // Bad requests name the field.
    let bad = admin.post("/v1/api_keys", json!({"tenant": tenant_a, "scopes": ["root"]})).await;
    assert_eq!((bad.status, bad.body["error"]["param"].as_str()), (400, Some("scopes")));
    let bad = admin.post("/v1/api_keys", json!({"tenant": "ten_00000000000000000000000000", "scopes": ["read"]})).await;
    assert_eq!((bad.status, bad.body["error"]["param"].as_str()), (400, Some("tenant")));
    assert_eq!(admin.post("/v1/tenants", json!({"name": ""})).await.status, 400);

    // A read-only key reads but cannot write.
    let k = admin.post("/v1/api_keys", json!({"tenant": tenant_a, "scopes": ["read"]})).await;
    let reader = admin.with_key(k.body["secret"].as_str().unwrap());
    let account = a.account(json!(0)).await;
    assert_eq!(reader.get(&format!("/v1/accounts/{account}")).await.status, 200);
    let refused = reader.post("/v1/accounts", json!({"currency": "EUR"})).await;
    assert_eq!((refused.status, refused.body["error"]["code"].as_str()), (403, Some("insufficient_scope")));

    // Revoked means refused at once, even though the key was just used (and cached).
    let key_id = k.body["id"].as_str().unwrap();
    let revoked = admin.delete(&format!("/v1/api_keys/{key_id}")).await;
    assert_eq!((revoked.status, &revoked.body["revoked"]), (200, &json!(true)), "{}", revoked.body);
    assert_eq!(reader.get(&format!("/v1/accounts/{account}")).await.status, 401);
    assert_eq!(admin.delete("/v1/api_keys/key_nope").await.status, 404);
}

async fn tenants_cannot_read_or_move_each_others_money(backend: Backend) {
    let Some((admin, _data)) = common::boot_on(backend, ADMIN, |_| {}).await else { return };
    let (_, a) = tenant(&admin, "Alpha").await;
    let (_, b) = tenant(&admin, "Beta").await;

    // Tenant A: funded accounts, payments in every state, a finished batch.
    let a_funding = a.account(json!("unlimited")).await;
    let a_payer = a.account(json!(0)).await;
    let a_payee = a.account(json!(0)).await;
    assert_eq!(a.transfer(&a_funding, &a_payer, 10_000).await.body["result"], "ok");
    let a_open = a.payment(&a_payer, &a_payee, 100, json!({"capture_method": "automatic"})).await;
    let a_held = a.payment(&a_payer, &a_payee, 100, json!({"capture_method": "manual"})).await;
    assert_eq!(a.post(&format!("/v1/payments/{a_held}/confirm"), json!({})).await.body["status"], "requires_capture");
    let a_paid = a.payment(&a_payer, &a_payee, 100, json!({"capture_method": "automatic"})).await;
    assert_eq!(a.post(&format!("/v1/payments/{a_paid}/confirm"), json!({})).await.body["status"], "succeeded");
    let a_batch = batch(&a, &a_payer, &a_payee).await;
    assert_eq!(a_batch.status, 202, "{}", a_batch.body);
    let a_batch = a_batch.body["id"].as_str().unwrap().to_owned();
    wait_batch(&a, &a_batch).await;

    // Tenant B: its own funded account.
    let b_funding = b.account(json!("unlimited")).await;
    let b_account = b.account(json!(0)).await;
    assert_eq!(b.transfer(&b_funding, &b_account, 500).await.body["result"], "ok");

    let accounts = [&a_funding, &a_payer, &a_payee, &b_funding, &b_account];
    let mut before = Vec::new();
    for id in accounts {
        let owner = if id.as_str() == b_funding || id.as_str() == b_account { &b } else { &a };
        before.push(owner.balance(id).await);
    }

    // Reads: accounts, their transfers, payments, refunds, batches, items, report.
    assert_missing(&b.get(&format!("/v1/accounts/{a_payer}")).await, "account");
    assert_missing(&b.get(&format!("/v1/accounts/{a_payer}/transfers")).await, "transfers");
    for pay in [&a_open, &a_held, &a_paid] {
        assert_missing(&b.get(&format!("/v1/payments/{pay}")).await, "payment");
        assert_missing(&b.get(&format!("/v1/payments/{pay}/refunds")).await, "refunds");
    }
    assert_missing(&b.get(&format!("/v1/batches/{a_batch}")).await, "batch");
    assert_missing(&b.get(&format!("/v1/batches/{a_batch}/items")).await, "batch items");
    assert_missing(&b.get(&format!("/v1/batches/{a_batch}/report")).await, "batch report");
    assert_missing(&b.get(&format!("/v1/batches/{a_batch}/report?format=pain.002")).await, "pain.002");

    // Writes: transfers from, to and between A's accounts.
    for (debit, credit) in [(&a_payer, &b_account), (&b_funding, &a_payee), (&a_funding, &a_payee)] {
        let t = b.transfer(debit, credit, 100).await;
        let code = t.body["result"].as_str().or(t.body["error"]["code"].as_str());
        assert_eq!(code, Some("account_not_found"), "{}", t.body);
        assert_account_not_found(&t, 422, None);
    }
    let bulk = b
        .post("/v1/transfers", json!({"transfers": [{"debit_account": a_payer, "credit_account": b_account, "amount": 1, "currency": "EUR"}]}))
        .await;
    // A bulk request answers 200 with one result per item.
    assert_eq!(bulk.status, 200, "{}", bulk.body);
    let results = bulk.body["data"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{}", bulk.body);
    assert_eq!(
        (&results[0]["index"], &results[0]["result"]),
        (&json!(0), &json!("account_not_found")),
        "{}",
        bulk.body
    );
    assert!(!bulk.body.to_string().contains("\"ok\""), "{}", bulk.body);
    // Payments: naming A's accounts, and acting on A's payments.
    for (payer, payee, param) in [(&a_payer, &b_account, "payer_account"), (&b_account, &a_payee, "payee_account")] {
        let body = json!({"payer_account": payer, "payee_account": payee, "amount": 100, "currency": "EUR"});
        assert_account_not_found(&b.post("/v1/payments", body).await, 400, Some(param));
    }
    assert_missing(&b.post(&format!("/v1/payments/{a_open}/confirm"), json!({})).await, "confirm");
    assert_missing(&b.post(&format!("/v1/payments/{a_held}/capture"), json!({})).await, "capture");
    assert_missing(&b.post(&format!("/v1/payments/{a_held}/cancel"), json!({})).await, "cancel");
    assert_missing(&b.post(&format!("/v1/payments/{a_open}/cancel"), json!({})).await, "cancel");
    assert_missing(&b.post(&format!("/v1/payments/{a_paid}/refunds"), json!({"amount": 50})).await, "refund");
    // Batches: cancelling A's, and paying from A's account.
    assert_missing(&b.post(&format!("/v1/batches/{a_batch}/cancel"), json!({})).await, "batch cancel");
    assert_batch_rejected(&b, &batch(&b, &a_payer, &b_account).await, "payer").await;
    assert_batch_rejected(&b, &batch(&b, &b_account, &a_payee).await, "payee").await;

    for (id, was) in accounts.iter().zip(&before) {
        let owner = if id.as_str() == b_funding || id.as_str() == b_account { &b } else { &a };
        assert_eq!(&owner.balance(id).await, was, "balance of {id} changed");
    }

    // Webhooks: A's endpoint, its delivery log and its deliveries are A's alone. (A's own
    // payment below moves A's money; balances are taken again after it.)
    let endpoint = a
        .post("/v1/webhook_endpoints", json!({"url": "http://127.0.0.1:9/hook", "events": ["payment.succeeded"]}))
        .await;
    assert_eq!(endpoint.status, 201, "{}", endpoint.body);
    let endpoint = endpoint.body["id"].as_str().unwrap().to_owned();
    let listed = b.get("/v1/webhook_endpoints").await;
    assert_eq!((listed.status, &listed.body["data"]), (200, &json!([])), "{}", listed.body);
    assert_missing(&b.get(&format!("/v1/webhook_endpoints/{endpoint}/deliveries")).await, "deliveries");
    assert_missing(&b.delete(&format!("/v1/webhook_endpoints/{endpoint}")).await, "endpoint delete");
    let a_pay = a.payment(&a_payer, &a_payee, 100, json!({"capture_method": "automatic"})).await;
    assert_eq!(a.post(&format!("/v1/payments/{a_pay}/confirm"), json!({})).await.body["status"], "succeeded");
    let mut delivery = None;
    for _ in 0..100 {
        let log = a.get(&format!("/v1/webhook_endpoints/{endpoint}/deliveries")).await;
        if let Some(id) = log.body["data"][0]["id"].as_str() {
            delivery = Some(id.to_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let delivery = delivery.expect("no delivery logged");
    assert_missing(&b.post(&format!("/v1/webhook_deliveries/{delivery}/replay"), json!({})).await, "replay");
    assert_eq!(a.post(&format!("/v1/webhook_deliveries/{delivery}/replay"), json!({})).await.status, 202);
    assert_eq!(a.get("/v1/webhook_endpoints").await.body["data"][0]["id"], endpoint.as_str());
    for id in [&a_funding, &a_payer, &a_payee] {
        before[accounts.iter().position(|x| x == &id).unwrap()] = a.balance(id).await;
    }

    // A's objects are untouched: the same statuses, the same balances.
    assert_eq!(a.get(&format!("/v1/payments/{a_open}")).await.body["status"], "requires_confirmation");
    assert_eq!(a.get(&format!("/v1/payments/{a_held}")).await.body["status"], "requires_capture");
    assert_eq!(a.get(&format!("/v1/payments/{a_paid}")).await.body["amount_refunded"], 0);
    for (id, was) in accounts.iter().zip(&before) {
        let owner = if id.as_str() == b_funding || id.as_str() == b_account { &b } else { &a };
        assert_eq!(&owner.balance(id).await, was, "balance of {id} changed");
    }
}

trait Succeeded {
    fn body_succeeded(&self) -> Option<u64>;
}

impl Succeeded for Value {
    /// The batch's count of succeeded items.
    fn body_succeeded(&self) -> Option<u64> {
        self["counts"]["succeeded"].as_u64().or_else(|| self["succeeded"].as_u64())
    }
}
