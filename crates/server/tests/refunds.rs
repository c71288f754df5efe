//! Batch refunds end to end, on both stores: payments succeed, then a refunds file
//! (`format=refunds`, `payment,amount,reason`) refunds them line by line through the ledger's
//! refund, with the rules of `POST /v1/payments/{id}/refunds`: balances after, each payment's
//! refunded amount, its refunds and `payment.refunded` events, item statuses and codes, and the
//! report's bytes. An upload repeated with its `Idempotency-Key` refunds nothing twice, and
//! `verify` finds the store consistent after.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{on_both_backends, Answer, Backend, Client};
use paycore_ledger::{EventKind, PaymentId};
use serde_json::{json, Value};
use std::time::Duration;

const KEY: &str = "sk_test_refunds_0123456789abcdefghijklmno";

on_both_backends!(
    a_refunds_file_refunds_each_line_with_the_rules_of_the_api,
    a_refunds_file_with_an_invalid_line_is_rejected_whole_unless_skipped,
    refunds_upload_parameters_are_checked_before_the_body
);

async fn upload(client: &Client, query: &str, key: &str, body: &str) -> Answer {
    let request = client
        .http
        .post(format!("{}/v1/batches?{query}", client.base))
        .header("content-type", "text/csv")
        .header("Idempotency-Key", key)
        .body(body.to_owned());
    client.send_as_key(request).await
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

/// A payment of `amount` from `payer` to `payee`, confirmed: `succeeded`.
async fn paid(api: &Client, payer: &str, payee: &str, amount: u64) -> String {
    let id = api.payment(payer, payee, amount, json!({})).await;
    let confirmed = api.post(&format!("/v1/payments/{id}/confirm"), json!({})).await;
    assert_eq!(confirmed.body["status"], "succeeded", "{}", confirmed.body);
    id
}

/// The items as `(line, status, failure_code, amount)`.
async fn items(api: &Client, id: &str) -> Vec<(u64, String, Option<String>, Option<u64>)> {
    let listed = api.get(&format!("/v1/batches/{id}/items?limit=100")).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item["line"].as_u64().unwrap(),
                item["status"].as_str().unwrap().to_owned(),
                item["failure_code"].as_str().map(str::to_owned),
                item["amount"].as_u64(),
            )
        })
        .collect()
}

fn counts(batch: &Value) -> (u64, u64, u64, u64) {
    let c = &batch["counts"];
    let n = |k: &str| c[k].as_u64().unwrap();
    (n("total"), n("succeeded"), n("failed"), n("invalid"))
}

async fn refunded(api: &Client, payment: &str) -> u64 {
    let p = api.get(&format!("/v1/payments/{payment}")).await;
    assert_eq!(p.status, 200, "{}", p.body);
    p.body["amount_refunded"].as_u64().unwrap()
}

async fn posted(api: &Client, account: &str) -> i64 {
    api.balance(account).await["posted"].as_i64().unwrap()
}

/// The `payment.refunded` events in the outbox, by payment, in order.
async fn refund_events(data: &common::Data) -> Vec<String> {
    common::blocking(data, |store| {
        let mut events = Vec::new();
        let mut seq = 1;
        while let Some(event) = store.outbox_event(seq).unwrap() {
            if event.kind == EventKind::PaymentRefunded {
                events.push(PaymentId(event.object).to_string());
            }
            seq += 1;
        }
        events
    })
    .await
}

