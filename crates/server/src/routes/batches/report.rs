//! `GET /v1/batches/{id}/report`: the report written while the batch ran, or one written now
//! from the store, streamed to the client.

use super::types::ReportQuery;
use super::{blocking, find, query_error};
use crate::auth::Auth;
use crate::error::{ApiError, ErrorBody};
use crate::ids::now_ns;
use crate::reports::{self, ReportFile, ReportKind};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use paycore_formats::Pain002Version;
use paycore_ledger::BatchStatus;
use std::io::Write;
use std::sync::Arc;

/// `GET /v1/batches/{id}/report`
#[utoipa::path(get, path = "/v1/batches/{id}/report", tag = "batches",
    params(("id" = String, Path, description = "`bat_…`"), ReportQuery),
    responses(
        (status = 200, description = "The report, streamed: CSV (`line,reference,payer,payee,amount,currency,status,failure_code`), pain.002 XML, or a NACHA return file", content_type = "text/csv", body = String),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`batch_not_finished`", body = ErrorBody),
        (status = 410, description = "`file_pruned`: a NACHA return file asked for after the upload's retention window", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn report(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
    query: Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(query_error)?;
    let (pain002, nacha) = match query.format.as_deref() {
        None | Some("csv") => (false, false),
        Some("pain.002") => (true, false),
        Some("nacha") => (false, true),
        Some(_) => return Err(ApiError::invalid("format", "`format` must be csv, pain.002 or nacha.")),
    };
    let batch = find(&state, auth, &id).await?;
    if nacha && batch.format != paycore_ledger::BatchFormat::Nacha {
        return Err(ApiError::invalid(
            "format",
            format!(
                "`format=nacha` is the return file of a NACHA batch; this batch's file is {}.",
                batch.format.as_str()
            ),
        ));
    }
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
        Some("001.001.11") => Pain002Version::V11,
        Some(_) => return Err(ApiError::invalid("version", "`version` must be 001.001.03, 001.001.10 or 001.001.11.")),
    };
    if nacha && batch.file.is_none() {
        return Err(ApiError::new(
            StatusCode::GONE,
            crate::error::ErrorType::InvalidRequestError,
            "file_pruned",
            "The batch's uploaded file was removed when its retention window (--file-retention) ended: the NACHA \
             return file is written from it. The CSV and pain.002 reports are written from the items.",
        )
        .param("format"));
    }
    if nacha {
        return Ok(nacha_return(&state, batch, &id));
    }
    let (content_type, extension) =
        if pain002 { ("application/xml", "xml") } else { ("text/csv; charset=utf-8", "csv") };
    let kind = if pain002 { ReportKind::Pain002(version) } else { ReportKind::Csv };
    let written_ahead = match &state.reports {
        // A NACHA batch's items may be returned after it ended: its report is read now.
        Some(reports)
            if batch.status != BatchStatus::Rejected && batch.format != paycore_ledger::BatchFormat::Nacha =>
        {
            reports.written(batch.id, kind).await
        }
        _ => None,
    };
    let header = if pain002 {
        let read = batch.clone();
        let (totals, skipped) =
            blocking(&state, move |s| Ok((s.batch_totals(read.id)?, reports::skipped_items(s, &read)?))).await?;
        Some(reports::pain002_header(&batch, &totals, skipped, now_ns()))
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

/// The NACHA return file of an ended NACHA batch, written now from the stored file and items.
fn nacha_return(state: &Arc<AppState>, batch: paycore_store::BatchRecord, id: &str) -> Response {
    let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    let store = state.batches.clone();
    let now = now_ns();
    crate::request_id::spawn_blocking(move || {
        let out = ChannelWriter { sender: sender.clone(), buffer: Vec::with_capacity(CHANNEL_CHUNK) };
        let written = reports::write_nacha_return(store.as_ref(), &batch, now, out);
        if let Err(error) = written.and_then(|mut out| out.flush()) {
            tracing::error!(%error, "NACHA return file failed part way");
            let _ = sender.blocking_send(Err(error));
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=us-ascii"));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{id}-returns.ach\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

pub(crate) const CHANNEL_CHUNK: usize = 64 * 1024;

/// The bytes of a report file read into one chunk of the response body.
const FILE_CHUNK: u64 = 256 * 1024;

/// Sends a file to the response body in 256 KiB chunks, each read into a buffer that is not
/// zeroed first (`read_to_end` fills spare capacity): a 279 MB pain.002 report was 4 300
/// chunks of 64 KiB, each allocated and zeroed before the read overwrote it.
fn send_file(mut file: std::fs::File, sender: &tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>) {
    use std::io::Read;
    loop {
        let mut chunk = Vec::with_capacity(usize::try_from(FILE_CHUNK).unwrap_or(CHANNEL_CHUNK));
        match (&mut file).take(FILE_CHUNK).read_to_end(&mut chunk) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) => {
                tracing::error!(%error, "report file read failed part way");
                let _ = sender.blocking_send(Err(error));
                return;
            }
        }
        if sender.blocking_send(Ok(chunk)).is_err() {
            return;
        }
    }
}

/// A `Write` that sends 64 KiB chunks to the response body.
pub(crate) struct ChannelWriter {
    pub(crate) sender: tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>,
    pub(crate) buffer: Vec<u8>,
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
