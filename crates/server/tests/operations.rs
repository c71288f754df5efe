//! Production operations over HTTP: the bound on batch uploads waiting for validation, and
//! console sign-outs that hold on every API node of the store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{on_both_backends, Backend, Client};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "sk_test_operations_0123456789abcdefghijkl";
const SAMPLE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/samples/csv/pain001-template_pain.001.001.03_4rows.csv");

on_both_backends!(
    an_upload_over_the_validation_queue_is_refused_at_once_and_nothing_of_it_kept,
    a_console_sign_out_holds_on_another_node_of_the_same_store
);

/// An upload whose body is still on its way: its head and first bytes are sent, and the server
/// has begun reading the body (it answered `100 Continue`), so the upload holds its place in
/// the validation queue.
struct Pending {
    stream: TcpStream,
    rest: Vec<u8>,
}

async fn begin_upload(client: &Client, key: &str, body: &[u8]) -> Pending {
    let address = client.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /v1/batches?format=csv HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: text/csv\r\nIdempotency-Key: {key}\r\nContent-Length: {}\r\n\
         Expect: 100-continue\r\n\r\n",
        client.key,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let continued = read_head(&mut stream).await;
    assert!(continued.starts_with("HTTP/1.1 100"), "{continued}");
    stream.write_all(&body[..10]).await.unwrap();
    Pending { stream, rest: body[10..].to_vec() }
}

