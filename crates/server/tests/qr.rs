//! Scan to pay: a payment made with only a payee carries an EMVCo QR payload; its PNG is read
//! back by an independent decoder (`zbarimg`, Debian's zbar-tools); a scan binds the payer and
//! pays in one step; a changed, expired, spent, foreign or wrong-currency code moves nothing.
//! On both stores.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{blocking, boot_on, on_both_backends, Backend, Client, Data};
use paycore_formats::emvco;
use serde_json::{json, Value};

on_both_backends!(
    a_scan_pays_a_payment_made_without_a_payer,
    a_changed_code_is_refused_and_nothing_moves,
    an_expired_code_is_refused_clearly,
    a_code_pays_once,
    the_payer_must_hold_the_payments_currency,
    another_tenants_payment_is_missing,
    merchant_fields_are_checked,
);

const KEY: &str = "sk_test_qr_0123456789abcdefghijklmnopqrstu";

async fn start(backend: Backend) -> Option<(Client, Data)> {
    boot_on(backend, KEY, |_| {}).await
}

/// A payment of `amount` EUR to `payee` without a payer; its JSON.
async fn till(client: &Client, payee: &str, amount: u64, extra: Value) -> Value {
    let mut body = json!({"payee_account": payee, "amount": amount, "currency": "EUR"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let p = client.post("/v1/payments", body).await;
    assert_eq!(p.status, 201, "{}", p.body);
    assert_eq!((p.body["status"].as_str(), &p.body["payer_account"]), (Some("requires_confirmation"), &Value::Null));
    p.body
}

async fn scan(client: &Client, payload: &str, payer: &str) -> common::Answer {
    client.post("/v1/payments/scan", json!({"payload": payload, "payer_account": payer})).await
}

fn error(answer: &common::Answer) -> (u16, &str, &str) {
    (
        answer.status,
        answer.body["error"]["code"].as_str().unwrap_or(""),
        answer.body["error"]["param"].as_str().unwrap_or(""),
    )
}

async fn posted(client: &Client, account: &str) -> i64 {
    client.balance(account).await["posted"].as_i64().unwrap()
}

async fn verify_passes(data: &Data) {
    let report = blocking(data, |store| paycore_store::verify::verify(store).unwrap()).await;
    assert!(report.ok(), "{:?}", report.problems);
}

/// The text of the QR code in `png`, as `zbarimg` reads it; `None` (after a loud line) when
/// zbarimg is not installed, except under `CI=true`, where that fails.
fn zbar_decode(png: &[u8]) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("code.png");
    std::fs::write(&path, png).unwrap();
    let output = match std::process::Command::new("zbarimg").args(["--raw", "--quiet", "-Sbinary"]).arg(&path).output()
    {
        Ok(output) => output,
        Err(error) => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "zbarimg is needed under CI=true: {error}");
            eprintln!("SKIPPED: the PNG decode check: zbarimg (Debian's zbar-tools) is not installed ({error})");
            return None;
        }
    };
    assert!(output.status.success(), "zbarimg failed: {}", String::from_utf8_lossy(&output.stderr));
    Some(String::from_utf8(output.stdout).unwrap().trim_end_matches('\n').to_owned())
}

