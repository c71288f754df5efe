//! `/v1/batches`: upload a payment file (or a JSON list of items), follow its validation and
//! processing, list its items, download its report.

use super::{path_id, rendered};
use crate::auth::{new_id, now_ns, Auth};
use crate::error::{ApiError, ErrorBody};
use crate::json::{self, Amount};
use crate::render::{format_total, json, rfc3339};
use crate::reports::{self, ReportFile, ReportKind};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use paycore_formats::{format_from_content_type, format_named, Format, Pain002Version};
use paycore_ledger::{BatchId, BatchMode, BatchStatus, Currency, ItemStatus, OnInvalid};
use paycore_store::{BatchItemRow, BatchRecord, BatchStore, BatchTotal, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use utoipa::{IntoParams, ToSchema};

/// Items listed per page at most.
pub const ITEMS_PAGE_MAX: usize = 1000;

/// How the batch is taken in and run. Every field is optional.
#[derive(Deserialize, IntoParams, ToSchema, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BatchParams {
    /// `csv`, `jsonl`, `pain.001` or `nacha`; default from `Content-Type` (`text/csv`,
    /// `application/x-ndjson`, `application/xml`; `application/json` is the `{items:[…]}` form).
    pub format: Option<String>,
    /// The paying account (id or reference) for items that name none (NACHA: the funding account).
    pub payer: Option<String>,
    /// The currency of items that name none (CSV without a currency column).
    pub currency: Option<String>,
    /// `best_effort` (default): each item on its own. `atomic`: all items or none.
    pub mode: Option<String>,
    /// `reject_file` (default): one invalid item rejects the file. `skip_invalid`: pay the rest.
    pub on_invalid: Option<String>,
    /// CSV and JSON lines: the number of records the file must have.
    pub expected_count: Option<u64>,
    /// CSV and JSON lines: the decimal sum the valid items must have (`1234.50`).
    pub expected_total: Option<String>,
}

/// One item of the JSON form.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItemParam {
    /// The account paid: `acct_…` or an account reference.
    pub payee: String,
    /// Minor units.
    #[schema(value_type = u64)]
    pub amount: Amount,
    /// ISO 4217; default the batch's `currency`.
    pub currency: Option<String>,
    pub reference: Option<String>,
    /// The account paying; default the batch's `payer`.
    pub payer: Option<String>,
}

/// The JSON form of a batch, for callers that prefer an API to a file.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItemsBody {
    pub items: Vec<BatchItemParam>,
}

/// Counts of a batch's items.
#[derive(Serialize, ToSchema)]
pub struct CountsJson {
    /// Records in the file.
    pub total: u64,
    /// Records refused by validation.
    pub invalid: u64,
    pub succeeded: u64,
    /// Refused by the ledger (`insufficient_funds`, …), released because an atomic batch failed,
    /// or cancelled.
    pub failed: u64,
    /// Valid items not finished yet.
    pub pending: u64,
}

/// The control totals of the valid items in one currency.
#[derive(Serialize, ToSchema)]
pub struct TotalJson {
    pub currency: &'static str,
    pub count: u64,
    /// Minor units.
    #[schema(value_type = u64)]
    pub sum: u128,
    /// The same sum as a decimal in major units.
    pub sum_decimal: String,
}

/// A batch.
#[derive(Serialize, ToSchema)]
pub struct BatchJson {
    /// `bat_…`
    pub id: String,
    /// Always `batch`.
    pub object: &'static str,
    /// `validating`, `rejected`, `processing`, `completed` or `cancelled`.
    pub status: &'static str,
    pub format: &'static str,
    pub mode: &'static str,
    pub on_invalid: &'static str,
    pub payer: Option<String>,
    pub currency: Option<String>,
    pub expected_count: Option<u64>,
    pub expected_total: Option<String>,
    /// For pain.001: the version read (`pain.001.001.03`, `pain.001.001.09`, `pain.001.001.03.ch.02`).
    pub variant: Option<String>,
    /// pain.001 `GrpHdr/MsgId`.
    pub message_id: Option<String>,
    pub counts: CountsJson,
    pub control_totals: Vec<TotalJson>,
    /// Why the whole batch was rejected: `{code, message, errors:[{line, location, field, code, message}]}`.
    #[schema(value_type = Option<Object>)]
    pub rejection: Option<serde_json::Value>,
    pub created_at: String,
    pub validated_at: Option<String>,
    pub completed_at: Option<String>,
}

