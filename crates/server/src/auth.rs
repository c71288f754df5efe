//! API keys: `Authorization: Bearer <key>`. Keys are stored only as their SHA-256; every request
//! runs on behalf of its key's tenant.
//!
//! A key may carry an expiry (401 `api_key_expired` from then on), and rotates with an overlap:
//! after `POST /v1/api_keys/{id}/rotate` the new secret and the one it replaced both work until
//! the overlap ends. Both are checked against the service clock (`Config::clock`) on every
//! request, cached or not: a cached record carries its expiry. A cached record is also read
//! again from the store after [`KEY_CACHE_SECONDS`], so a rotation or a revocation made on
//! another API node (cluster mode) takes effect here within that time.

use crate::error::ApiError;
use crate::ids::{new_id, new_prefixed_id, now_ns};
use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, Method};
use paycore_ledger::TenantId;
use paycore_store::{AdminStore, ApiKeyRecord, Reader};
use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// A secret (an API key) that never shows itself in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The SHA-256 of a key, as stored.
pub fn hash_key(key: &Secret) -> [u8; 32] {
    Sha256::digest(key.expose().as_bytes()).into()
}

/// A new random key: `sk_` and 40 letters and digits from the operating system's generator.
pub fn generate_key() -> Secret {
    let body: String = rand::rngs::OsRng.sample_iter(&Alphanumeric).take(40).map(char::from).collect();
    Secret(format!("sk_{body}"))
}

/// Stores a key for a new tenant with every scope, and returns its record.
pub fn insert_key(admin: &dyn AdminStore, key: &Secret) -> Result<ApiKeyRecord, paycore_store::StoreError> {
    let scopes = vec!["admin".to_owned(), "read".to_owned(), "write".to_owned()];
    insert_key_for(admin, TenantId(new_id()), key, scopes, None)
}

/// Stores a key for `tenant` with `scopes`, and returns its record.
pub fn insert_key_for(
    admin: &dyn AdminStore,
    tenant: TenantId,
    key: &Secret,
    scopes: Vec<String>,
    expires_at: Option<u64>,
) -> Result<ApiKeyRecord, paycore_store::StoreError> {
    let record = ApiKeyRecord {
        id: new_prefixed_id("key"),
        tenant,
        hash: hash_key(key),
        scopes,
        created_at: now_ns(),
        revoked: false,
        expires_at,
    };
    admin.insert_api_key(&record)?;
    Ok(record)
}

/// On first start (no keys stored), makes the first key: `env_key` (from `PAYCORE_API_KEY`) if
/// given, else a new one written to `<data_dir>/api-key` with mode 0600.
pub fn bootstrap(
    reader: &dyn Reader,
    admin: &dyn AdminStore,
    data_dir: &Path,
    env_key: Option<Secret>,
) -> anyhow::Result<()> {
    if reader.api_key_count()? > 0 {
        return Ok(());
    }
    match env_key {
        Some(key) => match insert_key(admin, &key) {
            Ok(record) => tracing::info!(tenant = %record.tenant, "first API key taken from PAYCORE_API_KEY"),
            // Cluster mode: another API node, started at the same moment with the same key,
            // stored it first.
            Err(paycore_store::StoreError::Conflict(_)) => {
                tracing::info!("first API key from PAYCORE_API_KEY already stored by another node");
            }
            Err(error) => return Err(error.into()),
        },
        None => {
            let key = generate_key();
            let path = data_dir.join("api-key");
            write_secret_file(&path, &key)?;
            let record = insert_key(admin, &key)?;
            tracing::info!(tenant = %record.tenant, path = %path.display(), "first API key generated and written to the file");
        }
    }
    Ok(())
}

fn write_secret_file(path: &PathBuf, key: &Secret) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    writeln!(file, "{}", key.expose())?;
    file.sync_all()?;
    Ok(())
}

/// How long a cached key record is used before it is read from the store again, in seconds
/// of the service clock.
pub const KEY_CACHE_SECONDS: u64 = 30;