async fn a_scan_pays_a_payment_made_without_a_payer(backend: Backend) {
    let Some((client, data)) = start(backend).await else { return };
    let (_, payer, payee) = client.parties(10_000).await;
    let merchant = json!({"name": "Cafe de Flore", "city": "Paris", "country": "FR", "category_code": "5812"});
    let payment = till(&client, &payee, 1250, json!({"merchant": merchant, "description": "2 cafes"})).await;
    let id = payment["id"].as_str().unwrap();
    let payload = payment["qr_payload"].as_str().unwrap().to_owned();

    // The payload is EMVCo: its fields name this payment, exactly.
    let decoded = emvco::decode(&payload).unwrap();
    assert_eq!(decoded.payment, id);
    assert_eq!((decoded.currency, decoded.amount.as_str()), (978, "12.50"));
    assert_eq!((decoded.merchant_name.as_str(), decoded.merchant_city.as_str()), ("Cafe de Flore", "Paris"));
    assert_eq!((decoded.country.as_str(), decoded.category_code.as_str()), ("FR", "5812"));
    let (body, crc) = payload.split_at(payload.len() - 4);
    assert!(body.starts_with("000201010212") && body.ends_with("6304"), "{payload}");
    assert_eq!(format!("{:04X}", emvco::crc16(body.as_bytes())), crc);
    assert_eq!(client.get(&format!("/v1/payments/{id}")).await.body["qr_payload"].as_str(), Some(payload.as_str()));

    // The images: an SVG, and a PNG that an independent decoder reads back to the payload.
    let http = &client.http;
    let image =
        |format: &str| http.get(format!("{}/v1/payments/{id}/qr?format={format}", client.base)).bearer_auth(KEY);
    let svg = http.execute(image("svg").build().unwrap()).await.unwrap();
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    let svg = svg.text().await.unwrap();
    assert!(svg.contains("<svg") && svg.contains("<path"), "{svg}");
    let png = http.execute(image("png").build().unwrap()).await.unwrap();
    assert_eq!((png.status().as_u16(), png.headers()["content-type"].to_str().unwrap()), (200, "image/png"));
    let png = png.bytes().await.unwrap().to_vec();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    if let Some(read) = zbar_decode(&png) {
        assert_eq!(read, payload, "zbarimg reads the payload back");
        let (body, crc) = read.split_at(read.len() - 4);
        assert_eq!(format!("{:04X}", emvco::crc16(body.as_bytes())), crc, "its CRC checks");
    }
    let default = client.get(&format!("/v1/payments/{id}/qr")).await;
    assert_eq!((default.status, default.bytes.starts_with(b"<?xml")), (200, true));
    let bad = client.get(&format!("/v1/payments/{id}/qr?format=gif")).await;
    assert_eq!(error(&bad), (400, "parameter_invalid", "format"));

    // A plain confirm cannot pay it: only a scan names the payer.
    let confirm = client.post(&format!("/v1/payments/{id}/confirm"), json!({})).await;
    assert_eq!(error(&confirm), (409, "payer_required", ""));

    let paid = scan(&client, &payload, &payer).await;
    assert_eq!(paid.status, 200, "{}", paid.body);
    assert_eq!(
        (paid.body["status"].as_str(), paid.body["payer_account"].as_str(), &paid.body["qr_payload"]),
        (Some("succeeded"), Some(payer.as_str()), &Value::Null)
    );
    assert_eq!((posted(&client, &payer).await, posted(&client, &payee).await), (10_000 - 1250, 1250));
    let stored = client.get(&format!("/v1/payments/{id}")).await;
    assert_eq!(
        (stored.body["status"].as_str(), stored.body["payer_account"].as_str()),
        (Some("succeeded"), Some(payer.as_str()))
    );
    let gone = client.get(&format!("/v1/payments/{id}/qr?format=png")).await;
    assert_eq!(error(&gone), (409, "payment_unexpected_state", ""));

    // Refunds go back to the payer the scan bound.
    let refund = client.post(&format!("/v1/payments/{id}/refunds"), json!({"amount": 250})).await;
    assert_eq!((refund.status, refund.body["status"].as_str()), (201, Some("succeeded")), "{}", refund.body);
    assert_eq!((posted(&client, &payer).await, posted(&client, &payee).await), (10_000 - 1000, 1000));
    verify_passes(&data).await;
}

async fn a_changed_code_is_refused_and_nothing_moves(backend: Backend) {
    let Some((client, data)) = start(backend).await else { return };
    let (_, payer, payee) = client.parties(10_000).await;
    let payment = till(&client, &payee, 1250, json!({})).await;
    let payload = payment["qr_payload"].as_str().unwrap();

    // One character changed (the amount), the CRC left as it was.
    let tampered = payload.replacen("12.50", "02.50", 1);
    assert_ne!(tampered, payload);
    let refused = scan(&client, &tampered, &payer).await;
    assert_eq!(error(&refused), (400, "qr_crc_mismatch", "payload"));
    // A code rebuilt with a matching CRC but another amount names the payment wrongly.
    let mut forged = emvco::decode(payload).unwrap();
    forged.amount = "0.01".to_owned();
    let refused = scan(&client, &emvco::encode(&forged), &payer).await;
    assert_eq!(error(&refused), (400, "qr_mismatch", "payload"));
    for junk in ["", "hello", "000201", &payload[..payload.len() - 1]] {
        let refused = scan(&client, junk, &payer).await;
        assert_eq!(refused.status, 400, "{junk}: {}", refused.body);
        assert_eq!(refused.body["error"]["param"], "payload");
    }
    assert_eq!((posted(&client, &payer).await, posted(&client, &payee).await), (10_000, 0));
    let open = client.get(&format!("/v1/payments/{}", payment["id"].as_str().unwrap())).await;
    assert_eq!(
        (open.body["status"].as_str(), &open.body["payer_account"]),
        (Some("requires_confirmation"), &Value::Null)
    );
    verify_passes(&data).await;
}

