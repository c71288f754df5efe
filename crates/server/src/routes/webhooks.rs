//! `/v1/webhook_endpoints` and `/v1/webhook_deliveries`: a tenant's endpoints, the log of
//! deliveries to each, and replay. An endpoint's signing `secret` is in the creation response
//! only; it is stored (HMAC needs it) but never shown again.

use super::path_id;
use crate::auth::Auth;
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::Post;
use crate::ids::{new_id, now_ns};
use crate::json;
use crate::render::{self, rfc3339};
use crate::ssrf::Refusal;
use crate::webhooks::generate_secret;
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use paycore_ledger::{DeliveryId, EventId, EventKind, WebhookEndpointId};
use paycore_store::{AdminStore, Delivery, WebhookEndpoint};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// The longest endpoint URL, in bytes.
pub const URL_LENGTH_MAX: usize = 2048;
/// The most endpoints a tenant may have.
pub const ENDPOINTS_MAX: usize = 16;
/// The default and largest page of the delivery log.
const DELIVERIES_LIMIT_DEFAULT: usize = 20;
const DELIVERIES_LIMIT_MAX: usize = 100;

/// Creates a webhook endpoint.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// Where to POST events: an `http://` or `https://` URL whose host is a public address
    /// (unless the server allows private ones).
    pub url: String,
    /// The event types to send, at least one.
    pub events: Vec<String>,
}

/// A webhook endpoint; `secret` only in the creation response.
#[derive(Serialize, ToSchema)]
pub struct EndpointJson {
    pub id: String,
    pub object: &'static str,
    pub url: String,
    pub events: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: String,
}

impl EndpointJson {
    fn new(e: &WebhookEndpoint, secret: Option<String>) -> EndpointJson {
        EndpointJson {
            id: e.id.to_string(),
            object: "webhook_endpoint",
            url: e.url.clone(),
            events: e.events.iter().map(|kind| kind.as_str().to_owned()).collect(),
            secret,
            created_at: rfc3339(e.created_at),
        }
    }
}

/// One delivery of one event to one endpoint.
#[derive(Serialize, ToSchema)]
pub struct DeliveryJson {
    pub id: String,
    pub object: &'static str,
    pub endpoint: String,
    pub event: String,
    /// `pending` (will be tried), `delivered`, or `failed` (given up).
    pub status: &'static str,
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_at: Option<String>,
    pub created_at: String,
}

impl DeliveryJson {
    fn new(d: &Delivery) -> DeliveryJson {
        let status = match (d.delivered_at, d.next_attempt_at) {
            (_, Some(_)) => "pending",
            (Some(_), None) => "delivered",
            (None, None) => "failed",
        };
        DeliveryJson {
            id: DeliveryId(u128::from(d.id)).to_string(),
            object: "webhook_delivery",
            endpoint: d.endpoint.to_string(),
            event: EventId(u128::from(d.seq)).to_string(),
            status,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at.map(rfc3339),
            last_status: d.last_status,
            last_error: d.last_error.clone(),
            delivered_at: d.delivered_at.map(rfc3339),
            created_at: rfc3339(d.created_at),
        }
    }
}

async fn admin<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&dyn AdminStore) -> paycore_store::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.admin.clone();
    Ok(tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|_| ApiError::internal("A store call failed."))??)
}

