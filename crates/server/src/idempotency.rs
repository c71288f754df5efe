//! The `Post` extractor: authentication, the body (size limit, content type) and the
//! `Idempotency-Key` of a write, with the "replay or process" step before any parsing.
//!
//! # The replay rule
//!
//! A write repeated with its `Idempotency-Key` (same method, path and body) executes nothing
//! again and is answered what the first request was answered, byte for byte (status and
//! body), with `Idempotent-Replayed: true`: on every route, whether the first answer was a
//! success or a refusal (a transfer refused with 422 included). The same key with another
//! request is 422 `idempotency_key_reused`.
//!
//! - The response is saved with its effect, in the engine's commit, and rendered there
//!   ([`crate::Renderer::render`]). The engine does not know the request id, so an error body
//!   saved for a key names no `request_id`, and neither does the first answer, which is the
//!   saved one. Every answer, a replay too, names its own request in its `Request-Id` header.
//! - `POST /v1/transfers` saves the result codes; the answer is rendered again from them and
//!   from the stored transfer, the same function of the same data.
//! - `POST /v1/batches` saves no response: the 202 is rendered again from the batch's creation
//!   fields, the batch as it was taken in (`validating`, nothing counted;
//!   `routes::batches::BatchJson::taken_in`). `GET /v1/batches/{id}` tells its state now.
//! - What is refused before the engine (400, 401, 413, `idempotency_key_reused`) and 503 are
//!   not saved: a retry is checked, and answered, anew.

use crate::auth::Auth;
use crate::error::{json_response, ApiError};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use paycore_engine::IdempotencyKey;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The header that carries the key.
pub const HEADER: &str = "idempotency-key";
/// The most characters a key may have.
pub const KEY_LENGTH_MAX: usize = 255;

/// A response saved for an idempotency key: what the first request was answered (see the
/// replay rule above; an error body in it names no request id).
#[derive(Clone, Debug)]
pub struct Saved {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Saved {
    /// The saved response, marked `Idempotent-Replayed: true`.
    pub fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let mut response = json_response(status, self.body);
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
        response
    }
}

/// An authenticated write: its tenant, raw body and idempotency key. If the key was used
/// before with the same request, `saved` holds the response to replay and the body must not
/// be processed again; with a different request, extraction fails with
/// `idempotency_key_reused`.
pub struct Post {
    pub auth: Auth,
    pub body: Bytes,
    pub key: Option<IdempotencyKey>,
    pub saved: Option<Saved>,
}

impl FromRequest<Arc<AppState>> for Post {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Post, ApiError> {
        let (mut parts, body) = request.into_parts();
        let auth = Auth::from_request_parts(&mut parts, state).await?;
        let key = key_from(&parts.headers)?;
        if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
            let is_json = content_type
                .to_str()
                .ok()
                .and_then(|v| v.split(';').next())
                .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
            if !is_json {
                return Err(ApiError::bad_request(
                    "invalid_json",
                    "Unsupported Content-Type: send the body as JSON with `Content-Type: application/json`.",
                ));
            }
        }
        // What the fingerprint covers besides the body, kept only when there is a key.
        let target = key.is_some().then(|| (parts.method.clone(), parts.uri.path().to_owned()));
        let request = Request::from_parts(parts, body);
        let body = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    crate::error::ErrorType::InvalidRequestError,
                    "body_too_large",
                    format!("The body is larger than the limit of {} bytes.", state.max_body_bytes),
                )
            } else {
                ApiError::bad_request("invalid_json", format!("The body could not be read: {rejection}."))
            }
        })?;
        let (Some(key), Some((method, path))) = (key, target) else {
            return Ok(Post { auth, body, key: None, saved: None });
        };
        let key = IdempotencyKey { fingerprint: fingerprint(method.as_str(), &path, &body), key };
        let (tenant, text) = (auth.tenant, key.key.clone());
        let record = state
            .point_reads
            .read("The idempotency lookup failed.", move |reader| reader.idempotency(tenant, &text))
            .await?;
        let saved = match record {
            None => None,
            Some(record) if record.fingerprint == key.fingerprint => {
                Some(Saved { status: record.status, body: record.body })
            }
            Some(_) => return Err(ApiError::key_reused()),
        };
        Ok(Post { auth, body, key: Some(key), saved })
    }
}

/// The request's `Idempotency-Key`, if it has one. Given twice it is refused, whether the two
/// agree or not: which one a proxy or the ledger would act on is not a question to leave open.
pub(crate) fn key_from(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(ApiError::invalid("Idempotency-Key", "The Idempotency-Key header must be given once."));
    }
    valid_key(value.as_bytes()).map(Some)
}

fn valid_key(value: &[u8]) -> Result<String, ApiError> {
    let printable = value.iter().all(|b| (0x20..=0x7e).contains(b));
    if value.is_empty() || value.len() > KEY_LENGTH_MAX || !printable {
        return Err(ApiError::invalid(
            "Idempotency-Key",
            "The Idempotency-Key header must be 1 to 255 printable ASCII characters.",
        ));
    }
    Ok(String::from_utf8_lossy(value).into_owned())
}

/// SHA-256 over the method, the path and the body.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(method.as_bytes());
    hash.update(b"\n");
    hash.update(path.as_bytes());
    hash.update(b"\n");
    hash.update(body);
    hash.finalize().into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn headers(keys: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for key in keys {
            headers.append(HEADER, HeaderValue::from_str(key).unwrap());
        }
        headers
    }

    #[test]
    fn a_key_given_twice_is_refused_even_when_both_agree() {
        assert_eq!(key_from(&headers(&[])).unwrap(), None);
        assert_eq!(key_from(&headers(&["order-1"])).unwrap().as_deref(), Some("order-1"));
        for twice in [["order-1", "order-2"], ["order-1", "order-1"]] {
            let error = key_from(&headers(&twice)).unwrap_err();
            assert_eq!((error.status, error.param.as_deref()), (StatusCode::BAD_REQUEST, Some("Idempotency-Key")));
        }
    }
}
