//! Console sessions: an HMAC-signed cookie that names the signed-in API key by its SHA-256
//! (never the key itself), with an expiry and a random session id; the CSRF token of a
//! session is an HMAC of its id. Nothing is stored: any API node that has the same
//! `console_secret` (`PAYCORE_CONSOLE_SECRET`) accepts the cookie, and the key is looked up
//! again on every request, so revoking the key ends its sessions at once. Signing out
//! records the session id in the store (`AdminStore::end_console_session`, pruned once the
//! cookie would have expired anyway), which every node reads on every request.

use crate::auth::{Auth, Secret};
use crate::webhooks::hmac_sha256;
use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use paycore_store::ApiKeyRecord;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The session cookie.
pub const COOKIE: &str = "paycore_console";
/// The sign-in form's own cookie (double submit): a sign-in posted from another site has no
/// way to know it, so nobody can be signed in with someone else's key (login CSRF).
pub const SIGN_IN_COOKIE: &str = "paycore_console_sign_in";
/// How long a session lasts.
pub const SESSION_SECONDS: u64 = 8 * 3600;
/// The form field and the header (for the batch upload's `fetch`) that carry the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The console's keys and the sessions signed out on this node.
pub struct Sessions {
    secret: [u8; 32],
    /// Cookies always `Secure` (TLS in front of the server), else only when the request says
    /// `X-Forwarded-Proto: https`.
    secure: bool,
    signed_out: Mutex<HashMap<[u8; 16], u64>>,
}

impl Sessions {
    /// Keyed by `secret` (the same on every API node), or by a random key of this process
    /// (sessions then end when it stops).
    pub fn new(secret: Option<&Secret>, secure: bool) -> Sessions {
        let secret = match secret {
            Some(secret) => Sha256::digest(secret.expose().as_bytes()).into(),
            None => {
                let mut random = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut random);
                random
            }
        };
        Sessions { secret, secure, signed_out: Mutex::new(HashMap::new()) }
    }

    /// A new session's cookie value for the key with this hash, signed in at `now` (seconds).
    pub fn issue(&self, key_hash: &[u8; 32], now: u64) -> String {
        let mut payload = Vec::with_capacity(56);
        payload.extend_from_slice(key_hash);
        payload.extend_from_slice(&(now + SESSION_SECONDS).to_be_bytes());
        let mut id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut id);
        payload.extend_from_slice(&id);
        let mac = hmac_sha256(&self.secret, &payload);
        format!("{}.{}", hex(&payload), hex(&mac))
    }

    /// The key hash, expiry and id of a cookie value this node signed, unexpired and not
    /// signed out; `None` for anything else.
    pub fn open(&self, value: &str, now: u64) -> Option<Cookie> {
        let (payload, mac) = value.split_once('.')?;
        let (payload, mac) = (unhex(payload)?, unhex(mac)?);
        if payload.len() != 56 || !same(&mac, &hmac_sha256(&self.secret, &payload)) {
            return None;
        }
        let key_hash: [u8; 32] = payload[..32].try_into().ok()?;
        let expires = u64::from_be_bytes(payload[32..40].try_into().ok()?);
        let id: [u8; 16] = payload[40..56].try_into().ok()?;
        if expires <= now || self.signed_out.lock().ok()?.contains_key(&id) {
            return None;
        }
        Some(Cookie { key_hash, expires, id })
    }

    /// Forgets a session (sign-out), and the signed-out sessions that have expired since.
    pub fn sign_out(&self, cookie: &Cookie, now: u64) {
        if let Ok(mut signed_out) = self.signed_out.lock() {
            signed_out.retain(|_, expires| *expires > now);
            signed_out.insert(cookie.id, cookie.expires);
        }
    }

    /// The CSRF token of a session: an HMAC of its id, so it needs no storage and dies with it.
    pub fn csrf(&self, id: &[u8; 16]) -> String {
        hex(&hmac_sha256(&self.secret, &[b"csrf:".as_slice(), id].concat()))
    }

    /// The `Set-Cookie` value that sets `name` for the console's paths.
    pub fn set_cookie(&self, headers: &HeaderMap, name: &str, value: &str, max_age: u64) -> String {
        let secure = if self.secure || forwarded_https(headers) { "; Secure" } else { "" };
        format!("{name}={value}; Path=/console; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
    }
}

