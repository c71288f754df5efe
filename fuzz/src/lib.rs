//! What the fuzz targets share: one function per kind of input, so that a target is one line
//! and a crash input can be replayed outside the fuzzer.

use paycore_formats::{Format, ParseOptions};
use paycore_ledger::Currency;
use std::io::BufReader;

/// Decodes `data` as an EMVCo QR payload: never a panic, and whatever decodes encodes to a
/// payload that decodes to the same fields.
pub fn emvco(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(payload) = paycore_formats::emvco::decode(text) {
        let again = paycore_formats::emvco::encode(&payload);
        assert_eq!(paycore_formats::emvco::decode(&again).as_ref(), Ok(&payload), "{text:?} → {again:?}");
    }
}

/// Parses `data` as a file of `format` twice — from one slice, and through a 7-byte buffer so
/// that every record straddles buffer boundaries — and checks that both give the same items,
/// diagnostics and summary (the parsers stream; the buffer size must not matter).
pub fn parse_file(format: Format, data: &[u8]) {
    let options = ParseOptions {
        default_payer: Some("acct_01j9z6m5v8k3q2w1x0y9z8a7b6".to_owned()),
        default_currency: Currency::from_code("EUR"),
    };
    let mut whole = Vec::new();
    let a = paycore_formats::parse(format, data, &options, &mut |r| whole.push(r));
    let mut small = Vec::new();
    let b = paycore_formats::parse(format, BufReader::with_capacity(7, data), &options, &mut |r| small.push(r));
    match (&a, &b) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "summaries differ with the buffer size");
            assert_eq!(whole, small, "records differ with the buffer size");
        }
        (Err(_), Err(_)) => {}
        _ => panic!("one parse failed and the other did not: {a:?} vs {b:?}"),
    }
    for (index, record) in whole.iter().enumerate() {
        if let Ok(item) = record {
            assert_eq!(item.index, index as u64, "item index is not the number of records before it");
        }
    }
}

#[cfg(feature = "wire")]
/// Decodes `data` as a submission and as a reply: never a panic, and whatever decodes encodes
/// to bytes that decode to the same value (postcard takes overlong varints, so the bytes
/// themselves may differ).
pub fn wire(data: &[u8]) {
    use paycore_cluster::wire::{decode_reply, decode_submission, encode_reply, encode_submission, frames, MessageKind};
    // The same bytes as a NATS message of frames: walking them never panics either.
    for (_, message) in frames(MessageKind::Submission, data).flatten() {
        let _ = decode_submission(message);
        let _ = decode_reply(message);
    }
    if let Ok(submission) = decode_submission(data) {
        let again = decode_submission(&encode_submission(&submission));
        assert_eq!(again.as_ref().ok(), Some(&submission), "a decoded submission does not round-trip");
    }
    if let Ok(reply) = decode_reply(data) {
        let again = decode_reply(&encode_reply(&reply));
        assert_eq!(again.as_ref().ok(), Some(&reply), "a decoded reply does not round-trip");
    }
}

#[cfg(feature = "api")]
pub mod api {
    //! The request bodies, through the real router, engine and store (in process, once per
    //! fuzzer process).

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::Router;
    use std::sync::OnceLock;
    use tower::ServiceExt;

    pub const KEY: &str = "sk_fuzz_0123456789abcdefghijklmnopqrstuv";

    /// The routes whose JSON bodies are fuzzed; the first byte of the input picks one.
    pub const ROUTES: &[(&str, &str)] = &[
        ("/v1/accounts", "application/json"),
        ("/v1/transfers", "application/json"),
        ("/v1/payments", "application/json"),
        ("/v1/batches", "application/json"),
        ("/v1/payments/pay_00000000000000000000000000/capture", "application/json"),
        ("/v1/payments/pay_00000000000000000000000000/refunds", "application/json"),
    ];

    struct Server {
        runtime: tokio::runtime::Runtime,
        router: Router,
        _dir: std::path::PathBuf,
    }

    fn server() -> &'static Server {
        static SERVER: OnceLock<Server> = OnceLock::new();
        SERVER.get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("paycore-fuzz-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let mut config = paycore_server::Config::new(dir.clone(), "127.0.0.1:0".parse().expect("address"));
            config.api_key = Some(paycore_server::Secret::new(KEY.to_owned()));
            config.max_body_bytes = 64 * 1024;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            let service = runtime.block_on(async { paycore_server::start(&config) }).expect("start");
            let router = paycore_server::app(service.state.clone());
            // The engine thread lives as long as the process.
            std::mem::forget(service);
            Server { runtime, router, _dir: dir }
        })
    }

    /// Sends `body` to the route picked by `route` and returns the status; panics on a 5xx
    /// other than 503 (a full queue is an answer, not a failure).
    pub fn post(route: u8, body: &[u8]) -> StatusCode {
        let server = server();
        let (path, content_type) = ROUTES[usize::from(route) % ROUTES.len()];
        let request = Request::post(path)
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-type", content_type)
            .body(Body::from(body.to_vec()))
            .expect("request");
        let response = server.runtime.block_on(server.router.clone().oneshot(request)).expect("infallible");
        let status = response.status();
        let bytes = server
            .runtime
            .block_on(http_body_util::BodyExt::collect(response.into_body()))
            .expect("body")
            .to_bytes();
        assert!(
            !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
            "{path} answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        status
    }

    /// A fuzz input: the first byte picks the route, the rest is the body.
    pub fn fuzz(data: &[u8]) {
        if let Some((&route, body)) = data.split_first() {
            post(route, body);
        }
    }
}
