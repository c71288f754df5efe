//! The batch routes: intake (`intake`), the batch and its items (here), the report
//! (`report`), and their request and response types (`types`).

mod intake;
pub(crate) mod report;
mod types;

pub use intake::{__path_create, create};
pub use report::{__path_report, report};
use types::{BatchItemJson, BatchItemsJson, ItemsQuery};
pub use types::{BatchItemParam, BatchItemsBody, BatchJson};

use super::{path_id, rendered};
use crate::auth::Auth;
use crate::error::{ApiError, ErrorBody};
use crate::render::json;
use crate::AppState;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use paycore_ledger::{BatchId, BatchStatus, ItemStatus};
use paycore_store::{BatchRecord, BatchStore};
use std::sync::Arc;

/// Items listed per page at most.
pub const ITEMS_PAGE_MAX: usize = 1000;

async fn blocking<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&dyn BatchStore) -> paycore_store::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.batches.clone();
    Ok(tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|_| ApiError::internal("A store operation failed."))??)
}

/// A query parameter that names one value of a vocabulary (`all`, the first being the
/// default when it is absent).
fn one_of<T: Copy>(
    value: Option<&str>,
    param: &str,
    all: &[T],
    parse: fn(&str) -> Option<T>,
    name: fn(T) -> &'static str,
) -> Result<T, ApiError> {
    match value {
        None => Ok(all[0]),
        Some(text) => parse(text).ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|v| name(*v)).collect();
            ApiError::invalid(param, format!("`{param}` must be one of: {}.", names.join(", ")))
        }),
    }
}

pub(crate) fn query_error(rejection: axum::extract::rejection::QueryRejection) -> ApiError {
    let text = rejection.body_text();
    // `unknown field `name`` names it in backticks; a value that does not parse is
    // `…query string: name: invalid digit…`.
    let param = text.split('`').nth(1).map(str::to_owned).or_else(|| {
        let (name, _) = text.split("query string: ").nth(1)?.split_once(": ")?;
        let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        plain.then(|| name.to_owned())
    });
    let error = ApiError::bad_request("parameter_invalid", format!("Invalid query string: {text}."));
    match param {
        Some(param) => error.param(param),
        None => error,
    }
}

async fn find(state: &Arc<AppState>, auth: Auth, id: &str) -> Result<BatchRecord, ApiError> {
    let batch: BatchId = path_id(id, "batch")?;
    let tenant = auth.tenant;
    blocking(state, move |s| s.batch(tenant, batch)).await?.ok_or_else(|| ApiError::not_found("batch", id))
}

/// `GET /v1/batches/{id}`
#[utoipa::path(get, path = "/v1/batches/{id}", tag = "batches",
    params(("id" = String, Path, description = "`bat_…`")),
    responses((status = 200, body = BatchJson), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn retrieve(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let batch = find(&state, auth, &id).await?;
    let batch_id = batch.id;
    let (totals, quotes) =
        blocking(&state, move |s| Ok((s.batch_totals(batch_id)?, s.batch_quotes(batch_id)?))).await?;
    Ok(rendered(json(200, &BatchJson::new(&batch, &totals).with_quotes(&quotes))))
}

/// `GET /v1/batches`
#[utoipa::path(get, path = "/v1/batches", tag = "batches",
    params(
        ("status" = Option<String>, Query, description = "Only batches in this status: `validating`, `processing`, `completed`, `rejected` or `cancelled`"),
        ("limit" = Option<u32>, Query, description = "1 to 100, default 20"),
        ("starting_after" = Option<String>, Query, description = "A batch id: the `next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "The tenant's batches, newest first, each as `GET /v1/batches/{id}` answers it", body = crate::render::ListJson<BatchJson>),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut status = None;
    let mut rest = Vec::new();
    for pair in query.as_deref().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("status", value) => {
                let names: Vec<&str> = BatchStatus::ALL.iter().map(|s| s.as_str()).collect();
                let message = format!("`status` must be one of: {}.", names.join(", "));
                status = Some(BatchStatus::parse(value).ok_or_else(|| ApiError::invalid("status", message))?);
            }
            _ => rest.push(pair),
        }
    }
    let page = crate::routes::accounts::list_page::<BatchId>(Some(&rest.join("&")), "a batch id (`bat_…`)")?;
    let (tenant, limit) = (auth.tenant, page.limit);
    let fetch = paycore_store::Page { after: page.after, limit: limit + 1 };
    let rows = blocking(&state, move |s| {
        let mut rows = Vec::new();
        for batch in s.batches(tenant, status, fetch)? {
            let (totals, quotes) = (s.batch_totals(batch.id)?, s.batch_quotes(batch.id)?);
            rows.push((batch, totals, quotes));
        }
        Ok(rows)
    })
    .await?;
    let list = crate::render::ListJson::page(
        rows,
        limit,
        |(batch, _, _)| batch.id.to_string(),
        |(batch, totals, quotes)| BatchJson::new(batch, totals).with_quotes(quotes),
    );
    Ok(rendered(json(200, &list)))
}

