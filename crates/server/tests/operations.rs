//! Production operations over HTTP: the bound on batch uploads waiting for validation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{on_both_backends, Backend, Client};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "sk_test_operations_0123456789abcdefghijkl";
const SAMPLE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/samples/csv/pain001-template_pain.001.001.03_4rows.csv");

on_both_backends!(an_upload_over_the_validation_queue_is_refused_at_once_and_nothing_of_it_kept);

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