impl BatchJson {
    pub fn new(b: &BatchRecord, totals: &[BatchTotal]) -> BatchJson {
        let finished = b.succeeded + b.failed;
        let pending = match b.status {
            BatchStatus::Rejected => 0,
            _ => b.total.saturating_sub(b.invalid).saturating_sub(finished),
        };
        BatchJson {
            id: b.id.to_string(),
            object: "batch",
            status: b.status.as_str(),
            format: b.format.as_str(),
            mode: b.mode.as_str(),
            on_invalid: b.on_invalid.as_str(),
            payer: b.payer.clone(),
            currency: b.currency.clone(),
            expected_count: b.expected_count,
            expected_total: b.expected_total.clone(),
            variant: b.variant.clone(),
            message_id: b.message_id.clone(),
            counts: CountsJson {
                total: b.total,
                invalid: b.invalid,
                succeeded: b.succeeded,
                failed: b.failed,
                pending,
            },
            control_totals: totals
                .iter()
                .map(|t| TotalJson {
                    currency: t.currency.code(),
                    count: t.count,
                    sum: t.sum,
                    sum_decimal: format_total(t.sum, t.currency),
                })
                .collect(),
            rejection: b.rejection.as_deref().and_then(|r| serde_json::from_str(r).ok()),
            created_at: rfc3339(b.created_at),
            validated_at: b.validated_at.map(rfc3339),
            completed_at: b.completed_at.map(rfc3339),
        }
    }
}

impl BatchJson {
    /// The batch as its upload was answered (202): `record`'s creation fields, which never
    /// change, with nothing validated or counted yet. The upload and every replay of it render
    /// this, so a replay answers the first answer byte for byte, whatever the batch's state
    /// now. Rendered again rather than saved: the store keeps no response for an upload, and
    /// the answer is a function of fields the store already keeps.
    pub fn taken_in(record: &BatchRecord) -> BatchJson {
        let taken = BatchRecord {
            mode: record.mode,
            on_invalid: record.on_invalid,
            payer: record.payer.clone(),
            currency: record.currency.clone(),
            expected_count: record.expected_count,
            expected_total: record.expected_total.clone(),
            ..BatchRecord::new(record.id, record.tenant, record.format, record.created_at)
        };
        BatchJson::new(&taken, &[])
    }
}

/// One item of a batch.
#[derive(Serialize, ToSchema)]
pub struct BatchItemJson {
    /// Position among the file's records, from 0.
    pub index: u64,
    /// Line in the file where the record starts.
    pub line: u64,
    /// `line N`, or an XML element path.
    pub location: String,
    pub reference: Option<String>,
    /// The payer and payee as the file names them.
    pub payer: Option<String>,
    pub payee: Option<String>,
    /// The accounts they resolved to.
    pub payer_account: Option<String>,
    pub payee_account: Option<String>,
    pub amount: Option<u64>,
    pub currency: Option<&'static str>,
    /// `invalid`, `pending`, `held` (atomic batches), `succeeded` or `failed`.
    pub status: &'static str,
    /// Why it failed: a validation code (`too_many_decimals`, `account_not_found`,
    /// `duplicate_reference`, …) or a ledger result (`insufficient_funds`, …), `batch_aborted`,
    /// `cancelled`.
    pub failure_code: Option<String>,
    pub message: Option<String>,
}

/// The API's name for an item status: an item voided or cancelled reads `failed` (its
/// `failure_code` says which).
fn item_status(status: ItemStatus) -> &'static str {
    match status {
        ItemStatus::Invalid | ItemStatus::Pending | ItemStatus::Held | ItemStatus::Succeeded => status.as_str(),
        ItemStatus::Failed | ItemStatus::Voided | ItemStatus::Cancelled => ItemStatus::Failed.as_str(),
    }
}

impl BatchItemJson {
    fn new(i: &BatchItemRow) -> BatchItemJson {
        BatchItemJson {
            index: i.index,
            line: i.line,
            location: i.location.clone(),
            reference: i.reference.clone(),
            payer: i.payer_text.clone(),
            payee: i.payee_text.clone(),
            payer_account: i.payer.map(|a| a.to_string()),
            payee_account: i.payee.map(|a| a.to_string()),
            amount: i.amount,
            currency: i.currency.map(Currency::code),
            status: item_status(i.status),
            failure_code: i.failure_code.clone(),
            message: i.message.clone(),
        }
    }
}

/// A page of items, in file order.
#[derive(Serialize, ToSchema)]
pub struct BatchItemsJson {
    pub object: &'static str,
    pub data: Vec<BatchItemJson>,
    pub has_more: bool,
    /// Pass as `starting_after` for the next page.
    pub next_cursor: Option<u64>,
}

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

