//! The handlers, one module per resource, and what they share: submitting to the engine and
//! answering with the rendered outcome or a saved response.

pub mod accounts;
pub mod admin;
pub mod batches;
pub mod clearing;
pub mod fx;
pub mod interest;
pub mod payments;
pub mod statements;
pub mod transfers;
pub mod webhooks;

use crate::error::{json_response, ApiError};
use crate::idempotency::{Post, Saved};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use paycore_engine::{EngineError, Reply, Submission};
use paycore_ledger::{
    AccountId, ClearingWindowId, Command, Outcome, PaymentId, RefundId, Request, ResultCode, TransferId,
};
use serde::Serialize;
use std::str::FromStr;
use std::sync::Arc;
use utoipa::ToSchema;

/// What the engine answered: a fresh outcome, or the response saved for the idempotency key.
#[allow(clippy::large_enum_variant)]
pub enum Answer {
    Done(Outcome),
    Saved(Saved),
}

/// Submits a command on behalf of the caller, with the request's idempotency key.
pub async fn submit(state: &AppState, post: &Post, command: Command) -> Result<Answer, ApiError> {
    let lookup = Lookup::of(&command);
    let submission =
        Submission { request: Request { tenant: post.auth.tenant, command }, idempotency: post.key.clone() };
    match state.engine.submit(submission).await {
        Ok(Reply::Done(outcome)) => Ok(Answer::Done(outcome)),
        Ok(Reply::Replay { status, body }) => Ok(Answer::Saved(Saved { status, body })),
        Ok(Reply::KeyReused) => Err(ApiError::key_reused()),
        Err(EngineError::NoReply) => from_store(state, post, lookup).await,
        Err(error) => Err(ApiError::from_engine(&error)),
    }
}

/// What a command creates or changes, to be read back when the engine's answer does not come.
enum Lookup {
    Account(AccountId),
    Transfer(TransferId),
    Payment(PaymentId),
    Refund(PaymentId, RefundId),
    ClearingWindow(ClearingWindowId),
    Nothing,
}

impl Lookup {
    fn of(command: &Command) -> Lookup {
        match command {
            Command::CreateAccount(account) => Lookup::Account(account.id),
            Command::Transfer(transfer) => Lookup::Transfer(transfer.id),
            Command::CreatePayment(payment) => Lookup::Payment(payment.id),
            Command::ConfirmPayment(payment) | Command::CancelPayment(payment) => Lookup::Payment(*payment),
            Command::CapturePayment { payment, .. } => Lookup::Payment(*payment),
            Command::RefundPayment { payment, refund, .. } => Lookup::Refund(*payment, *refund),
            Command::CloseClearingWindow { window, .. } => Lookup::ClearingWindow(*window),
            Command::ScanPayment { payment, .. } => Lookup::Payment(*payment),
            // An account as stored does not say whether an update was applied: no guess.
            Command::Transfers(_)
            | Command::BatchItems { .. }
            | Command::EndBatch { .. }
            | Command::UpdateAccount { .. } => Lookup::Nothing,
        }
    }
}

