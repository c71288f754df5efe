//! `/v1/clearing/windows`: clearing (settlement) windows and their net positions. Per tenant
//! and currency one window is open at all times; closing it is a command to the engine
//! (`Command::CloseClearingWindow`), so the boundary is exact: every transfer executed before the
//! close is in the closed window, every one after it in the next.

use super::{execute, path_id, read};
use crate::auth::Auth;
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::Post;
use crate::ids::new_id;
use crate::json;
use crate::render::{self, rfc3339, ClearingWindowJson, ListJson};
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use paycore_ledger::{ClearingWindow, ClearingWindowId, Command, Currency};
use paycore_store::Page;
use serde::Deserialize;
use std::fmt::Write;
use std::sync::Arc;
use utoipa::ToSchema;

/// Closes the open clearing window of a currency and opens the next.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseClearingWindow {
    /// ISO 4217 code, upper case: the window of this currency closes.
    pub currency: String,
}

/// `POST /v1/clearing/windows/close`
#[utoipa::path(post, path = "/v1/clearing/windows/close", tag = "clearing",
    request_body = CloseClearingWindow,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: a retry answers the same closed window")),
    responses(
        (status = 201, description = "The closed window with its positions; the next window is open from its `closed_at`", body = ClearingWindowJson),
        (status = 400, description = "`parameter_missing`, `invalid_currency`", body = ErrorBody),
        (status = 409, description = "`window_empty`: no posted transfer since the window opened", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn close(State(state): State<Arc<AppState>>, post: Post) -> Result<Response, ApiError> {
    if let Some(saved) = post.saved {
        return Ok(saved.into_response());
    }
    let params: CloseClearingWindow = json::parse(&post.body)?;
    let currency = json::currency(&params.currency, "currency")?;
    execute(&state, &post, Command::CloseClearingWindow { window: ClearingWindowId(new_id()), currency }).await
}

/// `GET /v1/clearing/windows`
#[utoipa::path(get, path = "/v1/clearing/windows", tag = "clearing",
    params(
        ("currency" = Option<String>, Query, description = "Only the windows of this currency"),
        ("limit" = Option<u32>, Query, description = "1 to 100, default 20"),
        ("starting_after" = Option<String>, Query, description = "A window id: the `next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "The closed windows, last closed first, without their positions", body = ListJson<ClearingWindowJson>),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (currency, page) = list_query(query.as_deref())?;
    let tenant = auth.tenant;
    let fetch = Page { after: page.after, limit: page.limit + 1 };
    let windows = read(&state, move |r| r.clearing_windows(tenant, currency, fetch)).await?;
    let list = ListJson::page(
        windows,
        page.limit,
        |w| w.window.id.to_string(),
        |w| ClearingWindowJson::new(&w.window, Some(w.accounts)),
    );
    Ok(super::rendered(render::json(200, &list)))
}

/// `GET /v1/clearing/windows/{id}`
#[utoipa::path(get, path = "/v1/clearing/windows/{id}", tag = "clearing",
    params(
        ("id" = String, Path, description = "`cw_…`"),
        ("format" = Option<String>, Query, description = "`json` (default) or `csv`: one line per position, with a header"),
    ),
    responses(
        (status = 200, description = "The window with its positions, as JSON or as CSV (`window,currency,sequence,opened_at,closed_at,account,opening,debits,credits,net,closing`)", body = ClearingWindowJson),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 404, description = "`resource_missing`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn retrieve(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let csv = format_query(query.as_deref())?;
    let window_id: ClearingWindowId = path_id(&id, "clearing window")?;
    let window = read(&state, move |r| r.clearing_window(auth.tenant, window_id))
        .await?
        .ok_or_else(|| ApiError::not_found("clearing window", &id))?;
    if csv {
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], window_csv(&window)).into_response());
    }
    Ok(super::rendered(render::json(200, &ClearingWindowJson::new(&window, None))))
}

/// The CSV of a window: a header, then one line per position in account order. Amounts in
/// minor units; times RFC 3339 (`opened_at` empty for the first window).
pub fn window_csv(w: &ClearingWindow) -> String {
    let mut out =
        String::from("window,currency,sequence,opened_at,closed_at,account,opening,debits,credits,net,closing\n");
    let opened_at = if w.opened_at > 0 { rfc3339(w.opened_at) } else { String::new() };
    let closed_at = rfc3339(w.closed_at);
    for p in &w.positions {
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{},{},{},{opened_at},{closed_at},{},{},{},{},{},{}",
            w.id,
            w.currency.code(),
            w.sequence,
            p.account,
            p.opening,
            p.debits,
            p.credits,
            p.net,
            p.closing
        );
    }
    out
}

/// Parses `currency` from a listing's query string, and `limit` and `starting_after` through
/// the one parser every listing uses.
fn list_query(query: Option<&str>) -> Result<(Option<Currency>, Page<ClearingWindowId>), ApiError> {
    let mut currency = None;
    let mut rest = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("currency", value)) => currency = Some(json::currency(value, "currency")?),
            _ => rest.push(pair),
        }
    }
    let page = super::accounts::list_page(Some(&rest.join("&")), "a clearing window id (`cw_…`)")?;
    Ok((currency, page))
}

/// Whether the query asks for CSV (`format=csv`) rather than JSON.
fn format_query(query: Option<&str>) -> Result<bool, ApiError> {
    let mut csv = false;
    for (name, value) in pairs(query) {
        match (name, value) {
            ("format", "csv") => csv = true,
            ("format", "json") => csv = false,
            ("format", _) => return Err(ApiError::invalid("format", "`format` must be json or csv.")),
            (other, _) => return Err(unknown(other)),
        }
    }
    Ok(csv)
}

fn pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query.unwrap_or("").split('&').filter(|p| !p.is_empty()).map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

fn unknown(name: &str) -> ApiError {
    ApiError::bad_request("unknown_parameter", format!("Received unknown query parameter `{name}`."))
        .param(name.to_owned())
}
