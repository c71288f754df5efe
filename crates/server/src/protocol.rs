//! What the server answers about a request's HTTP itself, in the one JSON error shape: a head
//! too large (431), a URI too long (414), a path that is not UTF-8 once percent-decoded (400),
//! and any error response of the HTTP layer that is not JSON (an extractor's plain-text
//! rejection), which is rewritten into the shape with the same status.
//!
//! hyper reads the head before any of our code runs and refuses, with an empty body, a URI over
//! 65 534 bytes, a head over its read buffer (about 400 KiB), more than 100 header fields and
//! a head it cannot parse; it cannot be told to answer otherwise. So the limits here sit below hyper's: a request over
//! them reaches this layer and gets the JSON shape and a `Request-Id`. Only a request beyond
//! hyper's own limits gets hyper's empty answer.

use crate::error::{ApiError, ErrorType};
use crate::request_id;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The longest request target (path and query) served: 8 KiB, as common proxies allow; every
/// URI of this API is far shorter.
pub const URI_BYTES_MAX: usize = 8 * 1024;
/// The most bytes of header fields served, counted as on the wire (`name: value` and CRLF).
pub const HEADER_BYTES_MAX: usize = 64 * 1024;
/// The most bytes of a plain-text error body quoted in the JSON message.
const QUOTED_BYTES_MAX: usize = 512;

/// The outermost layer: assigns the id, serves the request with the id at hand for log lines and
/// error bodies (through [`guard`], in the same layer: a layer costs a boxed
/// future and a clone of the router per request), and answers the id in `Request-Id`.
pub async fn layer(request: Request, next: Next) -> Response {
    let id = request_id::new();
    let header = HeaderValue::from_str(&id);
    let mut response = request_id::scope(id, guard(request, next)).await;
    if let Ok(header) = header {
        response.headers_mut().insert(request_id::HEADER, header);
    }
    response
}

/// Run by [`layer`], inside the request's span: refuses what
/// [`refuse_head`] refuses, and rewrites a non-JSON error answer into the error shape.
pub async fn guard(request: Request, next: Next) -> Response {
    if let Some(error) = refuse_head(&request) {
        return error.into_response();
    }
    let response = next.run(request).await;
    json_errors(response).await
}

/// Why a request is refused on its head alone, if it is.
fn refuse_head(request: &Request) -> Option<ApiError> {
    let uri = request.uri();
    let target = uri.path_and_query().map_or(0, |p| p.as_str().len()) + uri.authority().map_or(0, |a| a.as_str().len());
    if target > URI_BYTES_MAX {
        return Some(ApiError::new(
            StatusCode::URI_TOO_LONG,
            ErrorType::InvalidRequestError,
            "uri_too_long",
            format!("The request target is {target} bytes long; at most {URI_BYTES_MAX} are served."),
        ));
    }
    let header_bytes: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    if header_bytes > HEADER_BYTES_MAX {
        return Some(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorType::InvalidRequestError,
            "headers_too_large",
            format!("The header fields are {header_bytes} bytes; at most {HEADER_BYTES_MAX} are served."),
        ));
    }
    if !path_is_utf8(uri.path()) {
        return Some(ApiError::bad_request(
            "invalid_path",
            "The URL path is not valid UTF-8 once percent-decoded: encode text as UTF-8 before percent-encoding it.",
        ));
    }
    None
}

/// Whether `path`, percent-decoded, is UTF-8. The raw path is ASCII (hyper refuses anything
/// else), so only `%XX` escapes can make it otherwise: without a `%` there is nothing to decode.
fn path_is_utf8(path: &str) -> bool {
    if !path.contains('%') {
        return true;
    }
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = match (bytes[at], bytes.get(at + 1..at + 3)) {
            (b'%', Some(&[high, low])) => hex_digit(high).zip(hex_digit(low)).map(|(high, low)| high << 4 | low),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                at += 3;
            }
            None => {
                decoded.push(bytes[at]);
                at += 1;
            }
        }
    }
    std::str::from_utf8(&decoded).is_ok()
}

fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte).to_digit(16).and_then(|digit| u8::try_from(digit).ok())
}

/// `response` itself, unless it is an error with a body that is not JSON: then the same status
/// in the error shape, quoting the plain text for a 4xx (it describes the request) and never
/// for a 5xx (it could describe the server).
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    // The operator console's error pages are HTML of its own making (`console::Problem`).
    let is_page = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_json || is_page {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, QUOTED_BYTES_MAX).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let mut error = shaped(status, text.trim());
    error.retry_after = parts.headers.contains_key(header::RETRY_AFTER);
    error.into_response()
}

/// The error shape for a bare `status` whose body said `text`.
fn shaped(status: StatusCode, text: &str) -> ApiError {
    if status.is_server_error() {
        return ApiError::new(status, ErrorType::ApiError, "internal_error", "The service failed; retry later.");
    }
    let code = match status {
        StatusCode::NOT_FOUND => "route_not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        _ => "invalid_request",
    };
    let reason = status.canonical_reason().unwrap_or("The request was refused");
    let message = if text.is_empty() { format!("{reason}.") } else { format!("{reason}: {text}") };
    ApiError::new(status, ErrorType::InvalidRequestError, code, message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked_for_utf8_after_decoding() {
        assert!(path_is_utf8("/v1/accounts/acct_01j9z6m5v8k3q2w1x0y9z8a7b6"));
        assert!(path_is_utf8("/v1/accounts/caf%C3%A9"));
        assert!(path_is_utf8("/v1/accounts/100%"), "a stray % is not an escape");
        assert!(path_is_utf8("/v1/accounts/%zz"));
        assert!(path_is_utf8("/v1/accounts/%+f"), "`+f` is no escape");
        assert!(!path_is_utf8("/v1/accounts/%FF"));
        assert!(!path_is_utf8("/v1/accounts/%C3"), "a cut sequence");
        assert!(!path_is_utf8("/v1/%c3%28/x"));
    }

    #[test]
    fn bare_errors_get_a_code_by_status() {
        let error = shaped(StatusCode::PAYLOAD_TOO_LARGE, "");
        assert_eq!((error.code.as_str(), error.message.as_str()), ("body_too_large", "Payload Too Large."));
        let error = shaped(StatusCode::BAD_REQUEST, "Invalid URL: bad");
        assert_eq!((error.code.as_str(), error.message.as_str()), ("invalid_request", "Bad Request: Invalid URL: bad"));
        let error = shaped(StatusCode::INTERNAL_SERVER_ERROR, "panicked at src/x.rs: secret");
        assert_eq!(error.message, "The service failed; retry later.");
        assert_eq!(error.kind, ErrorType::ApiError);
    }
}
