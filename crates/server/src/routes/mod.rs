//! The handlers, one module per resource, and what they share: submitting to the engine and
//! answering with the rendered outcome or a saved response.

pub mod accounts;
pub mod admin;
pub mod batches;
pub mod payments;
pub mod transfers;
pub mod webhooks;

use crate::error::{json_response, ApiError};
use crate::idempotency::{Post, Saved};
use crate::AppState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use paycore_engine::{Reply, Submission};
use paycore_ledger::{Command, Outcome, Request};
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
    let submission =
        Submission { request: Request { tenant: post.auth.tenant, command }, idempotency: post.key.clone() };
    match state.engine.submit(submission).await {
        Ok(Reply::Done(outcome)) => Ok(Answer::Done(outcome)),
        Ok(Reply::Replay { status, body }) => Ok(Answer::Saved(Saved { status, body })),
        Ok(Reply::KeyReused) => Err(ApiError::key_reused()),
        Err(error) => Err(ApiError::from_engine(&error)),
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
}

/// `GET /healthz`
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
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