/// `POST /v1/webhook_endpoints` (201). The secret is shown in this response only.
#[utoipa::path(post, path = "/v1/webhook_endpoints", tag = "webhooks",
    request_body = CreateEndpoint,
    responses(
        (status = 201, description = "The endpoint, with its `secret` (shown this once)", body = EndpointJson),
        (status = 400, description = "Invalid parameter, `webhook_url_not_public`, or `too_many_endpoints`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create(State(state): State<Arc<AppState>>, post: Post) -> Result<Response, ApiError> {
    let params: CreateEndpoint = json::parse(&post.body)?;
    check_url(&state, &params.url).await?;
    let events = check_events(params.events)?;
    let tenant = post.auth.tenant;
    let endpoint = WebhookEndpoint {
        id: WebhookEndpointId(new_id()),
        tenant,
        url: params.url,
        events,
        secret: generate_secret(),
        created_at: now_ns(),
    };
    let stored = endpoint.clone();
    let count = admin(&state, move |s| {
        let count = s.webhook_endpoints(tenant)?.len();
        if count < ENDPOINTS_MAX {
            s.insert_webhook_endpoint(&stored)?;
        }
        Ok(count)
    })
    .await?;
    if count >= ENDPOINTS_MAX {
        return Err(ApiError::bad_request(
            "too_many_endpoints",
            format!("A tenant may have at most {ENDPOINTS_MAX} webhook endpoints (limit `webhook_endpoints_max`)."),
        ));
    }
    let body = EndpointJson::new(&endpoint, Some(endpoint.secret.clone()));
    Ok(super::rendered(render::json(201, &body)))
}

/// `GET /v1/webhook_endpoints`: the tenant's endpoints, newest first, without secrets.
#[utoipa::path(get, path = "/v1/webhook_endpoints", tag = "webhooks",
    responses((status = 200, description = "`{object: list, data: [endpoint], has_more, next_cursor}`")),
    security(("bearer" = [])))]
pub async fn list(State(state): State<Arc<AppState>>, auth: Auth) -> Result<Response, ApiError> {
    let tenant = auth.tenant;
    let endpoints = admin(&state, move |s| s.webhook_endpoints(tenant)).await?;
    let body = serde_json::json!({
        "object": "list",
        "data": endpoints.iter().map(|e| EndpointJson::new(e, None)).collect::<Vec<_>>(),
        "has_more": false,
        "next_cursor": null,
    });
    Ok(super::rendered(render::json(200, &body)))
}

/// `DELETE /v1/webhook_endpoints/{id}`: no more deliveries to it.
#[utoipa::path(delete, path = "/v1/webhook_endpoints/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "`we_…`")),
    responses(
        (status = 200, description = "`{id, object, deleted: true}`"),
        (status = 404, description = "`resource_missing`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let endpoint: WebhookEndpointId = path_id(&id, "webhook endpoint")?;
    let tenant = auth.tenant;
    if !admin(&state, move |s| s.delete_webhook_endpoint(tenant, endpoint)).await? {
        return Err(ApiError::not_found("webhook endpoint", &id));
    }
    let body = serde_json::json!({"id": id, "object": "webhook_endpoint", "deleted": true});
    Ok(super::rendered(render::json(200, &body)))
}

/// `GET /v1/webhook_endpoints/{id}/deliveries?limit=&starting_after=`: newest first.
#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}/deliveries", tag = "webhooks",
    params(
        ("id" = String, Path, description = "`we_…`"),
        ("limit" = Option<u32>, Query, description = "1 to 100, default 20"),
        ("starting_after" = Option<String>, Query, description = "`whd_…`: the page after this delivery"),
    ),
    responses(
        (status = 200, description = "`{object: list, data: [delivery], has_more, next_cursor}`"),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 404, description = "`resource_missing`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn deliveries(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let endpoint: WebhookEndpointId = path_id(&id, "webhook endpoint")?;
    let (limit, after) = page(query.as_deref().unwrap_or(""))?;
    let tenant = auth.tenant;
    let found = admin(&state, move |s| {
        if s.webhook_endpoint(tenant, endpoint)?.is_none() {
            return Ok(None);
        }
        s.deliveries(endpoint, after, limit + 1).map(Some)
    })
    .await?
    .ok_or_else(|| ApiError::not_found("webhook endpoint", &id))?;
    let has_more = found.len() > limit;
    let data: Vec<DeliveryJson> = found.iter().take(limit).map(DeliveryJson::new).collect();
    let next_cursor = if has_more { data.last().map(|d| d.id.clone()) } else { None };
    let body = serde_json::json!({"object": "list", "data": data, "has_more": has_more, "next_cursor": next_cursor});
    Ok(super::rendered(render::json(200, &body)))
}

/// `POST /v1/webhook_deliveries/{id}/replay`: attempts the delivery again now (202).
#[utoipa::path(post, path = "/v1/webhook_deliveries/{id}/replay", tag = "webhooks",
    params(("id" = String, Path, description = "`whd_…`")),
    responses(
        (status = 202, description = "The delivery, due now", body = DeliveryJson),
        (status = 404, description = "`resource_missing`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn replay(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    post: Post,
) -> Result<Response, ApiError> {
    let delivery: DeliveryId = path_id(&id, "webhook delivery")?;
    let delivery = u64::try_from(delivery.0).map_err(|_| ApiError::not_found("webhook delivery", &id))?;
    let tenant = post.auth.tenant;
    let now = now_ns();
    let found = admin(&state, move |s| {
        if !s.replay_delivery(tenant, delivery, now)? {
            return Ok(None);
        }
        s.delivery(tenant, delivery)
    })
    .await?
    .ok_or_else(|| ApiError::not_found("webhook delivery", &id))?;
    Ok(super::rendered(render::json(202, &DeliveryJson::new(&found))))
}

fn page(query: &str) -> Result<(usize, Option<u64>), ApiError> {
    let mut limit = DELIVERIES_LIMIT_DEFAULT;
    let mut after = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=DELIVERIES_LIMIT_MAX).contains(n))
                    .ok_or_else(|| ApiError::invalid("limit", "`limit` must be an integer from 1 to 100."))?;
            }
            "starting_after" => {
                let id: DeliveryId = value.parse().map_err(|_| {
                    ApiError::invalid("starting_after", "`starting_after` must be a delivery id (`whd_…`).")
                })?;
                after =
                    Some(u64::try_from(id.0).map_err(|_| ApiError::invalid("starting_after", "No such delivery."))?);
            }
            _ => return Err(ApiError::invalid(key, format!("Unknown query parameter `{key}`."))),
        }
    }
    Ok((limit, after))
}