/// Reads one response head (up to its blank line).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut byte)).await.unwrap().unwrap();
        assert_eq!(read, 1, "the connection closed after {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

impl Pending {
    /// Sends the rest of the body; the status line of the answer.
    async fn finish(mut self) -> String {
        self.stream.write_all(&self.rest).await.unwrap();
        read_head(&mut self.stream).await.lines().next().unwrap().to_owned()
    }
}

async fn upload(client: &Client, key: &str, body: Vec<u8>) -> (u16, serde_json::Value, bool) {
    let request = client
        .http
        .post(format!("{}/v1/batches?format=csv", client.base))
        .header("content-type", "text/csv")
        .header("Idempotency-Key", key)
        .body(body);
    let response = request.bearer_auth(&client.key).send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response.headers().contains_key("retry-after");
    (status, response.json().await.unwrap(), retry_after)
}

/// Files in the embedded store's data folder for batches: kept, and being written
/// (`.partial`). On PostgreSQL they live in the database, and the `Idempotency-Key` check
/// below stands for them.
fn batch_files(data: &common::Data) -> (usize, usize) {
    let names: Vec<String> = std::fs::read_dir(data.path().join("batches"))
        .map(|dir| dir.map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let partial = names.iter().filter(|name| name.ends_with(".partial")).count();
    (names.len() - partial, partial)
}

async fn an_upload_over_the_validation_queue_is_refused_at_once_and_nothing_of_it_kept(backend: Backend) {
    let Some((client, data)) = common::boot_on(backend, KEY, |config| {
        config.max_concurrent_validations = 1;
        config.max_queued_validations = 2;
    })
    .await
    else {
        return;
    };
    let sample = std::fs::read(SAMPLE).unwrap();
    let first = begin_upload(&client, "queue-1", &sample).await;
    let second = begin_upload(&client, "queue-2", &sample).await;

    // Two uploads hold the two places: a third is refused before its body is read.
    let (status, body, retry_after) = upload(&client, "queue-3", sample.clone()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "validation_queue_full", "{body}");
    assert!(retry_after, "a refused upload says when to retry");
    let (kept, partial) = batch_files(&data);
    assert_eq!(kept, 0, "nothing of the refused upload is kept");
    assert!(partial <= 2, "only the two uploads under way are being written: {partial}");

    // The two waiting uploads are taken in; once their validations begin, there is room again.
    assert!(first.finish().await.starts_with("HTTP/1.1 202"));
    assert!(second.finish().await.starts_with("HTTP/1.1 202"));
    let mut third = None;
    for _ in 0..200 {
        let (status, body, _) = upload(&client, "queue-3", sample.clone()).await;
        if status != 503 {
            third = Some((status, body));
            break;
        }
        assert_eq!(body["error"]["code"], "validation_queue_full", "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = third.expect("the queue never had room again");
    // Taken in as new: the refused upload under the same key left nothing to replay.
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "validating");
    if backend == Backend::Embedded {
        assert_eq!(batch_files(&data), (3, 0), "one file per batch taken in, none partial");
    }
}

/// A console session's cookie (`paycore_console=…`) and CSRF token, signed in with `key` as a
/// browser would (the form, its own token cookie, the post).
async fn console_sign_in(http: &reqwest::Client, base: &str, key: &str) -> (String, String) {
    let form = http.get(format!("{base}/console/sign-in")).send().await.unwrap();
    let token_cookie = set_cookie(&form, "paycore_console_sign_in");
    let html = form.text().await.unwrap();
    let token = attribute_after(&html, "name=\"sign_in\"", "value");
    let signed_in = http
        .post(format!("{base}/console/sign-in"))
        .header("cookie", &token_cookie)
        .form(&[("key", key), ("sign_in", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let cookie = set_cookie(&signed_in, "paycore_console");
    let (status, html) = console_page(http, base, &cookie).await;
    assert_eq!(status, 200);
    (cookie, attribute_after(&html, "name=\"csrf-token\"", "content"))
}

fn set_cookie(response: &reqwest::Response, name: &str) -> String {
    let prefix = format!("{name}=");
    let found =
        response.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).find(|c| c.starts_with(&prefix));
    found.unwrap().split(';').next().unwrap().to_owned()
}

fn attribute_after(html: &str, marker: &str, attribute: &str) -> String {
    let rest = &html[html.find(marker).unwrap()..];
    let start = rest.find(&format!("{attribute}=\"")).unwrap() + attribute.len() + 2;
    rest[start..start + rest[start..].find('"').unwrap()].to_owned()
}

/// The console's accounts page with `cookie`: its status and body (303 when signed out).
async fn console_page(http: &reqwest::Client, base: &str, cookie: &str) -> (u16, String) {
    let page = http.get(format!("{base}/console/accounts")).header("cookie", cookie).send().await.unwrap();
    (page.status().as_u16(), page.text().await.unwrap())
}

/// Starts a service on `data` with the shared console secret; stops it when the sender is
/// dropped (or sent to), and the handle ends once it has let go of the store.
async fn console_node(
    data: &common::Data,
) -> (String, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let mut config = common::config(data, KEY);
    config.console_secret = Some(paycore_server::Secret::new("one secret for every node".to_owned()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (base, serving) = common::serve(&config, async move {
        let _ = stopped.await;
    })
    .await;
    (base, stop, serving)
}

/// A sign-out on one node is refused on the next node of the same store: the first node is
/// stopped (its memory gone) and another started on the same data folder or database, with the
/// same console secret, so that only the store can know of the sign-out. A session that did
/// not sign out still opens there.
async fn a_console_sign_out_holds_on_another_node_of_the_same_store(backend: Backend) {
    let Some(data) = common::Data::new(backend) else { return };
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let (first, stop, serving) = console_node(&data).await;
    let (signed_out, csrf) = console_sign_in(&http, &first, KEY).await;
    let (kept, _) = console_sign_in(&http, &first, KEY).await;
    let out = http
        .post(format!("{first}/console/sign-out"))
        .header("cookie", &signed_out)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert_eq!(console_page(&http, &first, &signed_out).await.0, 303, "signed out on the node that served it");
    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();

    let (second, _stop, _serving) = console_node(&data).await;
    assert_eq!(console_page(&http, &second, &kept).await.0, 200, "another node accepts the session");
    let (status, _) = console_page(&http, &second, &signed_out).await;
    assert_eq!(status, 303, "the signed-out cookie is refused on another node");
}