/// A proxy in front of the server says the client came over TLS. Trusted only to add
/// `Secure`, which it can never weaken.
fn forwarded_https(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// What a session cookie says.
#[derive(Clone, Copy)]
pub struct Cookie {
    pub key_hash: [u8; 32],
    pub expires: u64,
    pub id: [u8; 16],
}

/// The signed-in operator: the key's tenant and what its scopes allow.
pub struct Session {
    pub auth: Auth,
    pub can_write: bool,
    pub csrf: String,
    pub cookie: Cookie,
    pub key_id: String,
}

impl Session {
    /// Whether `token` is this session's CSRF token (compared in constant time).
    pub fn csrf_ok(&self, token: Option<&str>) -> bool {
        token.is_some_and(|token| same(token.as_bytes(), self.csrf.as_bytes()))
    }
}

/// What the key's scopes let it do in the console: read needs `read` (or `admin`), writes
/// `write` (or `admin`), as the API decides (`auth::Auth`).
pub fn can(record: &ApiKeyRecord, scope: &str) -> bool {
    record.scopes.iter().any(|s| s == scope || s == "admin")
}

/// Why a request has no session: the console answers it with the sign-in page.
pub struct SignedOut;

impl FromRequestParts<Arc<AppState>> for Session {
    type Rejection = SignedOut;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Session, SignedOut> {
        let now = crate::ids::now_ns() / 1_000_000_000;
        let value = cookie(&parts.headers, COOKIE).ok_or(SignedOut)?;
        let cookie = state.console.open(&value, now).ok_or(SignedOut)?;
        // Signed out on another API node (or before a restart): the store says so.
        let (admin, id) = (state.admin.clone(), cookie.id);
        match crate::request_id::spawn_blocking(move || admin.console_session_ended(&id)).await {
            Ok(Ok(false)) => {}
            _ => return Err(SignedOut),
        }
        // The key's record as the API reads it, on the service clock: an expired key (or a
        // rotated-out secret past its overlap) ends the session as it ends API access.
        let clock_now = state.clock.now_ns();
        let record = match state.keys.cached(&cookie.key_hash, clock_now) {
            Some(record) => record,
            None => {
                let (reader, cache, hash) = (state.reader.clone(), state.keys.clone(), cookie.key_hash);
                crate::request_id::spawn_blocking(move || cache.lookup(reader.as_ref(), hash, clock_now))
                    .await
                    .map_err(|_| SignedOut)?
                    .map_err(|_| SignedOut)?
                    .ok_or(SignedOut)?
            }
        };
        if !can(&record, "read") || crate::auth::check_expiry(&record, clock_now).is_err() {
            return Err(SignedOut);
        }
        Ok(Session {
            auth: Auth { tenant: record.tenant, admin: record.scopes.iter().any(|s| s == "admin") },
            can_write: can(&record, "write"),
            csrf: state.console.csrf(&cookie.id),
            cookie,
            key_id: record.id.clone(),
        })
    }
}

/// The value of the cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}

/// A random token, hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex(&bytes)
}

/// Equal bytes, in time that does not depend on where they differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_opens_until_it_expires_is_changed_or_signed_out() {
        let sessions = Sessions::new(Some(&Secret::new("s".into())), false);
        let value = sessions.issue(&[7; 32], 1_000);
        let cookie = sessions.open(&value, 1_001).unwrap();
        assert_eq!((cookie.key_hash, cookie.expires), ([7; 32], 1_000 + SESSION_SECONDS));
        assert!(sessions.open(&value, 1_000 + SESSION_SECONDS).is_none(), "expired");
        // Another key hash under the same MAC, or the same cookie under another secret.
        let forged = format!("{}{}", "08".repeat(32), &value[64..]);
        assert!(sessions.open(&forged, 1_001).is_none());
        assert!(Sessions::new(Some(&Secret::new("t".into())), false).open(&value, 1_001).is_none());
        assert!(Sessions::new(None, false).open(&value, 1_001).is_none());
        for junk in ["", ".", "zz.zz", "00.00", &value[1..]] {
            assert!(sessions.open(junk, 1_001).is_none(), "{junk}");
        }
        sessions.sign_out(&cookie, 1_002);
        assert!(sessions.open(&value, 1_003).is_none(), "signed out");
        assert_ne!(sessions.csrf(&cookie.id), sessions.csrf(&[0; 16]));
    }

    #[test]
    fn cookies_are_strict_http_only_and_secure_behind_tls() {
        let plain = Sessions::new(None, false);
        let none = HeaderMap::new();
        let set = plain.set_cookie(&none, COOKIE, "v", 60);
        assert_eq!(set, "paycore_console=v; Path=/console; Max-Age=60; HttpOnly; SameSite=Strict");
        let mut forwarded = HeaderMap::new();
        forwarded.insert("x-forwarded-proto", "https".parse().unwrap());
        assert!(plain.set_cookie(&forwarded, COOKIE, "v", 60).ends_with("; Secure"));
        assert!(Sessions::new(None, true).set_cookie(&none, COOKIE, "v", 60).ends_with("; Secure"));
    }
}
