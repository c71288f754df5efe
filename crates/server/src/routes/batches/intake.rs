//! `POST /v1/batches`: a file (or the JSON form) streamed to the data folder, hashed for its
//! `Idempotency-Key`, recorded as `validating`, and handed to the batch job.

use super::types::{BatchItemsBody, BatchJson, BatchParams};
use super::{blocking, one_of, query_error};
use crate::auth::Auth;
use crate::error::{ApiError, ErrorBody};
use crate::ids::{new_id, now_ns};
use crate::json;
use crate::render::json;
use crate::routes::rendered;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use paycore_formats::{format_from_content_type, format_named, Format};
use paycore_ledger::{BatchId, BatchMode, OnInvalid};
use paycore_store::{BatchRecord, StoreError};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

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
    let intake = Intake::check(params, &headers)?;
    let id = BatchId(new_id());
    let upload = store_upload(&state, &intake, id, body).await?;
    if let Some(key) = &intake.key {
        let (tenant, text) = (auth.tenant, key.clone());
        if let Some(existing) = blocking(&state, move |s| s.batch_by_key(tenant, &text)).await? {
            let _ = tokio::fs::remove_file(&upload.partial).await;
            return replay(&existing, upload.fingerprint);
        }
    }
    let path = upload.keep().await?;
    let fingerprint = upload.fingerprint;
    let record = intake.record(id, auth, upload);
    let insert = record.clone();
    match (blocking(&state, move |s| Ok(s.create_batch(&insert))).await?, record.idempotency_key.clone()) {
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

/// What an upload asks for, checked before its body is read.
struct Intake {
    params: BatchParams,
    format: Format,
    /// The body is the JSON form (`{"items":[…]}`), stored as JSON lines.
    json_form: bool,
    mode: BatchMode,
    on_invalid: OnInvalid,
    key: Option<String>,
}

impl Intake {
    fn check(params: BatchParams, headers: &HeaderMap) -> Result<Intake, ApiError> {
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
            let decimal = !total.is_empty()
                && total.split('.').count() <= 2
                && total.chars().all(|c| c.is_ascii_digit() || c == '.');
            if !decimal {
                return Err(ApiError::invalid("expected_total", "`expected_total` must be a decimal such as 1234.50."));
            }
        }
        let key = crate::idempotency::key_from(headers)?;
        Ok(Intake { params, format, json_form, mode, on_invalid, key })
    }

    /// What the upload's fingerprint covers besides the body: every parameter that changes
    /// what the batch does.
    fn fingerprint_head(&self) -> String {
        let p = &self.params;
        format!(
            "{}|{:?}|{:?}|{}|{}|{:?}|{:?}\n",
            self.format.as_str(),
            p.payer,
            p.currency,
            self.mode,
            self.on_invalid,
            p.expected_count,
            p.expected_total
        )
    }

    /// The batch's record, `validating`, for its stored file.
    fn record(self, id: BatchId, auth: Auth, upload: Upload) -> BatchRecord {
        BatchRecord {
            mode: self.mode,
            on_invalid: self.on_invalid,
            payer: self.params.payer,
            currency: self.params.currency,
            expected_count: self.params.expected_count,
            expected_total: self.params.expected_total,
            file: Some(format!("batches/{}", upload.name)),
            idempotency_key: self.key,
            fingerprint: Some(upload.fingerprint),
            ..BatchRecord::new(id, auth.tenant, self.format, now_ns())
        }
    }
}

/// An upload streamed to `<data>/batches/<name>.partial`, and its fingerprint.
struct Upload {
    folder: std::path::PathBuf,
    name: String,
    partial: std::path::PathBuf,
    fingerprint: [u8; 32],
}

impl Upload {
    /// Renames the file to its final name and syncs the folder: from here it survives a crash.
    async fn keep(&self) -> Result<std::path::PathBuf, ApiError> {
        let path = self.folder.join(&self.name);
        tokio::fs::rename(&self.partial, &path)
            .await
            .map_err(|e| ApiError::internal(format!("Cannot store the file: {e}.")))?;
        let dir = self.folder.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(dir).and_then(|d| d.sync_all()))
            .await
            .map_err(|_| ApiError::internal("Cannot store the file."))?
            .map_err(|e| ApiError::internal(format!("Cannot store the file: {e}.")))?;
        Ok(path)
    }
}

/// Streams the body to a file, hashing it for the idempotency fingerprint; nothing is left
/// behind when it fails.
async fn store_upload(state: &Arc<AppState>, intake: &Intake, id: BatchId, body: Body) -> Result<Upload, ApiError> {
    let folder = state.data_dir.join("batches");
    tokio::fs::create_dir_all(&folder).await.map_err(|e| ApiError::internal(format!("Cannot store the file: {e}.")))?;
    let name = format!("{id}.{}", intake.format.as_str().replace('.', ""));
    let partial = folder.join(format!("{name}.partial"));
    let mut hash = Sha256::new();
    hash.update(intake.fingerprint_head());
    let stored = if intake.json_form {
        store_json_form(state, body, &partial, &mut hash).await
    } else {
        store_stream(state, body, &partial, &mut hash).await
    };
    if let Err(error) = stored {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(error);
    }
    Ok(Upload { folder, name, partial, fingerprint: hash.finalize().into() })
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
