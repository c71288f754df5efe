//! Every request gets an id, `req_` and 26 base32 digits (the house's time-ordered ids): it is
//! answered in the `Request-Id` header of every response (success or error, the server's own
//! 404, 405, 413, 414 and 431 included), every log line written while the request is served
//! ends with `request_id=…` ([`WithRequestId`], the log format), and it is the `request_id` of
//! every error body rendered for the request. A client quotes it; an operator finds the
//! request's log lines by it.
//!
//! The id lives in a task-local while the request is served (and in a thread-local while a
//! blocking closure of the request runs), not in a tracing span: a span per request costs an
//! allocation in the subscriber's registry and an enter and exit at every poll, on the one
//! HTTP thread, for lines that are rarely written; the log format reads the id only when a
//! line is written.
//!
//! A response saved for an `Idempotency-Key` is answered again, byte for byte, to every replay:
//! the replay's `Request-Id` header names the replay, and the saved body names no request (see
//! [`crate::idempotency`]).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::Arc;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The response header that carries the id.
pub const HEADER: &str = "request-id";

tokio::task_local! {
    /// The id of the request the current task serves.
    static CURRENT: Arc<str>;
}

thread_local! {
    /// The id of the request whose blocking closure this thread runs ([`spawn_blocking`]).
    static BLOCKING: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// The id of the request the current task (or blocking closure) serves; `None` outside one
/// (the engine thread, background jobs).
pub fn current() -> Option<Arc<str>> {
    CURRENT.try_with(Arc::clone).ok().or_else(|| BLOCKING.with(|id| id.borrow().clone()))
}

/// A new request id.
pub fn new() -> Arc<str> {
    crate::ids::new_prefixed_id("req").into()
}

/// Serves `future` as the request `id`: [`current`] answers `id` inside it.
pub async fn scope<F: std::future::Future>(id: Arc<str>, future: F) -> F::Output {
    CURRENT.scope(id, future).await
}

/// Runs a blocking closure on a blocking thread as part of the current request, so that what
/// it logs names the request.
pub fn spawn_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> tokio::task::JoinHandle<T> {
    let id = current();
    tokio::task::spawn_blocking(move || {
        let previous = BLOCKING.with(|slot| slot.replace(id));
        let result = f();
        BLOCKING.with(|slot| *slot.borrow_mut() = previous);
        result
    })
}

/// A log format that ends every line written while a request is served with
/// ` request_id=req_…`: `inner` writes the line, this appends the id.
pub struct WithRequestId<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for WithRequestId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let Some(id) = current() else { return self.0.format_event(ctx, writer, event) };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let end = line.trim_end_matches('\n').len();
        line.truncate(end);
        if line.starts_with('{') && line.ends_with('}') {
            // `--log-format json`: one more field of the object, as a JSON string.
            line.pop();
            let quoted = serde_json::to_string(&id.to_string()).map_err(|_| std::fmt::Error)?;
            write!(line, ",\"request_id\":{quoted}}}")?;
        } else {
            write!(line, " request_id={id}")?;
        }
        writeln!(writer, "{line}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::error::ApiError;
    use axum::routing::get;
    use axum::Router;
    use paycore_engine::EngineError;
    use std::sync::Mutex;

    /// Log output kept in memory.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const CAUSE: &str = "disk I/O error in INSERT INTO transfers; panicked at state.rs:12";

    /// One thread: the server's tasks log through this test's subscriber.
    #[tokio::test(flavor = "current_thread")]
    async fn an_unavailable_ledger_names_the_request_and_logs_its_cause_only() {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(WithRequestId(tracing_subscriber::fmt::format().with_ansi(false)))
            .with_writer(move || writer.clone())
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let app = Router::new()
            .route("/fail", get(|| async { ApiError::from_engine(&EngineError::Unavailable(CAUSE.into())) }))
            .layer(axum::middleware::from_fn(crate::protocol::layer));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let response = reqwest::get(format!("http://{address}/fail")).await.unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
        let id = response.headers()[HEADER].to_str().unwrap().to_owned();
        assert!(id.starts_with("req_") && id.len() == 30, "{id}");
        let body = response.text().await.unwrap();
        assert_eq!(
            body,
            format!(
                r#"{{"error":{{"type":"api_error","code":"ledger_unavailable","message":"The ledger is unavailable; nothing was applied. Retry later.","param":null,"request_id":"{id}"}}}}"#
            )
        );
        let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let line =
            logged.lines().find(|line| line.contains(CAUSE)).unwrap_or_else(|| panic!("cause not logged: {logged}"));
        assert!(line.contains(&format!("request_id={id}")), "{line}");
        assert!(line.contains("ERROR"), "{line}");

        // A route that does not exist: the 404 names a new request, in the header and body.
        let response = reqwest::get(format!("http://{address}/nothing")).await.unwrap();
        assert_eq!(response.status(), 404);
        let other = response.headers()[HEADER].to_str().unwrap().to_owned();
        assert_ne!(other, id);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["request_id"], serde_json::json!(other));
        assert_eq!(body["error"]["code"], serde_json::json!("route_not_found"));
    }
}