async fn a_refunds_file_refunds_each_line_with_the_rules_of_the_api(backend: Backend) {
    let Some((api, data)) = common::boot_on(backend, KEY, |_| {}).await else { return };
    let (_, customer, shop) = api.parties(100_000).await;
    let (whole, part, twice, over) = (
        paid(&api, &customer, &shop, 5_000).await,
        paid(&api, &customer, &shop, 4_000).await,
        paid(&api, &customer, &shop, 3_000).await,
        paid(&api, &customer, &shop, 1_000).await,
    );
    // One refund through the API first: the file's lines count it.
    let first = api.post(&format!("/v1/payments/{over}/refunds"), json!({"amount": 600, "reason": "first"})).await;
    assert_eq!((first.status, first.body["reason"].as_str()), (201, Some("first")), "{}", first.body);
    assert_eq!((posted(&api, &customer).await, posted(&api, &shop).await), (87_600, 12_400));
    let unknown = PaymentId(12_345).to_string();
    // Lines: all of `whole` (empty amount); 15.00 of `part`; `twice` in two lines that fit;
    // an unknown payment; more than `over` has left; a third line for `twice` that no longer fits.
    let file = format!(
        "payment,amount,reason\n\
         {whole},,damaged\n\
         {part},15.00,one of two items\n\
         {twice},10.00,\n\
         {twice},20.00,rest of the order\n\
         {unknown},1.00,typo\n\
         {over},4.01,too much\n\
         {twice},0.01,\n"
    );
    let taken = upload(&api, "format=refunds&on_invalid=skip_invalid&expected_count=7", "refunds-1", &file).await;
    assert_eq!(taken.status, 202, "{}", taken.body);
    let id = taken.body["id"].as_str().unwrap().to_owned();
    let batch = wait_batch(&api, &id).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(batch["format"], "refunds", "{batch}");
    assert_eq!(counts(&batch), (7, 4, 0, 3), "{batch}");

    let some = |code: &str| Some(code.to_owned());
    let expected = vec![
        (2, "succeeded".to_owned(), None, Some(5_000)),
        (3, "succeeded".to_owned(), None, Some(1_500)),
        (4, "succeeded".to_owned(), None, Some(1_000)),
        (5, "succeeded".to_owned(), None, Some(2_000)),
        (6, "invalid".to_owned(), some("payment_not_found"), None),
        (7, "invalid".to_owned(), some("amount_exceeds_refundable"), Some(401)),
        (8, "invalid".to_owned(), some("amount_exceeds_refundable"), Some(1)),
    ];
    assert_eq!(items(&api, &id).await, expected);
    let listed = api.get(&format!("/v1/batches/{id}/items?limit=100")).await.body;
    let messages: Vec<&str> = listed["data"].as_array().unwrap().iter().filter_map(|i| i["message"].as_str()).collect();
    assert_eq!(
        messages,
        [
            format!("payment: no payment {unknown}"),
            format!("amount: 4.01 is more than the 4.00 left to refund on {over}"),
            format!(
                "payment: {twice} has nothing left to refund after the 30.00 the file's earlier rows for it refund"
            ),
        ]
    );

    // Money: 95.00 back from the shop to the customer, and each payment's refunded amount.
    assert_eq!((posted(&api, &customer).await, posted(&api, &shop).await), (97_100, 2_900));
    assert_eq!(refunded(&api, &whole).await, 5_000);
    assert_eq!(refunded(&api, &part).await, 1_500);
    assert_eq!(refunded(&api, &twice).await, 3_000);
    assert_eq!(refunded(&api, &over).await, 600);
    // Each refund is the payment's, with its reason, as the API's are.
    let refunds = api.get(&format!("/v1/payments/{twice}/refunds")).await.body;
    let made: Vec<(u64, &str, Option<&str>)> = refunds["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["amount"].as_u64().unwrap(), r["status"].as_str().unwrap(), r["reason"].as_str()))
        .collect();
    assert_eq!(made, [(1_000, "succeeded", None), (2_000, "succeeded", Some("rest of the order"))]);
    let of_whole = api.get(&format!("/v1/payments/{whole}/refunds")).await.body;
    assert_eq!(of_whole["data"][0]["reason"], "damaged");
    // `payment.refunded` for each refund, the API's first.
    assert_eq!(refund_events(&data).await, [over.clone(), whole.clone(), part.clone(), twice.clone(), twice.clone()]);

    let report = api.get(&format!("/v1/batches/{id}/report")).await;
    assert_eq!(report.status, 200);
    assert_eq!(
        String::from_utf8(report.bytes).unwrap(),
        format!(
            "line,reference,payer,payee,amount,currency,status,failure_code\n\
             2,{whole},{shop},{customer},50.00,EUR,succeeded,\n\
             3,{part},{shop},{customer},15.00,EUR,succeeded,\n\
             4,{twice},{shop},{customer},10.00,EUR,succeeded,\n\
             5,{twice},{shop},{customer},20.00,EUR,succeeded,\n\
             6,{unknown},,,,,failed,payment_not_found\n\
             7,{over},{shop},{customer},4.01,EUR,failed,amount_exceeds_refundable\n\
             8,{twice},{shop},{customer},0.01,EUR,failed,amount_exceeds_refundable\n"
        )
    );

    // The same upload again with its key: the same batch, nothing refunded twice.
    let again = upload(&api, "format=refunds&on_invalid=skip_invalid&expected_count=7", "refunds-1", &file).await;
    assert_eq!((again.status, again.body["id"].as_str()), (202, Some(id.as_str())), "{}", again.body);
    assert!(again.replayed);
    // A new upload of what is left of `part`: refunds it; the engine checks again at that moment.
    let rest = upload(&api, "format=refunds", "refunds-2", &format!("payment\n{part}\n")).await;
    assert_eq!(rest.status, 202, "{}", rest.body);
    let rest_id = rest.body["id"].as_str().unwrap().to_owned();
    assert_eq!(counts(&wait_batch(&api, &rest_id).await), (1, 1, 0, 0));
    assert_eq!(refunded(&api, &part).await, 4_000);
    assert_eq!((posted(&api, &customer).await, posted(&api, &shop).await), (99_600, 400));
    assert_eq!(refund_events(&data).await.len(), 6);
    // `paycore verify` finds the refunds, the payments and the batch items consistent.
    let report = common::blocking(&data, |store| paycore_store::verify::verify(store).unwrap()).await;
    assert!(report.ok(), "{:?}", report.problems);
}

async fn a_refunds_file_with_an_invalid_line_is_rejected_whole_unless_skipped(backend: Backend) {
    let Some((api, _data)) = common::boot_on(backend, KEY, |_| {}).await else { return };
    let (_, customer, shop) = api.parties(10_000).await;
    let payment = paid(&api, &customer, &shop, 2_000).await;
    let pending = api.payment(&customer, &shop, 500, json!({})).await;
    // Another tenant's payment is not found, as through the API.
    let admin_tenant = api.post("/v1/tenants", json!({"name": "Other"})).await;
    assert_eq!(admin_tenant.status, 201, "{}", admin_tenant.body);
    let key = api.post("/v1/api_keys", json!({"tenant": admin_tenant.body["id"], "scopes": ["read", "write"]})).await;
    let other = api.with_key(key.body["secret"].as_str().unwrap());
    let (_, other_customer, other_shop) = other.parties(1_000).await;
    let theirs = paid(&other, &other_customer, &other_shop, 100).await;

    let file = format!(
        "payment,amount,reason\n{payment},1.001,\n{theirs},1.00,\n{pending},,\n{payment},5.00,fine\nnot-a-payment,1,\n"
    );
    let taken = upload(&api, "format=refunds&expected_total=5.00", "rejected-1", &file).await;
    assert_eq!(taken.status, 202, "{}", taken.body);
    let batch = wait_batch(&api, taken.body["id"].as_str().unwrap()).await;
    assert_eq!(batch["status"], "rejected", "{batch}");
    let errors: Vec<(u64, &str, &str)> = batch["rejection"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["code"].as_str().unwrap(), e["message"].as_str().unwrap()))
        .collect();
    let pending_message =
        format!("payment: {pending} is requires_confirmation; only a succeeded payment can be refunded");
    assert_eq!(
        errors,
        [
            (2, "too_many_decimals", "amount: amount \"1.001\" has 3 decimals but EUR allows at most 2"),
            (3, "payment_not_found", format!("payment: no payment {theirs}").as_str()),
            (4, "payment_not_refundable", pending_message.as_str()),
            (
                6,
                "invalid_id",
                "payment: payment \"not-a-payment\" is not a payment id; expected pay_ followed by the id"
            ),
        ],
        "{batch}"
    );
    assert_eq!(batch["rejection"]["code"], "invalid_items");
    assert_eq!((posted(&api, &customer).await, refunded(&api, &payment).await), (8_000, 0));
    assert_eq!(refunded(&other, &theirs).await, 0);

    // The control total counts the valid lines: 5.00 passes, 5.01 rejects the file.
    let skipped = upload(&api, "format=refunds&on_invalid=skip_invalid&expected_total=5.00", "skipped-1", &file).await;
    let batch = wait_batch(&api, skipped.body["id"].as_str().unwrap()).await;
    assert_eq!((batch["status"].as_str(), counts(&batch)), (Some("completed"), (5, 1, 0, 4)), "{batch}");
    assert_eq!((posted(&api, &customer).await, refunded(&api, &payment).await), (8_500, 500));
    let wrong = upload(&api, "format=refunds&on_invalid=skip_invalid&expected_total=5.01", "wrong-1", &file).await;
    let batch = wait_batch(&api, wrong.body["id"].as_str().unwrap()).await;
    assert_eq!(
        (batch["status"].as_str(), batch["rejection"]["code"].as_str()),
        (Some("rejected"), Some("control_total_mismatch"))
    );
    assert_eq!(refunded(&api, &payment).await, 500);
}

