//! The deadline on reading a request's body (`body_read_timeout`): a body that has not arrived
//! in full by then ends in an error, so whatever reads it stops, drops what it has (an upload's
//! partial file is removed: `routes::batches::intake`), and the request is answered 408
//! `request_body_timeout` whatever the handler made of the broken body.
//!
//! The deadline covers the whole body, not the gap between two chunks: a body sent a byte a
//! second would otherwise hold its connection, and an upload's file, for ever.

use crate::error::{ApiError, ErrorType};
use crate::AppState;
use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The body's deadline ran out before its end.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in full within {0:?} (body_read_timeout)")]
struct TimedOut(Duration);

/// The layer: gives the request's body its deadline, and answers 408 when it ran out.
pub async fn layer(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let limit = state.body_read_timeout;
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let timed_out = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| deadline(body, limit, timed_out.clone()));
    let response = next.run(request).await;
    if !timed_out.load(Ordering::Acquire) {
        return response;
    }
    let mut response = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        ErrorType::InvalidRequestError,
        "request_body_timeout",
        format!(
            "The request body did not arrive in full within {limit:?} (body_read_timeout); nothing of it was kept. \
             Send the body without pauses, or ask the operator for a longer body_read_timeout."
        ),
    )
    .into_response();
    // The rest of the body is still on its way: the connection cannot carry another request.
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// `body`, ending in [`TimedOut`] (and setting `timed_out`) if it has not ended `limit` from now.
fn deadline(body: Body, limit: Duration, timed_out: Arc<AtomicBool>) -> Body {
    let at = tokio::time::Instant::now() + limit;
    let stream = futures_util::stream::unfold(Some(body.into_data_stream()), move |stream| {
        let timed_out = timed_out.clone();
        async move {
            let mut stream = stream?;
            match tokio::time::timeout_at(at, stream.next()).await {
                Ok(Some(chunk)) => Some((chunk, Some(stream))),
                Ok(None) => None,
                Err(_) => {
                    timed_out.store(true, Ordering::Release);
                    Some((Err(axum::Error::new(TimedOut(limit))), None))
                }
            }
        }
    });
    Body::from_stream(stream)
}