/// A cached key record and when (ns, service clock) it was read.
type Cached = (Arc<ApiKeyRecord>, u64);

/// Key lookups, cached in memory; revoking or rotating a key drops its entries
/// ([`KeyCache::forget_key`]), and every entry is read again after [`KEY_CACHE_SECONDS`].
pub struct KeyCache {
    /// Each record with the time (ns, service clock) it was read.
    keys: RwLock<HashMap<[u8; 32], Cached>>,
}

impl KeyCache {
    pub fn new() -> KeyCache {
        KeyCache { keys: RwLock::new(HashMap::new()) }
    }

    /// The cached record of the key with this hash at `now` (ns), without touching the store;
    /// `None` when not cached or cached too long ago.
    pub fn cached(&self, hash: &[u8; 32], now: u64) -> Option<Arc<ApiKeyRecord>> {
        let keys = self.keys.read().ok()?;
        let (record, read_at) = keys.get(hash)?;
        (now.saturating_sub(*read_at) < KEY_CACHE_SECONDS * 1_000_000_000).then(|| record.clone())
    }

    /// The record of the key with this hash, from the cache or the store; `None` if unknown or
    /// revoked. Expiry is the caller's to check ([`check_expiry`]).
    pub fn lookup(&self, reader: &dyn Reader, hash: [u8; 32], now: u64) -> Result<Option<Arc<ApiKeyRecord>>, ApiError> {
        if let Some(record) = self.cached(&hash, now) {
            return Ok(Some(record));
        }
        let Some(record) = reader.api_key(&hash)?.filter(|r| !r.revoked) else {
            self.forget(&hash);
            return Ok(None);
        };
        let record = Arc::new(record);
        if let Ok(mut keys) = self.keys.write() {
            keys.insert(hash, (record.clone(), now));
        }
        Ok(Some(record))
    }

    /// Drops a secret from the cache, so that its next use is looked up (and refused if revoked).
    pub fn forget(&self, hash: &[u8; 32]) {
        if let Ok(mut keys) = self.keys.write() {
            keys.remove(hash);
        }
    }

    /// Drops every cached secret of the key `id` (its current one and a rotated-out one).
    pub fn forget_key(&self, id: &str) {
        if let Ok(mut keys) = self.keys.write() {
            keys.retain(|_, (record, _)| record.id != id);
        }
    }
}

/// Refuses a key (or a rotated-out secret) whose time is up at `now`: 401 `api_key_expired`.
pub fn check_expiry(record: &ApiKeyRecord, now: u64) -> Result<(), ApiError> {
    match record.expires_at {
        Some(expires_at) if now >= expires_at => Err(ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            crate::error::ErrorType::AuthenticationError,
            "api_key_expired",
            format!(
                "This API key expired at {}: use its new secret, or ask an admin for a new key.",
                crate::render::rfc3339(expires_at)
            ),
        )),
        _ => Ok(()),
    }
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache::new()
    }
}

/// The authenticated caller: its tenant. Reads need the `read` scope, writes `write`;
/// `admin` allows both and the admin routes. Every authenticated request takes a token of its
/// key's rate limit.
#[derive(Clone, Copy, Debug)]
pub struct Auth {
    pub tenant: TenantId,
    pub admin: bool,
}

impl Auth {
    /// Refuses callers without the `admin` scope: 403 `insufficient_scope`.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.admin {
            return Ok(());
        }
        Err(insufficient_scope("admin"))
    }
}

fn insufficient_scope(scope: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        crate::error::ErrorType::AuthenticationError,
        "insufficient_scope",
        format!("This API key lacks the `{scope}` scope."),
    )
}

/// The id of the API key that made the request (`key_…`): who, in an account's audit. Taken
/// after [`Auth`] (which checked the key, its scope and its rate), from the key cache.
#[derive(Clone, Debug)]
pub struct Actor(pub String);

impl FromRequestParts<Arc<AppState>> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Actor, ApiError> {
        Ok(Actor(key_record(parts, state).await?.id.clone()))
    }
}

