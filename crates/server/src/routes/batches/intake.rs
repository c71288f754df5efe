//! `POST /v1/batches`: a file (or the JSON form) streamed to the store (`BatchStore::file_writer`:
//! the data folder, or the database), hashed for its `Idempotency-Key`, recorded as
//! `validating`, and handed to the batch job.

use super::types::{BatchItemsBody, BatchJson, BatchParams};
use super::{blocking, one_of, query_error};
use crate::auth::Auth;
use crate::error::{ApiError, ErrorBody};
use crate::ids::{new_id, now_ns};
use crate::json;
use crate::render::json;
use crate::routes::rendered;
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use paycore_formats::{format_from_content_type, format_named, Format};
use paycore_ledger::{BatchId, BatchMode, OnInvalid};
use paycore_store::files::BATCH_FILES_DIR;
use paycore_store::{BatchRecord, FileSink, StoreError};
use sha2::{Digest, Sha256};
use std::sync::Arc;

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        crate::error::ErrorType::InvalidRequestError,
        "file_too_large",
        format!("The file is larger than the limit of {limit} bytes (max_batch_bytes)."),
    )
}

/// The upload found `max_queued_validations` batches already waiting for validation on this
/// node: refused before its body is read, so nothing of it is kept.
fn queue_full() -> ApiError {
    let mut error = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        crate::error::ErrorType::ApiError,
        "validation_queue_full",
        "Too many batch files are waiting for validation (max_queued_validations); nothing was kept. Retry later.",
    );
    error.retry_after = true;
    error
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
        (status = 503, description = "`validation_queue_full`: retry after `Retry-After`", body = ErrorBody),
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
    let place = state.jobs.queue_validation().ok_or_else(queue_full)?;
    let id = BatchId(new_id());
    let upload = store_upload(&state, &intake, id, body).await?;
    if let Some(key) = &intake.key {
        let (tenant, text) = (auth.tenant, key.clone());
        if let Some(existing) = blocking(&state, move |s| s.batch_by_key(tenant, &text)).await? {
            let fingerprint = upload.fingerprint;
            upload.abort().await;
            return replay(&existing, fingerprint);
        }
    }
    let (file, fingerprint) = upload.keep().await?;
    let record = intake.record(id, auth, file.clone(), fingerprint);
    let insert = record.clone();
    match (blocking(&state, move |s| Ok(s.create_batch(&insert))).await?, record.idempotency_key.clone()) {
        (Ok(()), _) => {}
        // Two uploads with one key at once: the other one won, and this one is answered as its
        // replay. Handled, so not logged as an error; any other failure is (`ApiError::from`).
        (Err(StoreError::Conflict(_)), Some(key)) => {
            remove_file(&state, file).await;
            let tenant = auth.tenant;
            if let Some(existing) = blocking(&state, move |s| s.batch_by_key(tenant, &key)).await? {
                tracing::info!(batch = %existing.id, "a concurrent upload with this Idempotency-Key won; answered as its replay");
                return replay(&existing, fingerprint);
            }
            return Err(ApiError::from(StoreError::Internal("the batch that won the upload race is gone".into())));
        }
        (Err(error), _) => {
            remove_file(&state, file).await;
            return Err(error.into());
        }
    }
    crate::jobs::spawn(state.clone(), record.clone(), Some(place));
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
            (Some(text), _) => format_named(text).map_err(|_| {
                ApiError::invalid("format", "`format` must be one of: csv, jsonl, pain.001, nacha, refunds.")
            })?,
            (None, _) => format_from_content_type(&mime).ok_or_else(|| ApiError::missing("format").param("format"))?,
        };
        let mode = one_of(params.mode.as_deref(), "mode", BatchMode::ALL, BatchMode::parse, BatchMode::as_str)?;
        let on_invalid =
            one_of(params.on_invalid.as_deref(), "on_invalid", OnInvalid::ALL, OnInvalid::parse, OnInvalid::as_str)?;
        if format == Format::Refunds {
            // A refund is no hold: there is nothing an atomic batch could void.
            if mode == BatchMode::Atomic {
                return Err(ApiError::invalid(
                    "mode",
                    "A refunds batch is `best_effort`: each refund stands on its own.",
                ));
            }
            if params.payer.is_some() {
                return Err(ApiError::invalid(
                    "payer",
                    "A refunds file names payments; each refund debits its payment's payee, so `payer` does not apply.",
                ));
            }
        }
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
    fn record(self, id: BatchId, auth: Auth, file: String, fingerprint: [u8; 32]) -> BatchRecord {
        BatchRecord {
            mode: self.mode,
            on_invalid: self.on_invalid,
            payer: self.params.payer,
            currency: self.params.currency,
            expected_count: self.params.expected_count,
            expected_total: self.params.expected_total,
            file: Some(file),
            idempotency_key: self.key,
            fingerprint: Some(fingerprint),
            ..BatchRecord::new(id, auth.tenant, self.format, now_ns())
        }
    }
}