async fn an_expired_code_is_refused_clearly(backend: Backend) {
    let Some((client, _data)) = start(backend).await else { return };
    let (_, payer, payee) = client.parties(10_000).await;
    let payment = till(&client, &payee, 500, json!({"expires_in_seconds": 1})).await;
    let payload = payment["qr_payload"].as_str().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let refused = scan(&client, payload, &payer).await;
    // Expired at the engine's deadline, or by the scan's own batch: 409 either way.
    assert_eq!(refused.status, 409, "{}", refused.body);
    let code = refused.body["error"]["code"].as_str().unwrap();
    assert!(code == "payment_expired" || code == "payment_unexpected_state", "{}", refused.body);
    assert!(refused.body["error"]["message"].as_str().unwrap().contains("expired"), "{}", refused.body);
    let again = scan(&client, payload, &payer).await;
    assert_eq!(error(&again), (409, "payment_expired", "payload"));
    assert_eq!((posted(&client, &payer).await, posted(&client, &payee).await), (10_000, 0));
}

async fn a_code_pays_once(backend: Backend) {
    let Some((client, _data)) = start(backend).await else { return };
    let (funding, payer, payee) = client.parties(10_000).await;
    let payment = till(&client, &payee, 700, json!({})).await;
    let payload = payment["qr_payload"].as_str().unwrap().to_owned();

    // Two payers scan at once: exactly one pays.
    let (first, second) = tokio::join!(scan(&client, &payload, &payer), scan(&client, &payload, &funding));
    let mut statuses = [first.status, second.status];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{} / {}", first.body, second.body);
    let loser = if first.status == 409 { &first } else { &second };
    assert_eq!(loser.body["error"]["code"], "payment_unexpected_state");
    assert_eq!(posted(&client, &payee).await, 700);
    let winner = if first.status == 200 { &payer } else { &funding };
    let funded = if winner == &payer { 10_000 - 700 } else { 10_000 };
    assert_eq!(posted(&client, &payer).await, funded);

    // A payer without the funds is refused, and the code stays open for another.
    let payment = till(&client, &payee, 20_000, json!({})).await;
    let payload = payment["qr_payload"].as_str().unwrap();
    let poor = scan(&client, payload, &payer).await;
    assert_eq!(error(&poor), (422, "insufficient_funds", ""));
    let open = client.get(&format!("/v1/payments/{}", payment["id"].as_str().unwrap())).await;
    assert_eq!(
        (open.body["status"].as_str(), &open.body["payer_account"]),
        (Some("requires_confirmation"), &Value::Null)
    );
    let rich = scan(&client, payload, &funding).await;
    assert_eq!((rich.status, rich.body["status"].as_str()), (200, Some("succeeded")), "{}", rich.body);
    assert_eq!(posted(&client, &payee).await, 20_700);

    // With an Idempotency-Key a retried scan answers the same, and pays once.
    let payment = till(&client, &payee, 100, json!({})).await;
    let body = json!({"payload": payment["qr_payload"], "payer_account": funding});
    let once = client.post_with_key("/v1/payments/scan", body.clone(), Some("scan-1")).await;
    let twice = client.post_with_key("/v1/payments/scan", body, Some("scan-1")).await;
    assert_eq!((once.status, twice.status, twice.replayed, &once.bytes), (200, 200, true, &twice.bytes));
    assert_eq!(posted(&client, &payee).await, 20_800);
}