impl FromRequestParts<Arc<AppState>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Auth, ApiError> {
        let record = key_record(parts, state).await?;
        let scope = if parts.method == Method::GET || parts.method == Method::HEAD { "read" } else { "write" };
        if !record.scopes.iter().any(|s| s == scope || s == "admin") {
            return Err(insufficient_scope(scope));
        }
        if state.rate.enabled() {
            let quota = match state.rate.check(&record.id, std::time::Instant::now()) {
                Some(quota) => quota,
                None => {
                    let shared = state.clone();
                    let key = record.id.clone();
                    crate::request_id::spawn_blocking(move || {
                        shared.rate.lease(&key, std::time::Instant::now(), crate::ids::now_ns())
                    })
                    .await
                    .map_err(|_| ApiError::internal("The rate limit check failed."))??
                }
            };
            crate::ratelimit::record(quota);
            quota.into_result(state.rate.rate())?;
        }
        let admin = record.scopes.iter().any(|s| s == "admin");
        Ok(Auth { tenant: record.tenant, admin })
    }
}

/// The record of the request's API key (401 without a usable one).
async fn key_record(parts: &Parts, state: &Arc<AppState>) -> Result<Arc<ApiKeyRecord>, ApiError> {
    let mut headers = parts.headers.get_all(header::AUTHORIZATION).iter();
    let header = headers
        .next()
        .ok_or_else(|| ApiError::unauthorized("No API key provided. Send it as `Authorization: Bearer <key>`."))?;
    // Two keys: which one a proxy checked and which one we would use may differ, so
    // neither is looked at. A 401 like every other unusable Authorization header.
    if headers.next().is_some() {
        return Err(ApiError::unauthorized(
            "More than one Authorization header: send exactly one, `Authorization: Bearer <key>`.",
        ));
    }
    let key = header
        .to_str()
        .ok()
        .and_then(|value| {
            let (scheme, key) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
        })
        .filter(|key| !key.is_empty())
        .ok_or_else(|| ApiError::unauthorized("The Authorization header must be `Bearer <key>`."))?;
    // Hashing is a microsecond; a cached key (every request after a key's first) is
    // answered here, on the async worker, without a hop to a blocking thread.
    let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    let now = state.clock.now_ns();
    let record = match state.keys.cached(&hash, now) {
        Some(record) => record,
        None => {
            let reader = state.reader.clone();
            let cache = state.keys.clone();
            crate::request_id::spawn_blocking(move || cache.lookup(reader.as_ref(), hash, now))
                .await
                .map_err(|_| ApiError::internal("The key lookup failed."))??
                .ok_or_else(|| ApiError::unauthorized("Invalid API key provided."))?
        }
    };
    check_expiry(&record, now)?;
    Ok(record)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn secrets_hide_in_debug() {
        let key = generate_key();
        assert_eq!(format!("{key:?}"), "Secret(…)");
        assert!(key.expose().starts_with("sk_"));
        assert_eq!(key.expose().len(), 43);
        assert!(key.expose()[3..].chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn ids_rise_even_within_a_millisecond_and_across_threads() {
        let made: Vec<Vec<u128>> = std::thread::scope(|scope| {
            // Two threads one at a time, two a thousand at once (as a bulk request makes them).
            let one = || (0..20_000).map(|_| new_id()).collect::<Vec<u128>>();
            let runs = || {
                let mut ids = vec![0u128; 20_000];
                ids.chunks_mut(1000).for_each(crate::ids::new_ids);
                ids
            };
            let threads: Vec<_> = vec![scope.spawn(one), scope.spawn(runs), scope.spawn(one), scope.spawn(runs)];
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        for ids in &made {
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids of one thread out of order");
            // Still the time of making in the top 48 bits.
            let ms = u128::from(now_ns() / 1_000_000);
            assert!(ids.iter().all(|id| (id >> 80) <= ms + 1 && (id >> 80) + 60_000 > ms));
        }
        let mut all: Vec<u128> = made.concat();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 80_000, "an id was made twice");
    }
}