/// Body chunks waiting for the writer of the stored file: enough to keep it busy while the
/// next ones arrive, few enough to bound an upload's memory.
const WRITE_QUEUE_CHUNKS: usize = 16;

/// An upload written to the store but not finished (not readable yet), and its fingerprint.
struct Upload {
    file: String,
    sink: Box<dyn FileSink>,
    fingerprint: [u8; 32],
}

impl Upload {
    /// Finishes the stored file: from here it survives a crash and validation can read it.
    /// Returns its name and the upload's fingerprint.
    async fn keep(self) -> Result<(String, [u8; 32]), ApiError> {
        let Upload { file, sink, fingerprint, .. } = self;
        crate::request_id::spawn_blocking(move || sink.finish())
            .await
            .map_err(|_| ApiError::internal("Cannot store the file."))??;
        Ok((file, fingerprint))
    }

    /// Drops what was stored.
    async fn abort(self) {
        let sink = self.sink;
        let aborted = crate::request_id::spawn_blocking(move || sink.abort()).await;
        if let Ok(Err(error)) = aborted {
            tracing::warn!(file = %self.file, %error, "an upload not kept could not be removed");
        }
    }
}

/// Removes a finished file whose batch was not recorded.
async fn remove_file(state: &Arc<AppState>, file: String) {
    let removed = blocking(state, move |s| Ok(s.remove_file(&file))).await;
    if let Ok(Err(error)) = removed {
        tracing::warn!(%error, "a stored file whose batch was not recorded could not be removed");
    }
}

/// Streams the body to the store (a blocking writer takes the chunks from a bounded queue),
/// hashing it for the idempotency fingerprint; nothing is left behind when it fails.
async fn store_upload(state: &Arc<AppState>, intake: &Intake, id: BatchId, body: Body) -> Result<Upload, ApiError> {
    let file = format!("{BATCH_FILES_DIR}/{id}.{}", intake.format.as_str().replace('.', ""));
    let sink = {
        let file = file.clone();
        blocking(state, move |s| s.file_writer(&file)).await?
    };
    let mut hash = Sha256::new();
    hash.update(intake.fingerprint_head());
    let (chunks, queue) = tokio::sync::mpsc::channel::<Bytes>(WRITE_QUEUE_CHUNKS);
    let writer = crate::request_id::spawn_blocking(move || write_queued(sink, queue));
    let sent = if intake.json_form {
        send_json_form(state, body, &chunks, &mut hash).await
    } else {
        send_stream(state, body, &chunks, &mut hash).await
    };
    drop(chunks);
    let (sink, written) = writer.await.map_err(|_| ApiError::internal("Cannot store the file."))?;
    let upload = Upload { file, sink, fingerprint: hash.finalize().into() };
    // The writer's failure first: the body's sender only saw the queue close.
    match written.map_err(ApiError::from).and(sent) {
        Ok(()) => Ok(upload),
        Err(error) => {
            upload.abort().await;
            Err(error)
        }
    }
}

/// Writes the queued chunks to `sink` until the queue closes or a write fails (which closes
/// the queue); gives the sink back, to be finished or aborted.
fn write_queued(
    mut sink: Box<dyn FileSink>,
    mut queue: tokio::sync::mpsc::Receiver<Bytes>,
) -> (Box<dyn FileSink>, paycore_store::Result<()>) {
    while let Some(chunk) = queue.blocking_recv() {
        if let Err(error) = sink.write_chunk(&chunk) {
            return (sink, Err(error));
        }
    }
    (sink, Ok(()))
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

async fn send_stream(
    state: &Arc<AppState>,
    body: Body,
    chunks: &tokio::sync::mpsc::Sender<Bytes>,
    hash: &mut Sha256,
) -> Result<(), ApiError> {
    let limit = state.max_batch_bytes;
    let mut stream = body.into_data_stream();
    let mut size: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("invalid_body", format!("The upload broke off: {e}.")))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(too_large(limit));
        }
        hash.update(&chunk);
        chunks.send(chunk).await.map_err(|_| writer_gone())?;
    }
    if size == 0 {
        return Err(ApiError::bad_request("empty_file", "The body is empty: send the file as the request body."));
    }
    Ok(())
}

/// The writer stopped taking chunks: it failed, and its error is the one answered.
fn writer_gone() -> ApiError {
    ApiError::internal("Cannot store the file.")
}

/// The JSON form, `{"items":[…]}`, stored as JSON lines with amounts in minor units.
async fn send_json_form(
    state: &Arc<AppState>,
    body: Body,
    chunks: &tokio::sync::mpsc::Sender<Bytes>,
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
    chunks.send(Bytes::from(lines)).await.map_err(|_| writer_gone())
}