async fn refunds_upload_parameters_are_checked_before_the_body(backend: Backend) {
    let Some((api, _data)) = common::boot_on(backend, KEY, |_| {}).await else { return };
    let param = |a: &Answer| (a.status, a.body["error"]["code"].clone(), a.body["error"]["param"].clone());
    let atomic = upload(&api, "format=refunds&mode=atomic", "p-1", "payment\n").await;
    assert_eq!(param(&atomic), (400, json!("parameter_invalid"), json!("mode")), "{}", atomic.body);
    let payer = upload(&api, "format=refunds&payer=acct_1", "p-2", "payment\n").await;
    assert_eq!(param(&payer), (400, json!("parameter_invalid"), json!("payer")), "{}", payer.body);
    // A file without a payment column is rejected as malformed, naming the column.
    let taken = upload(&api, "format=refunds", "p-3", "amount,reason\n1.00,x\n").await;
    assert_eq!(taken.status, 202, "{}", taken.body);
    let batch = wait_batch(&api, taken.body["id"].as_str().unwrap()).await;
    assert_eq!(batch["rejection"]["code"], "malformed_file", "{batch}");
    assert!(batch["rejection"]["message"].as_str().unwrap().contains("payment"), "{batch}");
    // The API's refund takes a reason with the same rule.
    let (_, customer, shop) = api.parties(1_000).await;
    let payment = paid(&api, &customer, &shop, 100).await;
    let long = api.post(&format!("/v1/payments/{payment}/refunds"), json!({"reason": "x".repeat(141)})).await;
    assert_eq!(param(&long), (400, json!("parameter_invalid"), json!("reason")), "{}", long.body);
}