fn query_error(rejection: axum::extract::rejection::QueryRejection) -> ApiError {
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

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        crate::error::ErrorType::InvalidRequestError,
        "file_too_large",
        format!("The file is larger than the limit of {limit} bytes (max_batch_bytes)."),
    )
}

/// `POST /v1/batches`
#[utoipa::path(post, path = "/v1/batches", tag = "batches",
    params(BatchParams, ("Idempotency-Key" = Option<String>, Header, description = "Makes retries of the upload safe")),
    request_body(content = String, description = "The file (CSV, JSON lines, pain.001 XML, NACHA), or `{\"items\":[…]}` as application/json",
        content_type = "text/csv"),
    responses(
        (status = 202, description = "Taken in: `validating`", body = BatchJson),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 413, description = "`file_too_large`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    params: Result<Query<BatchParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(query_error)?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let json_form = params.format.is_none() && mime == "application/json";
    let format = match (&params.format, json_form) {
        (_, true) => Format::Jsonl,
        (Some(text), _) => format_named(text)
            .map_err(|_| ApiError::invalid("format", "`format` must be one of: csv, jsonl, pain.001, nacha."))?,
        (None, _) => format_from_content_type(&mime).ok_or_else(|| ApiError::missing("format").param("format"))?,
    };
    let mode = one_of(params.mode.as_deref(), "mode", BatchMode::ALL, BatchMode::parse, BatchMode::as_str)?;
    let on_invalid =
        one_of(params.on_invalid.as_deref(), "on_invalid", OnInvalid::ALL, OnInvalid::parse, OnInvalid::as_str)?;
    if let Some(code) = &params.currency {
        json::currency(code, "currency")?;
    }
    if let Some(total) = &params.expected_total {
        let decimal =
            !total.is_empty() && total.split('.').count() <= 2 && total.chars().all(|c| c.is_ascii_digit() || c == '.');
        if !decimal {
            return Err(ApiError::invalid("expected_total", "`expected_total` must be a decimal such as 1234.50."));
        }
    }
    let key = match headers.get(crate::idempotency::HEADER) {
        Some(value) => Some(crate::idempotency::valid_key(value.as_bytes())?),
        None => None,
    };

    // Stream the body to a file, hashing it for the idempotency fingerprint.
    let id = BatchId(new_id());
    let folder = state.data_dir.join("batches");
    tokio::fs::create_dir_all(&folder).await.map_err(|e| ApiError::internal(format!("Cannot store the file: {e}.")))?;
    let name = format!("{id}.{}", format.as_str().replace('.', ""));
    let partial = folder.join(format!("{name}.partial"));
    let mut hash = Sha256::new();
    hash.update(format!(
        "{}|{:?}|{:?}|{mode}|{on_invalid}|{:?}|{:?}\n",
        format.as_str(),
        params.payer,
        params.currency,
        params.expected_count,
        params.expected_total
    ));
    let stored = if json_form {
        store_json_form(&state, body, &partial, &mut hash).await
    } else {
        store_stream(&state, body, &partial, &mut hash).await
    };
    if let Err(error) = stored {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(error);
    }
    let fingerprint: [u8; 32] = hash.finalize().into();

    if let Some(key) = &key {
        let (tenant, text) = (auth.tenant, key.clone());
        if let Some(existing) = blocking(&state, move |s| s.batch_by_key(tenant, &text)).await? {
            let _ = tokio::fs::remove_file(&partial).await;
            return replay(&existing, fingerprint);
        }
    }
    let path = folder.join(&name);
    tokio::fs::rename(&partial, &path).await.map_err(|e| ApiError::internal(format!("Cannot store the file: {e}.")))?;
    let dir = folder.clone();
    tokio::task::spawn_blocking(move || std::fs::File::open(dir).and_then(|d| d.sync_all()))
        .await
        .map_err(|_| ApiError::internal("Cannot store the file."))?
        .map_err(|e| ApiError::internal(format!("Cannot store the file: {e}.")))?;

    let record = BatchRecord {
        mode,
        on_invalid,
        payer: params.payer,
        currency: params.currency,
        expected_count: params.expected_count,
        expected_total: params.expected_total,
        file: Some(format!("batches/{name}")),
        idempotency_key: key.clone(),
        fingerprint: Some(fingerprint),
        ..BatchRecord::new(id, auth.tenant, format, now_ns())
    };
    let insert = record.clone();
    match (blocking(&state, move |s| Ok(s.create_batch(&insert))).await?, key) {
        (Ok(()), _) => {}
        // Two uploads with one key at once: the other one won, and this one is answered as its
        // replay. Handled, so not logged as an error; any other failure is (`ApiError::from`).
        (Err(StoreError::Conflict(_)), Some(key)) => {
            let _ = tokio::fs::remove_file(&path).await;
            let tenant = auth.tenant;
            if let Some(existing) = blocking(&state, move |s| s.batch_by_key(tenant, &key)).await? {
                tracing::info!(batch = %existing.id, "a concurrent upload with this Idempotency-Key won; answered as its replay");
                return replay(&existing, fingerprint);
            }
            return Err(ApiError::from(StoreError::Internal("the batch that won the upload race is gone".into())));
        }
        (Err(error), _) => {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(error.into());
        }
    }
    crate::jobs::spawn(state.clone(), record.clone());
    Ok(rendered(json(202, &BatchJson::taken_in(&record))))
}