async fn the_payer_must_hold_the_payments_currency(backend: Backend) {
    let Some((client, _data)) = start(backend).await else { return };
    let (_, payer, payee) = client.parties(10_000).await;
    let dollars = client.post("/v1/accounts", json!({"currency": "USD", "overdraft_limit": "unlimited"})).await;
    let dollars = dollars.body["id"].as_str().unwrap().to_owned();
    let payment = till(&client, &payee, 300, json!({})).await;
    let payload = payment["qr_payload"].as_str().unwrap();
    assert_eq!(error(&scan(&client, payload, &dollars).await), (400, "currency_mismatch", "payer_account"));
    assert_eq!(error(&scan(&client, payload, &payee).await), (400, "same_account", "payee_account"));
    let nobody = "acct_00000000000000000000000000";
    assert_eq!(error(&scan(&client, payload, nobody).await), (400, "account_not_found", "payer_account"));
    assert_eq!((posted(&client, &payer).await, posted(&client, &payee).await), (10_000, 0));

    // A payment made with a payer can be scanned, by that payer only.
    let named = client.payment(&payer, &payee, 200, json!({})).await;
    let named = client.get(&format!("/v1/payments/{named}")).await.body;
    let payload = named["qr_payload"].as_str().unwrap();
    assert_eq!(error(&scan(&client, payload, &dollars).await), (409, "payer_mismatch", "payer_account"));
    assert_eq!(scan(&client, payload, &payer).await.status, 200);
    assert_eq!(posted(&client, &payee).await, 200);
}

async fn another_tenants_payment_is_missing(backend: Backend) {
    let Some((admin, _data)) = start(backend).await else { return };
    let (_, _, payee) = admin.parties(0).await;
    let payment = till(&admin, &payee, 300, json!({})).await;
    let (id, payload) = (payment["id"].as_str().unwrap(), payment["qr_payload"].as_str().unwrap());

    let t = admin.post("/v1/tenants", json!({"name": "other"})).await;
    assert_eq!(t.status, 201, "{}", t.body);
    let k = admin.post("/v1/api_keys", json!({"tenant": t.body["id"], "scopes": ["read", "write"]})).await;
    let other = admin.with_key(k.body["secret"].as_str().unwrap());
    let (_, their_payer, _) = other.parties(1_000).await;
    let refused = scan(&other, payload, &their_payer).await;
    assert_eq!((refused.status, refused.body["error"]["code"].as_str()), (404, Some("resource_missing")));
    let image = other.get(&format!("/v1/payments/{id}/qr?format=png")).await;
    assert_eq!((image.status, image.body["error"]["code"].as_str()), (404, Some("resource_missing")));
    assert_eq!(posted(&other, &their_payer).await, 1_000);
    let open = admin.get(&format!("/v1/payments/{id}")).await;
    assert_eq!(open.body["status"], "requires_confirmation");
}

async fn merchant_fields_are_checked(backend: Backend) {
    let Some((client, _data)) = start(backend).await else { return };
    let (_, _, payee) = client.parties(0).await;
    let base = json!({"name": "Shop", "city": "Lyon", "country": "FR", "category_code": "5411"});
    for (field, value) in [
        ("name", json!("A name that is much too long for EMVCo")),
        ("name", json!("Caf\u{e9}")),
        ("city", json!("")),
        ("country", json!("fr")),
        ("category_code", json!("54a1")),
    ] {
        let mut merchant = base.clone();
        merchant[field] = value;
        let body = json!({"payee_account": payee, "amount": 1, "currency": "EUR", "merchant": merchant});
        let refused = client.post("/v1/payments", body).await;
        assert_eq!(error(&refused), (400, "parameter_invalid", format!("merchant.{field}").as_str()));
    }
    // Without a merchant, the defaults.
    let payment = till(&client, &payee, 1, json!({})).await;
    let decoded = emvco::decode(payment["qr_payload"].as_str().unwrap()).unwrap();
    assert_eq!(
        (
            decoded.merchant_name.as_str(),
            decoded.merchant_city.as_str(),
            decoded.country.as_str(),
            decoded.category_code.as_str()
        ),
        ("paycore", "Internet", "ZZ", "5999")
    );
}
