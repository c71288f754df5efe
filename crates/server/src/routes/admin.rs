//! `/v1/tenants` and `/v1/api_keys`: what an `admin` key may do. A new key's secret is in
//! the creation (or rotation) response and nowhere else; only its SHA-256 is stored.

use crate::auth::{generate_key, hash_key, insert_key_for, Auth};
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::Post;
use crate::ids::{new_id, now_ns};
use crate::json;
use crate::render::{self, rfc3339};
use crate::AppState;
use axum::extract::{Path, State};
use axum::response::Response;
use paycore_ledger::TenantId;
use paycore_store::TenantRecord;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// The longest tenant name, in characters.
pub const TENANT_NAME_LENGTH_MAX: usize = 128;
/// The scopes a created key may have.
pub const KEY_SCOPES: [&str; 2] = ["read", "write"];
/// The longest overlap of a rotation, in seconds: 30 days.
pub const OVERLAP_SECONDS_MAX: u64 = 30 * 24 * 3600;
/// The overlap of a rotation that names none, in seconds: 24 hours.
pub const OVERLAP_SECONDS_DEFAULT: u64 = 24 * 3600;

/// Creates a tenant.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// A display name, 1 to 128 characters.
    pub name: Option<String>,
}

/// A tenant.
#[derive(Serialize, ToSchema)]
pub struct TenantJson {
    pub id: String,
    pub object: &'static str,
    pub name: Option<String>,
    pub created_at: String,
}

/// Creates an API key for a tenant.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// The tenant (`ten_…`) the key acts for.
    pub tenant: String,
    /// Some of `read` and `write`.
    pub scopes: Vec<String>,
    /// When the key stops working (RFC 3339, in the future); from then on it is refused with
    /// 401 `api_key_expired`. Default: never.
    pub expires_at: Option<String>,
}

/// Rotates an API key's secret.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateApiKey {
    /// How long the replaced secret keeps working, in seconds (0 to 2592000, 30 days; default
    /// 86400). Never past the key's own `expires_at`.
    pub overlap_seconds: Option<u64>,
}

/// An API key; `secret` only in the creation response.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyJson {
    pub id: String,
    pub object: &'static str,
    pub tenant: String,
    pub scopes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    pub revoked: bool,
    /// When the key stops working; absent: never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// After a rotation: when the replaced secret stops working.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<String>,
}

/// `POST /v1/tenants`: an `admin` key creates a tenant (201).
#[utoipa::path(post, path = "/v1/tenants", tag = "admin",
    request_body = CreateTenant,
    responses(
        (status = 201, description = "The tenant", body = TenantJson),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: not an admin key", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create_tenant(State(state): State<Arc<AppState>>, post: Post) -> Result<Response, ApiError> {
    post.auth.require_admin()?;
    let params: CreateTenant = json::parse(&post.body)?;
    if let Some(name) = &params.name {
        let length = name.chars().count();
        if length == 0 || length > TENANT_NAME_LENGTH_MAX {
            return Err(ApiError::invalid("name", "`name` must be 1 to 128 characters."));
        }
    }
    let tenant = TenantRecord { id: TenantId(new_id()), name: params.name, created_at: now_ns() };
    let admin = state.admin.clone();
    let stored = tenant.clone();
    tokio::task::spawn_blocking(move || admin.insert_tenant(&stored))
        .await
        .map_err(|_| ApiError::internal("Creating the tenant failed."))??;
    let body = TenantJson {
        id: tenant.id.to_string(),
        object: "tenant",
        name: tenant.name,
        created_at: rfc3339(tenant.created_at),
    };
    Ok(super::rendered(render::json(201, &body)))
}

/// `POST /v1/api_keys`: an `admin` key creates a key for a tenant (201). The secret is shown
/// in this response only.
#[utoipa::path(post, path = "/v1/api_keys", tag = "admin",
    request_body = CreateApiKey,
    responses(
        (status = 201, description = "The key, with its `secret` (shown this once)", body = ApiKeyJson),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: not an admin key", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create_key(State(state): State<Arc<AppState>>, post: Post) -> Result<Response, ApiError> {
    post.auth.require_admin()?;
    let params: CreateApiKey = json::parse(&post.body)?;
    let tenant: TenantId =
        params.tenant.parse().map_err(|_| ApiError::invalid("tenant", "`tenant` must be a tenant id (`ten_…`)."))?;
    let scopes = check_scopes(params.scopes)?;
    let expires_at = match &params.expires_at {
        None => None,
        Some(text) => {
            let at = super::statements::parse_rfc3339(text).ok_or_else(|| {
                ApiError::invalid(
                    "expires_at",
                    "`expires_at` must be an RFC 3339 date-time, e.g. 2027-01-31T00:00:00Z.",
                )
            })?;
            if at <= state.clock.now_ns() {
                return Err(ApiError::invalid("expires_at", "`expires_at` must be in the future."));
            }
            Some(at)
        }
    };
    let admin = state.admin.clone();
    if tokio::task::spawn_blocking(move || admin.tenant(tenant))
        .await
        .map_err(|_| ApiError::internal("Reading the tenant failed."))??
        .is_none()
    {
        return Err(ApiError::invalid("tenant", format!("No such tenant: '{}'.", params.tenant)));
    }
    let secret = generate_key();
    let shown = secret.expose().to_owned();
    let admin = state.admin.clone();
    let record =
        tokio::task::spawn_blocking(move || insert_key_for(admin.as_ref(), tenant, &secret, scopes, expires_at))
            .await
            .map_err(|_| ApiError::internal("Storing the key failed."))??;
    tracing::info!(key = %record.id, %tenant, "API key created");
    let body = ApiKeyJson {
        id: record.id,
        object: "api_key",
        tenant: tenant.to_string(),
        scopes: record.scopes,
        secret: Some(shown),
        created_at: Some(rfc3339(record.created_at)),
        revoked: false,
        expires_at: record.expires_at.map(rfc3339),
        previous_secret_expires_at: None,
    };
    Ok(super::rendered(render::json(201, &body)))
}