/// The answer to a repeated upload under one key: the first answer again (the batch as it was
/// taken in, see [`BatchJson::taken_in`]) with `Idempotent-Replayed: true`, or a refusal when
/// the upload differs. `GET /v1/batches/{id}` tells how the batch is doing now.
fn replay(existing: &BatchRecord, fingerprint: [u8; 32]) -> Result<Response, ApiError> {
    if existing.fingerprint != Some(fingerprint) {
        return Err(ApiError::key_reused());
    }
    let mut response = rendered(json(202, &BatchJson::taken_in(existing)));
    response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(response)
}

async fn store_stream(
    state: &Arc<AppState>,
    body: Body,
    path: &std::path::Path,
    hash: &mut Sha256,
) -> Result<(), ApiError> {
    let limit = state.max_batch_bytes;
    let cannot = |e: std::io::Error| ApiError::internal(format!("Cannot store the file: {e}."));
    let mut file = tokio::fs::File::create(path).await.map_err(cannot)?;
    let mut stream = body.into_data_stream();
    let mut size: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("invalid_body", format!("The upload broke off: {e}.")))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(too_large(limit));
        }
        hash.update(&chunk);
        file.write_all(&chunk).await.map_err(cannot)?;
    }
    if size == 0 {
        return Err(ApiError::bad_request("empty_file", "The body is empty: send the file as the request body."));
    }
    file.sync_all().await.map_err(cannot)
}

/// The JSON form, `{"items":[…]}`, stored as JSON lines with amounts in minor units.
async fn store_json_form(
    state: &Arc<AppState>,
    body: Body,
    path: &std::path::Path,
    hash: &mut Sha256,
) -> Result<(), ApiError> {
    let limit = state.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            crate::error::ErrorType::InvalidRequestError,
            "body_too_large",
            format!("The body is larger than the limit of {limit} bytes; upload a file for larger batches."),
        )
    })?;
    let parsed: BatchItemsBody = json::parse(&bytes)?;
    if parsed.items.is_empty() {
        return Err(ApiError::invalid("items", "`items` must list at least one item."));
    }
    let mut lines = Vec::with_capacity(bytes.len());
    for (index, item) in parsed.items.iter().enumerate() {
        if let Some(code) = &item.currency {
            json::currency(code, &format!("items[{index}].currency"))?;
        }
        let line = serde_json::json!({
            "payee": item.payee, "amount_minor": item.amount.0, "currency": item.currency,
            "reference": item.reference, "payer": item.payer,
        });
        serde_json::to_writer(&mut lines, &line).map_err(|e| ApiError::internal(e.to_string()))?;
        lines.push(b'\n');
    }
    hash.update(&lines);
    let cannot = |e: std::io::Error| ApiError::internal(format!("Cannot store the batch: {e}."));
    let mut file = tokio::fs::File::create(path).await.map_err(cannot)?;
    file.write_all(&lines).await.map_err(cannot)?;
    file.sync_all().await.map_err(cannot)
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
    let totals = blocking(&state, move |s| s.batch_totals(batch_id)).await?;
    Ok(rendered(json(200, &BatchJson::new(&batch, &totals))))
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

/// Which items to list.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ItemsQuery {
    /// `invalid`, `pending`, `held`, `succeeded` or `failed`.
    pub status: Option<String>,
    /// 1 to 1000, default 100.
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub starting_after: Option<u64>,
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
        Some(_) => {
            return Err(ApiError::invalid(
                "status",
                "`status` must be one of: invalid, pending, held, succeeded, failed.",
            ))
        }
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=ITEMS_PAGE_MAX).contains(&limit) {
        return Err(ApiError::invalid("limit", "`limit` must be from 1 to 1000."));
    }
    let batch = find(&state, auth, &id).await?;
    let (batch_id, after) = (batch.id, query.starting_after);
    let mut rows = blocking(&state, move |s| s.batch_items(batch_id, statuses, after, limit + 1)).await?;
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    let page = BatchItemsJson {
        object: "list",
        next_cursor: if has_more { rows.last().map(|r| r.index) } else { None },
        data: rows.iter().map(BatchItemJson::new).collect(),
        has_more,
    };
    Ok(rendered(json(200, &page)))
}

