//! The HTTP protocol of the real `paycore` binary: every response names its request
//! (`Request-Id`), ambiguous input (a JSON key given twice, two `Authorization` headers) is
//! refused and moves no money, a replay answers the first answer byte for byte, and the errors
//! the server answers about HTTP itself (414, 431, a path that is not UTF-8, 404, 405, 413)
//! have the one JSON error shape.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{assert_error_shape, Resp, Server};
use serde_json::{json, Value};
use std::collections::HashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Asserts `id` is a request id: `req_` and 26 lower-case base32 digits.
#[track_caller]
fn assert_request_id(id: &str) {
    let digits = id.strip_prefix("req_").unwrap_or_else(|| panic!("not a request id: {id:?}"));
    assert_eq!(digits.len(), 26, "{id}");
    assert!(digits.bytes().all(|b| b"0123456789abcdefghjkmnpqrstvwxyz".contains(&b)), "{id}");
}

/// The `Request-Id` header of a response, checked.
#[track_caller]
fn request_id(resp: &Resp) -> String {
    let id = resp.header("request-id").unwrap_or_else(|| panic!("no Request-Id: {:?}", resp.headers));
    assert_request_id(&id);
    id
}

/// Asserts an error response names its request, in the header and the body alike.
#[track_caller]
fn assert_error_names_request(resp: &Resp) {
    let id = request_id(resp);
    assert_eq!(resp.body["error"]["request_id"], json!(id), "{}", resp.text());
}

/// A response read off a raw connection.
struct RawResp {
    status: u16,
    headers: HashMap<String, String>,
    body: Value,
    text: String,
}

/// Sends `head` (request line and header fields, without the blank line) and `body` on a new
/// TCP connection, with `Connection: close`, and reads the whole answer.
async fn raw_request(server: &Server, head: &str, body: &[u8]) -> RawResp {
    let address = server.base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let mut request = format!("{head}\r\nHost: {address}\r\nConnection: close\r\n\r\n").into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await.expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("no end of head");
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let text = String::from_utf8_lossy(&answer[split + 4..]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status line");
    let headers = lines
        .filter_map(|line| line.split_once(": "))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
        .collect();
    RawResp { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::Null), text }
}

impl RawResp {
    /// Asserts the status, the JSON error shape with `code`, a null `param`, and the request id
    /// in the header and the body.
    #[track_caller]
    fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.headers.get("content-type").map(String::as_str), Some("application/json"), "{}", self.text);
        let error = &self.body["error"];
        assert_eq!(error["code"], json!(code), "{}", self.text);
        assert_eq!(error["param"], Value::Null, "{}", self.text);
        assert!(error["type"].is_string() && error["message"].is_string(), "{}", self.text);
        let id = self.headers.get("request-id").unwrap_or_else(|| panic!("no Request-Id: {:?}", self.headers));
        assert_request_id(id);
        assert_eq!(error["request_id"], json!(id), "{}", self.text);
    }
}