/// A webhook URL: http(s), no user name or password, at most [`URL_LENGTH_MAX`] bytes, and
/// (unless private addresses are allowed) a host that is, or resolves only to, public
/// addresses: 400 `webhook_url_not_public` naming `url` otherwise.
async fn check_url(state: &AppState, url: &str) -> Result<(), ApiError> {
    let clean = !url.chars().any(|c| c.is_whitespace() || c.is_control());
    let parsed = reqwest::Url::parse(url).ok().filter(|_| clean && url.len() <= URL_LENGTH_MAX);
    let Some(parsed) = parsed.filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some()) else {
        return Err(ApiError::invalid("url", "`url` must be an http:// or https:// URL of at most 2048 bytes."));
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ApiError::invalid("url", "`url` must not carry a user name or password."));
    }
    match state.webhook.guard.check_url(&parsed).await {
        Ok(()) => Ok(()),
        Err(refusal @ Refusal::NotPublic { .. }) => {
            Err(ApiError::bad_request("webhook_url_not_public", format!("`url`: {refusal}.")).param("url"))
        }
        Err(refusal @ Refusal::Unresolvable { .. }) => Err(ApiError::invalid("url", format!("`url`: {refusal}."))),
    }
}

fn check_events(events: Vec<String>) -> Result<Vec<EventKind>, ApiError> {
    if events.is_empty() {
        return Err(ApiError::invalid("events", "`events` must name at least one event type."));
    }
    let mut kept: Vec<EventKind> = Vec::new();
    for (index, event) in events.into_iter().enumerate() {
        let Some(kind) = EventKind::parse(&event) else {
            let known: Vec<&str> = EventKind::ALL.iter().map(|kind| kind.as_str()).collect();
            return Err(ApiError::invalid(
                format!("events[{index}]"),
                format!("Unknown event type '{event}'. Known: {}.", known.join(", ")),
            ));
        };
        if !kept.contains(&kind) {
            kept.push(kind);
        }
    }
    Ok(kept)
}