/// `POST /v1/batches/{id}/cancel`
#[utoipa::path(post, path = "/v1/batches/{id}/cancel", tag = "batches",
    params(("id" = String, Path, description = "`bat_…`")),
    responses(
        (status = 202, description = "Asked to stop: items not yet paid end `failed` with `cancelled`", body = BatchJson),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`batch_finished`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let batch = find(&state, auth, &id).await?;
    if batch.status.is_final() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            crate::error::ErrorType::InvalidRequestError,
            "batch_finished",
            format!("The batch is {}: there is nothing left to cancel.", batch.status),
        ));
    }
    let (tenant, batch_id) = (auth.tenant, batch.id);
    blocking(&state, move |s| s.request_cancel(tenant, batch_id)).await?;
    let batch = find(&state, auth, &id).await?;
    let totals = blocking(&state, move |s| s.batch_totals(batch_id)).await?;
    Ok(rendered(json(202, &BatchJson::new(&batch, &totals))))
}

/// `GET /v1/batches/{id}/items`
#[utoipa::path(get, path = "/v1/batches/{id}/items", tag = "batches",
    params(("id" = String, Path, description = "`bat_…`"), ItemsQuery),
    responses((status = 200, body = BatchItemsJson), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn items(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
    query: Result<Query<ItemsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(query_error)?;
    let statuses: &'static [ItemStatus] = match query.status.as_deref().map(ItemStatus::parse) {
        None => &[],
        Some(Some(ItemStatus::Invalid)) => &[ItemStatus::Invalid],
        Some(Some(ItemStatus::Pending)) => &[ItemStatus::Pending],
        Some(Some(ItemStatus::Held)) => &[ItemStatus::Held],
        Some(Some(ItemStatus::Succeeded)) => &[ItemStatus::Succeeded],
        Some(Some(ItemStatus::Failed)) => &[ItemStatus::Failed, ItemStatus::Voided, ItemStatus::Cancelled],
        Some(Some(ItemStatus::Returned)) => &[ItemStatus::Returned],
        Some(_) => {
            return Err(ApiError::invalid(
                "status",
                "`status` must be one of: invalid, pending, held, succeeded, failed, returned.",
            ))
        }
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=ITEMS_PAGE_MAX).contains(&limit) {
        return Err(ApiError::invalid("limit", "`limit` must be from 1 to 1000."));
    }
    let batch = find(&state, auth, &id).await?;
    let (batch_id, after) = (batch.id, query.starting_after);
    let nacha = batch.format == paycore_ledger::BatchFormat::Nacha;
    let (rows, links) = blocking(&state, move |s| {
        let mut rows = s.batch_items(batch_id, statuses, after, limit + 1)?;
        rows.truncate(limit + 1);
        let links = match (rows.first(), rows.last()) {
            (Some(first), Some(last)) if nacha => s.item_links(batch_id, first.index, last.index)?,
            _ => Vec::new(),
        };
        Ok((rows, links))
    })
    .await?;
    let mut rows = rows;
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    let page = BatchItemsJson {
        object: "list",
        next_cursor: if has_more { rows.last().map(|r| r.index) } else { None },
        data: rows.iter().map(|row| BatchItemJson::new(row).with_links(batch_id, &links)).collect(),
        has_more,
    };
    Ok(rendered(json(200, &page)))
}