/// Which report.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// `csv` (default) or `pain.002`.
    pub format: Option<String>,
    /// pain.002 only: `001.001.03` or `001.001.10`; default the version that answers the
    /// input (001.001.03 for a pain.001.001.03 file, 001.001.10 otherwise).
    pub version: Option<String>,
}

/// `GET /v1/batches/{id}/report`
#[utoipa::path(get, path = "/v1/batches/{id}/report", tag = "batches",
    params(("id" = String, Path, description = "`bat_…`"), ReportQuery),
    responses(
        (status = 200, description = "The report, streamed: CSV (`line,reference,payer,payee,amount,currency,status,failure_code`) or pain.002 XML", content_type = "text/csv", body = String),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`batch_not_finished`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn report(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
    query: Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(query_error)?;
    let pain002 = match query.format.as_deref() {
        None | Some("csv") => false,
        Some("pain.002") => true,
        Some(_) => return Err(ApiError::invalid("format", "`format` must be csv or pain.002.")),
    };
    let batch = find(&state, auth, &id).await?;
    if !batch.status.is_final() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            crate::error::ErrorType::InvalidRequestError,
            "batch_not_finished",
            format!("The batch is {}: its report is ready when it is completed, cancelled or rejected.", batch.status),
        ));
    }
    let version = match query.version.as_deref() {
        None => Pain002Version::answering(batch.variant.as_deref()),
        Some("001.001.03") => Pain002Version::V03,
        Some("001.001.10") => Pain002Version::V10,
        Some(_) => return Err(ApiError::invalid("version", "`version` must be 001.001.03 or 001.001.10.")),
    };
    let (content_type, extension) =
        if pain002 { ("application/xml", "xml") } else { ("text/csv; charset=utf-8", "csv") };
    let kind = if pain002 { ReportKind::Pain002(version) } else { ReportKind::Csv };
    let written_ahead =
        if batch.status == BatchStatus::Rejected { None } else { state.reports.written(batch.id, kind).await };
    let header = if pain002 {
        let batch_id = batch.id;
        let totals = blocking(&state, move |s| s.batch_totals(batch_id)).await?;
        Some(reports::pain002_header(&batch, &totals, now_ns()))
    } else {
        None
    };
    let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    let mut length = None;
    if let Some(ReportFile { file, bytes }) = written_ahead {
        // Written while the batch ran: sent as it is, after the pain.002 header.
        let head = header.map(|header| reports::pain002_header_bytes(&header, version)).unwrap_or_default();
        length = Some(head.len() as u64 + bytes);
        crate::request_id::spawn_blocking(move || {
            if head.is_empty() || sender.blocking_send(Ok(head)).is_ok() {
                send_file(file, &sender);
            }
        });
    } else {
        let store = state.batches.clone();
        crate::request_id::spawn_blocking(move || {
            let out = ChannelWriter { sender: sender.clone(), buffer: Vec::with_capacity(CHANNEL_CHUNK) };
            let written = match &header {
                Some(header) => reports::write_pain002(store.as_ref(), &batch, header, version, out),
                None => reports::write_csv(store.as_ref(), &batch, out),
            };
            if let Err(error) = written.and_then(|mut out| out.flush()) {
                tracing::error!(%error, "report failed part way");
                let _ = sender.blocking_send(Err(error));
            }
        });
    }
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{id}-report.{extension}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

const CHANNEL_CHUNK: usize = 64 * 1024;

/// Sends a file to the response body in 64 KiB chunks.
fn send_file(mut file: std::fs::File, sender: &tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>) {
    loop {
        let mut chunk = vec![0; CHANNEL_CHUNK];
        let read = match std::io::Read::read(&mut file, &mut chunk) {
            Ok(0) => return,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::error!(%error, "report file read failed part way");
                let _ = sender.blocking_send(Err(error));
                return;
            }
        };
        chunk.truncate(read);
        if sender.blocking_send(Ok(chunk)).is_err() {
            return;
        }
    }
}

/// A `Write` that sends 64 KiB chunks to the response body.
struct ChannelWriter {
    sender: tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>,
    buffer: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHANNEL_CHUNK {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHANNEL_CHUNK));
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}