/// `POST /v1/api_keys/{id}/rotate`: an `admin` key gives a key a new secret (200, shown in
/// this response only). The replaced secret keeps working for `overlap_seconds`, then gets
/// 401 `api_key_expired`. A key has at most two live secrets: rotating again while the
/// replaced one is live keeps that one and drops the current one, so a rotation retried
/// after a lost response never cuts off the secret the client still holds.
#[utoipa::path(post, path = "/v1/api_keys/{id}/rotate", tag = "admin",
    params(("id" = String, Path, description = "`key_…`")),
    request_body = RotateApiKey,
    responses(
        (status = 200, description = "The key, with its new `secret` (shown this once)", body = ApiKeyJson),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: not an admin key", body = ErrorBody),
        (status = 404, description = "`resource_missing`: no such key, or revoked", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn rotate_key(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    post: Post,
) -> Result<Response, ApiError> {
    post.auth.require_admin()?;
    if !valid_key_id(&id) {
        return Err(ApiError::not_found("API key", &id));
    }
    let params: RotateApiKey = if post.body.iter().all(u8::is_ascii_whitespace) {
        RotateApiKey { overlap_seconds: None }
    } else {
        json::parse(&post.body)?
    };
    let overlap = params.overlap_seconds.unwrap_or(OVERLAP_SECONDS_DEFAULT);
    if overlap > OVERLAP_SECONDS_MAX {
        return Err(ApiError::invalid("overlap_seconds", "`overlap_seconds` must be from 0 to 2592000 (30 days)."));
    }
    let now = state.clock.now_ns();
    let until = now.saturating_add(overlap.saturating_mul(1_000_000_000));
    let secret = generate_key();
    let hash = hash_key(&secret);
    let admin = state.admin.clone();
    let key_id = id.clone();
    let record = tokio::task::spawn_blocking(move || admin.rotate_api_key(&key_id, &hash, now, until))
        .await
        .map_err(|_| ApiError::internal("Rotating the key failed."))??
        .ok_or_else(|| ApiError::not_found("API key", &id))?;
    state.keys.forget_key(&id);
    tracing::info!(key = %id, overlap_seconds = overlap, "API key rotated");
    let previous_until = record.expires_at.map_or(until, |expires_at| expires_at.min(until));
    let body = ApiKeyJson {
        id: record.id,
        object: "api_key",
        tenant: record.tenant.to_string(),
        scopes: record.scopes,
        secret: Some(secret.expose().to_owned()),
        created_at: Some(rfc3339(record.created_at)),
        revoked: false,
        expires_at: record.expires_at.map(rfc3339),
        previous_secret_expires_at: Some(rfc3339(previous_until)),
    };
    Ok(super::rendered(render::json(200, &body)))
}

fn valid_key_id(id: &str) -> bool {
    id.starts_with("key_") && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `DELETE /v1/api_keys/{id}`: an `admin` key revokes a key, effective at once.
#[utoipa::path(delete, path = "/v1/api_keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "`key_…`")),
    responses(
        (status = 200, description = "`{id, object, revoked: true}`"),
        (status = 403, description = "`insufficient_scope`: not an admin key", body = ErrorBody),
        (status = 404, description = "`resource_missing`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn revoke_key(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    auth.require_admin()?;
    if !valid_key_id(&id) {
        return Err(ApiError::not_found("API key", &id));
    }
    let admin = state.admin.clone();
    let key_id = id.clone();
    let hash = tokio::task::spawn_blocking(move || admin.revoke_api_key(&key_id))
        .await
        .map_err(|_| ApiError::internal("Revoking the key failed."))??
        .ok_or_else(|| ApiError::not_found("API key", &id))?;
    state.keys.forget(&hash);
    state.keys.forget_key(&id);
    tracing::info!(key = %id, "API key revoked");
    let body = serde_json::json!({"id": id, "object": "api_key", "revoked": true});
    Ok(super::rendered(render::json(200, &body)))
}

fn check_scopes(scopes: Vec<String>) -> Result<Vec<String>, ApiError> {
    if scopes.is_empty() {
        return Err(ApiError::invalid("scopes", "`scopes` must name at least one of `read` and `write`."));
    }
    let mut kept: Vec<String> = Vec::new();
    for scope in scopes {
        if !KEY_SCOPES.contains(&scope.as_str()) {
            return Err(ApiError::invalid("scopes", format!("Unknown scope '{scope}': use `read` and `write`.")));
        }
        if !kept.contains(&scope) {
            kept.push(scope);
        }
    }
    Ok(kept)
}
