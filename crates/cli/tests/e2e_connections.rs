//! Connections against the real process: slow request heads and idle sockets are closed and
//! capped while a normal client is still served; a half-sent head does not hold up SIGTERM;
//! SIGTERM under a load of payments exits 0 and loses nothing acknowledged; a body that never
//! ends is cut off with 408 and leaves nothing; a client that sends all of a body refused with
//! 413 before it reads gets the 413; the API over TLS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Options, Server};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn address(server: &Server) -> SocketAddr {
    server.base_url.rsplit("//").next().unwrap().parse().unwrap()
}

fn args(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs.iter().flat_map(|(flag, value)| [(*flag).to_owned(), (*value).to_owned()]).collect()
}

/// A connection to `to` from the loopback address `from` (all of 127/8 is this machine), so
/// that a test can be several clients as the per-address cap sees them.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(to).await
}

/// Reads until the peer closes (or `within` passes); what was read, and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_and_idle_sockets_are_cut_off_while_a_normal_client_is_served() {
    // 320 descriptors: before the caps, 600 idle sockets alone exhausted 512 and every accept
    // failed (`Too many open files`). 200 connections leave the store its files.
    let options = Options {
        extra_args: args(&[
            ("--max-connections", "200"),
            ("--max-connections-per-ip", "90"),
            ("--header-read-timeout", "3"),
            ("--keep-alive-timeout", "4"),
        ]),
        ..Options::default()
    };
    let server = Server::start_limited(options, Some(320));
    let to = address(&server);
    let payer = server.funding_account("EUR").await;
    let payee = server.open_account("EUR", None).await;

    // 100 connections from 127.0.0.2 sending a request head one byte a second.
    let slow_closed = Arc::new(AtomicUsize::new(0));
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut stream = connect_from([127, 0, 0, 2], to).await.expect("slow connection");
        let closed = slow_closed.clone();
        slow.push(tokio::spawn(async move {
            let head = b"POST /v1/accounts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
            let started = Instant::now();
            for byte in head.iter().take(12) {
                if stream.write_all(&[*byte]).await.is_err() {
                    break;
                }
                let mut buf = [0u8; 512];
                match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    _ => {}
                }
            }
            let gone = started.elapsed();
            if gone < Duration::from_secs(11) {
                closed.fetch_add(1, Ordering::Relaxed);
            }
            gone
        }));
    }
    // 600 idle connections from 127.0.0.3: 90 are let in, the others are refused at once.
    let mut idle = Vec::new();
    for _ in 0..600 {
        idle.push(connect_from([127, 0, 0, 3], to).await.expect("idle connection"));
    }

    // Meanwhile a normal client (127.0.0.1) opens connections and is answered as usual.
    let api = server.api.with_fresh_client();
    let mut slowest = Duration::ZERO;
    for round in 0..20 {
        let started = Instant::now();
        let health = api.get_public("/healthz").await;
        assert_eq!(health.status.as_u16(), 200, "round {round}: {}", health.text());
        let paid = api
            .post(
                "/v1/transfers",
                json!({"debit_account": payer, "credit_account": payee, "amount": 1, "currency": "EUR"}),
            )
            .await;
        assert_eq!(paid.expect(201)["result"], json!("ok"));
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(slowest < Duration::from_secs(5), "a normal request took {slowest:?} under the flood");
    assert_eq!(server.posted(&payee).await, 20);

    // The idle sockets over the per-address cap were answered 503 and closed; the others were
    // closed by the keep-alive timeout (4 s; the normal client's rounds took longer).
    let mut refused = 0;
    let mut closed = 0;
    for mut stream in idle {
        let (bytes, was_closed) = read_until_closed(&mut stream, Duration::from_secs(8)).await;
        assert!(was_closed, "an idle connection is still open after the keep-alive timeout");
        closed += 1;
        let text = String::from_utf8_lossy(&bytes);
        if text.starts_with("HTTP/1.1 503") {
            assert!(text.contains("\"too_many_connections\""), "{text}");
            assert!(text.to_ascii_lowercase().contains("retry-after: 1"), "{text}");
            refused += 1;
        } else {
            assert!(bytes.is_empty(), "an idle connection got {text}");
        }
    }
    assert_eq!(closed, 600);
    assert!(refused >= 500, "{refused} of 600 idle connections refused over the cap of 90 per address");

    // Every slow head was cut off by the header timeout (3 s), long before its 12 bytes.
    for task in slow {
        let took = task.await.unwrap();
        assert!(took < Duration::from_secs(11), "a slow head was held for {took:?}");
    }
    assert_eq!(slow_closed.load(Ordering::Relaxed), 100);
    assert!(!server.stderr().contains("Too many open files"), "the process ran out of descriptors");
    assert!(server.healthy().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_head_does_not_hold_up_sigterm() {
    // The header timeout is longer than the drain: it is the drain that ends the connection.
    let options = Options {
        extra_args: args(&[("--header-read-timeout", "120"), ("--shutdown-timeout", "2")]),
        ..Options::default()
    };
    let mut server = Server::start_with(options);
    let to = address(&server);
    let mut half = TcpStream::connect(to).await.unwrap();
    half.write_all(b"POST /v1/accounts HTTP/1.1\r\nHost: x\r\nContent-Le").await.unwrap();
    let mut idle = TcpStream::connect(to).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate(Duration::from_secs(20));
        (server, status)
    })
    .await
    .unwrap();
    let (server, status) = status;
    let took = started.elapsed();
    let status = status.unwrap_or_else(|| {
        server.dump_logs();
        panic!("paycore did not exit within 20 s of SIGTERM with a half-sent head open")
    });
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(10), "exit took {took:?}");
    // Both connections were closed by the server, not left for the client to give up.
    let (_, closed) = read_until_closed(&mut half, Duration::from_secs(1)).await;
    assert!(closed);
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(1)).await;
    assert!(closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_0_and_loses_nothing_acknowledged() {
    let mut server = Server::start();
    let payer = server.funding_account("EUR").await;
    let payee = server.open_account("EUR", None).await;
    let acknowledged: Arc<Mutex<Vec<(String, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for client in 0..8u64 {
        let api = server.api.with_fresh_client();
        let (payer, payee, acknowledged) = (payer.clone(), payee.clone(), acknowledged.clone());
        clients.push(tokio::spawn(async move {
            for round in 0..100_000u64 {
                let amount = 1 + (client * 7 + round) % 13;
                let body = json!({"payer_account": payer, "payee_account": payee, "amount": amount, "currency": "EUR"});
                let Ok(created) = api.try_post("/v1/payments", &body, None).await else { return };
                if created.status.as_u16() != 201 {
                    return;
                }
                let id = created.body["id"].as_str().unwrap().to_owned();
                let Ok(confirmed) = api.try_post(&format!("/v1/payments/{id}/confirm"), &json!({}), None).await else {
                    return;
                };
                if confirmed.status.as_u16() != 200 {
                    return;
                }
                assert_eq!(confirmed.body["status"], json!("succeeded"), "{}", confirmed.text());
                acknowledged.lock().unwrap().push((id, amount));
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = acknowledged.lock().unwrap().len();
    assert!(before > 0, "no payment acknowledged before SIGTERM");
    let (mut server, status) = tokio::task::spawn_blocking(move || {
        let status = server.terminate(Duration::from_secs(40));
        (server, status)
    })
    .await
    .unwrap();
    let status = status.unwrap_or_else(|| {
        server.dump_logs();
        panic!("paycore did not exit within 40 s of SIGTERM under load")
    });
    assert!(status.success(), "exit status {status:?}");
    for client in clients {
        client.await.unwrap();
    }
    assert!(server.stderr().contains("SIGTERM: shutting down"));

    // Reopen the folder: every acknowledged payment is there, succeeded, and the payee holds
    // at least their sum (a payment committed as its connection closed counts too).
    server.start_again();
    let acknowledged = acknowledged.lock().unwrap().clone();
    let mut sum = 0i64;
    for (id, amount) in &acknowledged {
        let payment = server.get(&format!("/v1/payments/{id}")).await;
        let body = payment.expect(200);
        assert_eq!(body["status"], json!("succeeded"), "{body}");
        assert_eq!(body["amount"], json!(amount), "{body}");
        sum += i64::try_from(*amount).unwrap();
    }
    assert!(server.posted(&payee).await >= sum);
    let (server, status) = tokio::task::spawn_blocking(move || {
        let status = server.terminate(Duration::from_secs(40));
        (server, status)
    })
    .await
    .unwrap();
    assert!(status.is_some_and(|s| s.success()), "second exit: {status:?}");
    let verified =
        std::process::Command::new(env!("CARGO_BIN_EXE_paycore")).arg("verify").arg(&server.data_dir).output().unwrap();
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_ends_is_cut_off_with_408_and_leaves_nothing() {
    let options = Options { extra_args: args(&[("--body-read-timeout", "2")]), ..Options::default() };
    let server = Server::start_with(options);
    let to = address(&server);
    let payee = server.open_account_ref("EUR", "payee-1", None).await;
    let payer = server.funding_account("EUR").await;
    let _ = payee;

    // An upload that announces a megabyte and stops after its first lines.
    let mut stream = TcpStream::connect(to).await.unwrap();
    let head = format!(
        "POST /v1/batches?format=csv&payer={payer} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: text/csv\r\nContent-Length: 1000000\r\n\r\npayee,amount,currency,reference\r\npayee-1,1.00,EUR,r1\r\n",
        server.key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (bytes, _) = read_until_closed(&mut stream, Duration::from_secs(15)).await;
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"request_body_timeout\""), "{text}");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(10), "answered after {took:?}");

    // A JSON body that never ends is cut off the same way, and creates nothing.
    let mut stream = TcpStream::connect(to).await.unwrap();
    let head = format!(
        "POST /v1/accounts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"currency\":",
        server.key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (bytes, _) = read_until_closed(&mut stream, Duration::from_secs(15)).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"request_body_timeout\""), "{text}");

    // No batch file, finished or partial, is left in the data folder.
    let files: Vec<_> = std::fs::read_dir(server.data_dir.join("batches"))
        .map(|dir| dir.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(files.is_empty(), "files left behind: {files:?}");
    // And the same upload sent in full is taken in: the deadline is on slowness, not size.
    let csv = "payee,amount,currency,reference\npayee-1,1.00,EUR,r1\n";
    let resp = server.raw_post(&format!("/v1/batches?format=csv&payer={payer}"), csv.into(), Some("text/csv")).await;
    let body: &Value = resp.expect(202);
    assert_eq!(body["status"], json!("validating"));
}

/// A client that writes the whole of an oversized body before it reads the answer (as curl does
/// without `Expect: 100-continue`) must get the 413, though the server answered it from the
/// `Content-Length` before reading the body. Closing a socket with unread bytes makes the kernel
/// reset the connection, and the client's writes then fail before it ever reads: the server
/// reads and discards the rest of the body after its answer (lingering close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_a_refused_body_in_full_before_reading_gets_the_413() {
    let server = Server::start();
    let to = address(&server);
    let payee = server.open_account("EUR", None).await;
    let payer = server.funding_account("EUR").await;
    let before = server.balance(&payee).await;
    // 8 MiB: more than the loopback socket buffers of both ends together hold, so that the
    // client's writes need the server to read.
    let body = vec![b' '; 8 << 20];
    for attempt in 0..3 {
        let mut stream = TcpStream::connect(to).await.unwrap();
        let head = format!(
            "POST /v1/transfers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            server.key,
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // Give the server the time to answer and end the connection before the body comes.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let written = tokio::time::timeout(Duration::from_secs(20), stream.write_all(&body)).await;
        assert!(
            matches!(written, Ok(Ok(()))),
            "attempt {attempt}: writing the body failed: {written:?} (payer {payer})"
        );
        let (bytes, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("HTTP/1.1 413"), "attempt {attempt}: {text}");
        assert!(text.contains("\"body_too_large\""), "attempt {attempt}: {text}");
        assert!(closed, "attempt {attempt}: the connection stayed open after the 413");
    }
    assert_eq!(server.balance(&payee).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_over_tls() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let options = Options {
        extra_args: vec![
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ],
        ..Options::default()
    };
    let server = Server::start_with(options);
    assert!(server.base_url.starts_with("https://"), "{}", server.base_url);
    let to = address(&server);

    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    #[allow(deprecated)] // ring has no post-quantum key exchange; the server uses ring too.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();

    let request = |head: String| {
        let (connector, name) = (connector.clone(), name.clone());
        async move {
            let tcp = TcpStream::connect(to).await.unwrap();
            let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
            tls.write_all(head.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            let _ = tls.read_to_end(&mut out).await;
            String::from_utf8_lossy(&out).into_owned()
        }
    };
    let health = request("GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".into()).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    let body = r#"{"currency":"EUR"}"#;
    let created = request(format!(
        "POST /v1/accounts HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.key,
        body.len()
    ))
    .await;
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    assert!(created.contains("\"acct_"), "{created}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(to).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let (bytes, _) = read_until_closed(&mut plain, Duration::from_secs(5)).await;
    assert!(!String::from_utf8_lossy(&bytes).starts_with("HTTP/1.1 200"));
}