async fn two_accounts(server: &Server, funds: u64) -> (String, String) {
    let payer = server.open_account("EUR", None).await;
    let payee = server.open_account("EUR", None).await;
    if funds > 0 {
        server.fund(&payer, funds).await;
    }
    (payer, payee)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_names_its_request() {
    let server = Server::start();
    let (payer, payee) = two_accounts(&server, 1_000).await;

    let health = server.get_public("/healthz").await;
    health.expect(200);
    let first = request_id(&health);
    let again = request_id(&server.get_public("/healthz").await);
    assert_ne!(first, again, "every request gets its own id");

    let created = server
        .post(
            "/v1/transfers",
            json!({"debit_account": payer, "credit_account": payee, "amount": 10, "currency": "EUR"}),
        )
        .await;
    created.expect(201);
    request_id(&created);

    for resp in [
        server.get("/v1/no_such_route").await,
        server.get("/v1/accounts/acct_00000000000000000000000000").await,
        server.post("/v1/accounts", json!({"currency": "EURO"})).await,
        server.get_public("/v1/accounts").await,
    ] {
        assert!(resp.status.is_client_error(), "{}", resp.text());
        assert_error_shape(&resp);
        assert_error_names_request(&resp);
    }
    let refused = server
        .post(
            "/v1/transfers",
            json!({"debit_account": payer, "credit_account": payee, "amount": 5_000, "currency": "EUR"}),
        )
        .await;
    refused.expect_error(422, "insufficient_funds", None);
    assert_error_names_request(&refused);
    assert_eq!(server.posted(&payee).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_key_given_twice_is_refused_and_moves_nothing() {
    let server = Server::start();
    let (payer, payee) = two_accounts(&server, 1_000_000).await;
    let json_ct = Some("application/json");

    let single = format!(
        r#"{{"debit_account":"{payer}","credit_account":"{payee}","amount":1,"amount":100000,"currency":"EUR"}}"#
    );
    let resp = server.raw_post("/v1/transfers", single.into_bytes(), json_ct).await;
    resp.expect_error(400, "parameter_invalid", Some("amount"));
    assert_error_names_request(&resp);

    let item = format!(r#"{{"debit_account":"{payer}","credit_account":"{payee}","amount":1,"currency":"EUR"}}"#);
    let twice = format!(
        r#"{{"debit_account":"{payer}","credit_account":"{payee}","amount":1,"currency":"EUR","amount":100000}}"#
    );
    let bulk = format!(r#"{{"transfers":[{item},{twice}]}}"#);
    let resp = server.raw_post("/v1/transfers", bulk.into_bytes(), json_ct).await;
    resp.expect_error(400, "parameter_invalid", Some("transfers[1].amount"));
    let bulk = format!(r#"{{"transfers":[{item}],"transfers":[{item},{item}]}}"#);
    let resp = server.raw_post("/v1/transfers", bulk.into_bytes(), json_ct).await;
    resp.expect_error(400, "parameter_invalid", Some("transfers"));

    let account = br#"{"currency":"EUR","metadata":{"owner":"alice","owner":"mallory"}}"#.to_vec();
    let resp = server.raw_post("/v1/accounts", account, json_ct).await;
    resp.expect_error(400, "parameter_invalid", Some("metadata.owner"));

    let payment = format!(
        r#"{{"payer_account":"{payer}","payee_account":"{payee}","amount":1,"currency":"EUR","amount":100000}}"#
    );
    let resp = server.raw_post("/v1/payments", payment.into_bytes(), json_ct).await;
    resp.expect_error(400, "parameter_invalid", Some("amount"));

    assert_eq!(server.posted(&payer).await, 1_000_000, "no money moved");
    assert_eq!(server.posted(&payee).await, 0, "no money moved");
    // The same bodies with the key once are served.
    let resp =
        server.raw_post("/v1/transfers", format!(r#"{{"transfers":[{item},{item}]}}"#).into_bytes(), json_ct).await;
    resp.expect(200);
    assert_eq!(server.posted(&payee).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jsonl_item_with_a_key_twice_is_invalid_and_not_paid() {
    let server = Server::start();
    let payer = server.open_account_ref("EUR", "DUP-PAYER", None).await;
    let payee = server.open_account_ref("EUR", "DUP-PAYEE", None).await;
    server.fund(&payer, 10_000).await;
    let file = concat!(
        r#"{"payee":"DUP-PAYEE","amount_minor":5,"currency":"EUR","reference":"ONE"}"#,
        "\n",
        r#"{"payee":"DUP-PAYEE","amount_minor":1,"amount_minor":700,"currency":"EUR","reference":"TWO"}"#,
        "\n",
    );
    let query = "payer=DUP-PAYER&on_invalid=skip_invalid";
    let id = server.submit_batch(query, file.as_bytes().to_vec(), Some("application/x-ndjson")).await;
    let batch = server.wait_for_batch(&id).await;
    assert_eq!(batch["status"], json!("completed"), "{batch}");
    assert_eq!(batch["counts"]["invalid"], json!(1), "{batch}");
    assert_eq!(batch["counts"]["succeeded"], json!(1), "{batch}");
    let invalid = server.all_batch_items(&id, Some("invalid"), 10).await;
    assert_eq!(invalid.len(), 1, "{invalid:?}");
    assert_eq!(invalid[0]["line"], json!(2));
    assert_eq!(invalid[0]["failure_code"], json!("duplicate_key"));
    assert_eq!(
        invalid[0]["message"],
        json!("amount_minor: line 2 gives the key \"amount_minor\" more than once; each key may appear only once")
    );
    assert_eq!(server.posted(&payee).await, 5, "only the unambiguous item was paid");
    assert_eq!(server.posted(&payer).await, 10_000 - 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_authorization_headers_are_refused() {
    let server = Server::start();
    let (payer, payee) = two_accounts(&server, 1_000).await;
    let body = json!({"debit_account": payer, "credit_account": payee, "amount": 10, "currency": "EUR"});
    for other in [server.key.clone(), "sk_not_a_key".to_owned()] {
        let resp = server
            .send(|| {
                server
                    .client
                    .post(server.url("/v1/transfers"))
                    .header("Authorization", format!("Bearer {}", server.key))
                    .header("Authorization", format!("Bearer {other}"))
                    .json(&body)
            })
            .await
            .unwrap();
        resp.expect_error(401, "invalid_api_key", None);
        assert_error_names_request(&resp);
    }
    assert_eq!(server.posted(&payee).await, 0, "no money moved");
    assert_eq!(server.posted(&payer).await, 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_answers_the_first_answer_byte_for_byte() {
    let server = Server::start();
    let (payer, payee) = two_accounts(&server, 1_000).await;
    let key = |name: &str| format!("{name}-{}", common::random_hex(8));

    // A transfer refused by the ledger (422): the refusal is replayed, marked.
    let refused = json!({"debit_account": payer, "credit_account": payee, "amount": 5_000, "currency": "EUR"});
    let k = key("refused");
    let first = server.post_with_key("/v1/transfers", refused.clone(), &k).await;
    first.expect_error(422, "insufficient_funds", None);
    assert!(!first.is_replay());
    assert!(first.body["error"].get("request_id").is_none(), "a saved answer names no request: {}", first.text());
    let again = server.post_with_key("/v1/transfers", refused, &k).await;
    assert_eq!((again.status, &again.bytes), (first.status, &first.bytes), "{}", again.text());
    assert!(again.is_replay(), "a replayed refusal must carry Idempotent-Replayed: true");
    assert_ne!(request_id(&again), request_id(&first), "the header names each request");

    // A command the engine refuses (an unknown account): the saved error, byte for byte.
    let unknown = json!({"payer_account": payer, "payee_account": "acct_00000000000000000000000000", "amount": 1, "currency": "EUR"});
    let k = key("payment");
    let first = server.post_with_key("/v1/payments", unknown.clone(), &k).await;
    first.expect_error(400, "account_not_found", Some("payee_account"));
    let again = server.post_with_key("/v1/payments", unknown, &k).await;
    assert_eq!((again.status, &again.bytes), (first.status, &first.bytes), "{}", again.text());
    assert!(again.is_replay());

    // A batch: the 202 as it was taken in, even after the batch has finished.
    let file = b"payee,amount,currency\n"
        .iter()
        .copied()
        .chain(format!("{payee},1.00,EUR\n").into_bytes())
        .collect::<Vec<u8>>();
    let query = format!("payer={payer}");
    let k = key("batch");
    let first = server.upload_batch(&query, file.clone(), Some("text/csv"), Some(&k)).await;
    first.expect(202);
    assert!(!first.is_replay());
    let id = first.body["id"].as_str().expect("id").to_owned();
    assert_eq!(server.wait_for_batch(&id).await["status"], json!("completed"));
    let late = server.upload_batch(&query, file, Some("text/csv"), Some(&k)).await;
    assert_eq!((late.status, &late.bytes), (first.status, &first.bytes), "{}", late.text());
    assert!(late.is_replay());
    assert_eq!(late.body["status"], json!("validating"));
    assert_eq!(server.posted(&payee).await, 100, "the batch paid once");
    assert_eq!(server.posted(&payer).await, 1_000 - 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_answers_http_errors_in_the_json_shape() {
    let server = Server::start();
    let auth = format!("Authorization: Bearer {}", server.key);

    let long_path = format!("/v1/accounts/{}", "a".repeat(9_000));
    raw_request(&server, &format!("GET {long_path} HTTP/1.1\r\n{auth}"), b"").await.expect_error(414, "uri_too_long");
    let big_header = format!("X-Padding: {}", "p".repeat(70 * 1024));
    raw_request(&server, &format!("GET /v1/accounts HTTP/1.1\r\n{auth}\r\n{big_header}"), b"")
        .await
        .expect_error(431, "headers_too_large");
    for path in ["/v1/accounts/%FF", "/v1/batches/%C3%28/items", "/v1/%FE"] {
        raw_request(&server, &format!("GET {path} HTTP/1.1\r\n{auth}"), b"").await.expect_error(400, "invalid_path");
    }
    raw_request(&server, &format!("GET /v1/nothing HTTP/1.1\r\n{auth}"), b"")
        .await
        .expect_error(404, "route_not_found");
    raw_request(&server, &format!("DELETE /v1/transfers HTTP/1.1\r\n{auth}"), b"")
        .await
        .expect_error(405, "method_not_allowed");
    let body = vec![b' '; 4 * 1024 * 1024 + 1];
    let head = format!(
        "POST /v1/transfers HTTP/1.1\r\n{auth}\r\nContent-Type: application/json\r\nContent-Length: {}",
        body.len()
    );
    raw_request(&server, &head, &body).await.expect_error(413, "body_too_large");
    // Still serving.
    server.get_public("/healthz").await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_uploads_with_one_key_at_once_are_one_batch_and_no_error() {
    const RACE: &str = "a concurrent upload with this Idempotency-Key won";
    let server = Server::start();
    let (payer, payee) = two_accounts(&server, 1_000).await;
    let file = format!("payee,amount,currency\n{payee},0.01,EUR\n").into_bytes();
    let query = format!("payer={payer}");
    // The race needs both uploads past the key lookup before either is recorded: try rounds
    // until the log says it happened.
    let mut rounds = 0;
    while !server.stderr().contains(RACE) {
        rounds += 1;
        assert!(rounds <= 20, "no two uploads raced in 20 rounds; the test proves nothing");
        let key = format!("race-{}", common::random_hex(8));
        let uploads: Vec<_> = (0..6)
            .map(|_| {
                let (api, file, query, key) = (server.api.clone(), file.clone(), query.clone(), key.clone());
                tokio::spawn(async move { api.upload_batch(&query, file, Some("text/csv"), Some(&key)).await })
            })
            .collect();
        let mut answers = Vec::new();
        for upload in uploads {
            answers.push(upload.await.unwrap());
        }
        let first = answers.iter().find(|a| !a.is_replay()).expect("one upload is the first");
        assert_eq!(answers.iter().filter(|a| !a.is_replay()).count(), 1, "exactly one original answer");
        for answer in &answers {
            assert_eq!((answer.status.as_u16(), &answer.bytes), (202, &first.bytes), "{}", answer.text());
        }
        server.wait_for_batch(first.body["id"].as_str().unwrap()).await;
    }
    let logs = without_colours(&server.stderr());
    let race = logs.lines().find(|line| line.contains(RACE)).unwrap();
    assert!(race.contains("request_id=req_"), "the log line names its request: {race}");
    assert!(!logs.contains("ERROR"), "a handled race is not an error: {logs}");
    assert_eq!(server.posted(&payee).await, rounds, "one batch (1 cent) per round");
}

/// `text` without the ANSI colour sequences (`ESC [ … m`) the server's log is written with.
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}