/// Cluster mode, when the engine's answer did not come in time: the answer is what the store
/// holds now, never a guess. With an `Idempotency-Key`, the response saved with the effect;
/// else the object the command creates or changes, as stored now (a payment's `status` says
/// whether the command has been applied yet). Nothing stored: 503 `ledger_timeout`, and a retry
/// with the same key or ids cannot apply the command twice.
async fn from_store(state: &AppState, post: &Post, lookup: Lookup) -> Result<Answer, ApiError> {
    let reader = state.reader.clone();
    let tenant = post.auth.tenant;
    let key = post.key.clone();
    let found = tokio::task::spawn_blocking(move || -> paycore_store::Result<Option<Result<Answer, ApiError>>> {
        if let Some(key) = key {
            return Ok(reader.idempotency(tenant, &key.key)?.map(|saved| {
                if saved.fingerprint == key.fingerprint {
                    Ok(Answer::Saved(Saved { status: saved.status, body: saved.body }))
                } else {
                    Err(ApiError::key_reused())
                }
            }));
        }
        Ok(match lookup {
            Lookup::Account(id) => reader.account(tenant, id)?.map(|a| Outcome::Account(Ok(a))),
            Lookup::Transfer(id) => reader.transfer(tenant, id)?.map(|t| Outcome::Transfer {
                code: ResultCode::Ok,
                transfer: Some(t),
                limit: None,
            }),
            Lookup::Payment(id) => reader.payment(tenant, id)?.map(|p| Outcome::Payment(Ok(p))),
            Lookup::Refund(payment, id) => {
                let refund = reader.refunds(tenant, payment)?.into_iter().find(|r| r.id == id);
                match (refund, reader.payment(tenant, payment)?) {
                    (Some(refund), Some(payment)) => Some(Outcome::Refund(Ok((refund, payment)))),
                    _ => None,
                }
            }
            Lookup::ClearingWindow(id) => reader.clearing_window(tenant, id)?.map(|w| Outcome::ClearingWindow(Ok(w))),
            Lookup::Nothing => None,
        }
        .map(|outcome| Ok(Answer::Done(outcome))))
    })
    .await
    .map_err(|_| ApiError::internal("A store read failed."))??;
    match found {
        Some(answer) => {
            tracing::warn!("the engine did not answer in time; answered with the state stored now");
            answer
        }
        None => Err(ApiError::from_engine(&EngineError::NoReply)),
    }
}

/// Submits a command and answers with its rendered outcome (or the saved response). With an
/// `Idempotency-Key` the answer is the rendering the engine saved (an error body without a
/// request id), byte for byte what every replay answers; without one, an error names the
/// request id.
pub async fn execute(state: &AppState, post: &Post, command: Command) -> Result<Response, ApiError> {
    Ok(match submit(state, post, command).await? {
        Answer::Done(outcome) => match (&post.key, crate::render::outcome_error(&outcome)) {
            (None, Some(error)) => error.into_response(),
            _ => rendered(state.renderer.render(&outcome)),
        },
        Answer::Saved(saved) => saved.into_response(),
    })
}

/// A rendered (status, body) as a response.
pub fn rendered((status, body): (u16, Vec<u8>)) -> Response {
    json_response(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body)
}

/// Parses an id from the URL path; one that does not parse is a missing resource.
pub fn path_id<T: FromStr>(text: &str, what: &str) -> Result<T, ApiError> {
    text.parse().map_err(|_| ApiError::not_found(what, text))
}

/// Runs a blocking store read off the async workers.
pub async fn read<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&dyn paycore_store::Reader) -> paycore_store::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let reader = state.reader.clone();
    Ok(tokio::task::spawn_blocking(move || f(reader.as_ref()))
        .await
        .map_err(|_| ApiError::internal("A store read failed."))??)
}

/// The health of the service.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` while the service answers.
    pub status: &'static str,
    /// What the process does: `all` (the default), `api` or `engine` (cluster mode).
    pub role: &'static str,
    /// Cluster mode with engines in this process: whether it leads at least one partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<bool>,
    /// Cluster mode with engines in this process: the partitions it leads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Vec<u32>>,
}

/// `GET /healthz`
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz(State(state): State<Arc<AppState>>) -> Json<Health> {
    let partitions = state.node.as_ref().map(|node| node.leading());
    Json(Health {
        status: "ok",
        role: state.role.as_str(),
        leader: partitions.as_ref().map(|p| !p.is_empty()),
        partitions,
    })
}

pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        crate::error::ErrorType::InvalidRequestError,
        "route_not_found",
        "No such route. See /openapi.json for the API.",
    )
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        crate::error::ErrorType::InvalidRequestError,
        "method_not_allowed",
        "This route does not accept this method. See /openapi.json for the API.",
    )
}
