//! The one error shape of the API, `{"error":{"type","code","message","param","request_id"}}`,
//! and the one place where errors become HTTP responses.
//!
//! Nothing internal reaches a client: a store failure (500) and an unavailable ledger (503) are
//! logged with their cause, in the request's span (so with its `request_id`), and answered
//! with a fixed message and the request id to quote.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use paycore_engine::EngineError;
use paycore_ledger::{CommandError, LimitBreach, ResultCode};
use serde::Serialize;
use utoipa::ToSchema;

/// The family of an error, as in Stripe's API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// The request is wrong: fix it before retrying (400, 404, 405, 409, 413, 414, 422, 431).
    InvalidRequestError,
    /// The API key is missing or unknown (401).
    AuthenticationError,
    /// An `Idempotency-Key` was reused with a different request (422).
    IdempotencyError,
    /// The service failed or is overloaded: retry later (500, 503).
    ApiError,
    /// The API key sent too many requests: retry after `Retry-After` (429).
    RateLimitError,
}

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, for programs (`type`, `code`, `param`) and for people (`message`).
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: ErrorType,
    /// A stable, machine-readable code such as `parameter_invalid` or `insufficient_funds`.
    pub code: String,
    pub message: String,
    /// The field at fault, as a JSON path (`amount`, `transfers[3].amount`), or null.
    pub param: Option<String>,
    /// The request's id, as in its `Request-Id` header (`req_…`): quote it to the operator, who
    /// finds the request's log lines by it. Absent from a response saved for an
    /// `Idempotency-Key` (see [`ApiError::saved_form`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// With `limit_exceeded` only: which limit of which account, and what it still allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<LimitDetail>,
}

/// The limit a debit would pass (`limit_exceeded`).
#[derive(Serialize, ToSchema)]
pub struct LimitDetail {
    /// The debit account (`acct_…`).
    pub account: String,
    /// `max_payment` or `daily_outflow`.
    pub name: &'static str,
    /// The limit, in minor units.
    pub limit: u64,
    /// The amount asked for.
    pub requested: u64,
    /// What the limit still allows now (for `daily_outflow`, until the end of the UTC day).
    pub remaining: u64,
}

/// An error answer: a status and the error object, plus an optional `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: ErrorType,
    pub code: String,
    pub message: String,
    pub param: Option<String>,
    pub retry_after: bool,
    /// Rendered as a response saved for an `Idempotency-Key`: without the request id, because
    /// the saved bytes are answered to the first request and to every replay alike.
    pub saved_form: bool,
    /// The details of a `limit_exceeded` (boxed: every handler returns this type, and a
    /// breach inline would double its size).
    pub limit: Option<Box<LimitBreach>>,
}

/// The most characters of an unknown id a 404 quotes back.
pub const ID_ECHO_MAX: usize = 64;

impl ApiError {
    pub fn new(status: StatusCode, kind: ErrorType, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            code: code.to_owned(),
            message: message.into(),
            param: None,
            retry_after: false,
            saved_form: false,
            limit: None,
        }
    }

    /// A 400 `invalid_request_error`.
    pub fn bad_request(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorType::InvalidRequestError, code, message)
    }

    /// A 400 `parameter_invalid` naming `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::bad_request("parameter_invalid", message).param(param)
    }

    /// A 400 `parameter_missing` naming `param`.
    pub fn missing(param: impl Into<String>) -> ApiError {
        let param = param.into();
        ApiError::bad_request("parameter_missing", format!("Missing required parameter `{param}`.")).param(param)
    }

    /// A 404 `resource_missing` for an id in the URL.
    /// 404 for the id a path names; the id is quoted back cut to [`ID_ECHO_MAX`] characters
    /// (a path may be kilobytes long).
    pub fn not_found(what: &str, id: &str) -> ApiError {
        let shown = match id.char_indices().nth(ID_ECHO_MAX) {
            Some((end, _)) => format!("{}…", &id[..end]),
            None => id.to_owned(),
        };
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorType::InvalidRequestError,
            "resource_missing",
            format!("No such {what}: '{shown}'."),
        )
        .param("id")
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, ErrorType::AuthenticationError, "invalid_api_key", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorType::ApiError, "internal_error", message)
    }

    pub fn key_reused() -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::IdempotencyError,
            "idempotency_key_reused",
            "This Idempotency-Key was already used with a different request (method, path or body). \
             Use a new key for a new request.",
        )
    }

    pub fn param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(param.into());
        self
    }

    /// This error as the response saved for an `Idempotency-Key` renders it: without the
    /// request id (see [`crate::idempotency`] for the replay rule).
    pub fn saved_form(mut self) -> ApiError {
        self.saved_form = true;
        self
    }

    /// The JSON body of this error without a request id: the saved form, the same bytes for
    /// the same error wherever it is rendered (the engine thread renders saved responses).
    pub fn body(&self) -> Vec<u8> {
        self.body_with(None)
    }

    /// The JSON body of this error, naming `request_id` if given.
    pub fn body_with(&self, request_id: Option<&str>) -> Vec<u8> {
        let body = ErrorBody {
            error: ErrorDetail {
                kind: self.kind,
                code: self.code.clone(),
                message: self.message.clone(),
                param: self.param.clone(),
                request_id: request_id.map(str::to_owned),
                limit: self.limit.as_deref().map(|b| LimitDetail {
                    account: b.account.to_string(),
                    name: b.limit.as_str(),
                    limit: b.value,
                    requested: b.requested,
                    remaining: b.remaining,
                }),
            },
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// The error for a ledger command that was refused.
    pub fn from_command(error: &CommandError) -> ApiError {
        match error {
            CommandError::AccountNotFound { param } => {
                ApiError::bad_request("account_not_found", format!("No such account in `{param}`.")).param(*param)
            }
            CommandError::CurrencyMismatch { param } => ApiError::bad_request(
                "currency_mismatch",
                format!("The account in `{param}` holds another currency than `currency`."),
            )
            .param(*param),
            CommandError::SameAccount => {
                ApiError::bad_request("same_account", "The payer and the payee are the same account.")
                    .param("payee_account")
            }
            CommandError::ReferenceTaken => ApiError::new(
                StatusCode::CONFLICT,
                ErrorType::InvalidRequestError,
                "reference_already_exists",
                "Another account of this tenant already has this reference.",
            )
            .param("reference"),
            CommandError::AlreadyExists => ApiError::new(
                StatusCode::CONFLICT,
                ErrorType::InvalidRequestError,
                "resource_already_exists",
                "An object with this id already exists.",
            )
            .param("id"),
            CommandError::PaymentNotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorType::InvalidRequestError,
                "resource_missing",
                "No such payment.",
            )
            .param("id"),
            CommandError::UnexpectedState { status } => ApiError::new(
                StatusCode::CONFLICT,
                ErrorType::InvalidRequestError,
                "payment_unexpected_state",
                format!("This payment has status `{}`, which does not allow this operation.", status.as_str()),
            ),
            CommandError::AmountTooLarge { max } => ApiError::bad_request(
                "amount_too_large",
                format!("`amount` is larger than allowed: the maximum is {max}."),
            )
            .param("amount"),
            CommandError::InvalidField { param, message } => ApiError::invalid(*param, *message),
            CommandError::Rejected(code) => ApiError::from_result(*code, None),
            CommandError::QuoteNotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorType::InvalidRequestError,
                "resource_missing",
                "No such FX quote.",
            )
            .param("fx_quote"),
            CommandError::QuoteExpired => ApiError::bad_request(
                "quote_expired",
                "The FX quote has expired or was used by another payment: ask for a new quote.",
            )
            .param("fx_quote"),
            CommandError::LimitExceeded(breach) => ApiError::from_breach(*breach),
            CommandError::AccountNotEmpty => ApiError::new(
                StatusCode::CONFLICT,
                ErrorType::InvalidRequestError,
                "account_not_empty",
                "Only an account with a zero balance and no pending transfers can be closed.",
            )
            .param("status"),
            CommandError::WindowEmpty => ApiError::new(
                StatusCode::CONFLICT,
                ErrorType::InvalidRequestError,
                "window_empty",
                "The open clearing window of this currency has no posted transfer: there is nothing to close.",
            )
            .param("currency"),
            CommandError::PayerRequired => ApiError::new(
                StatusCode::CONFLICT,
                ErrorType::InvalidRequestError,
                "payer_required",
                "This payment has no payer: it is paid by scanning its QR code (POST /v1/payments/scan).",
            ),
            CommandError::PayerMismatch => ApiError::new(
                StatusCode::CONFLICT,
                ErrorType::InvalidRequestError,
                "payer_mismatch",
                "This payment was made for another payer account.",
            )
            .param("payer_account"),
        }
    }

    /// `limit_exceeded` (422) with which limit, its value, the amount asked for and what is
    /// left, in the message and in `error.limit`.
    pub fn from_breach(breach: LimitBreach) -> ApiError {
        let mut error = ApiError::from_result(ResultCode::LimitExceeded, None);
        error.message = format!(
            "The debit of {} would pass the {} limit of {} of account {}: {} is left.",
            breach.requested,
            breach.limit.as_str(),
            breach.value,
            breach.account,
            breach.remaining
        );
        error.limit = Some(Box::new(breach));
        error
    }

    /// The error for a transfer the ledger rejected (422, `code` = the result code).
    /// `pending_param` names the field that held the pending id, if any.
    pub fn from_result(code: ResultCode, pending_param: Option<&'static str>) -> ApiError {
        let (param, message): (Option<&str>, &str) = match code {
            ResultCode::InsufficientFunds => (None, "The debit account has insufficient funds."),
            ResultCode::AccountNotFound => (None, "The debit or credit account does not exist."),
            ResultCode::CurrencyMismatch => (Some("currency"), "An account holds another currency."),
            ResultCode::SameAccount => (Some("credit_account"), "The debit and credit account are the same."),
            ResultCode::InvalidAmount => (Some("amount"), "The amount must be between 1 and 9223372036854775807."),
            ResultCode::InvalidTimeout => (Some("timeout_seconds"), "The timeout is out of range."),
            ResultCode::Overflow => (Some("amount"), "A balance would exceed the maximum."),
            ResultCode::AmountExceedsPending => (Some("amount"), "The amount exceeds the pending amount."),
            ResultCode::ExistsWithDifferentFields => {
                (Some("id"), "A transfer with this id exists with different fields.")
            }
            ResultCode::PendingNotFound => (pending_param, "The pending transfer does not exist."),
            ResultCode::PendingAlreadyPosted => (pending_param, "The pending transfer was already posted."),
            ResultCode::PendingAlreadyVoided => (pending_param, "The pending transfer was already voided."),
            ResultCode::PendingExpired => (pending_param, "The pending transfer has expired."),
            ResultCode::LinkedEventFailed => (None, "Another transfer of the linked chain failed."),
            ResultCode::LinkedEventChainOpen => (Some("linked"), "The last transfer of a batch cannot be linked."),
            ResultCode::LimitExceeded => (Some("amount"), "The debit would pass a limit of the debit account."),
            ResultCode::VelocityExceeded => {
                (None, "The debit account has made as many debits as its velocity limit allows for now.")
            }
            ResultCode::AccountFrozen => (None, "The debit account is frozen: it accepts credits only."),
            ResultCode::AccountClosed => (None, "The debit or credit account is closed."),
            // A refunds batch's items only; a transfer never gets these.
            ResultCode::PaymentNotFound => (Some("payment"), "The payment does not exist."),
            ResultCode::PaymentNotRefundable => (Some("payment"), "The payment cannot be refunded."),
            ResultCode::AmountExceedsRefundable => (Some("amount"), "The amount exceeds what is left to refund."),
            ResultCode::Ok | ResultCode::Exists => (None, "The transfer was applied."),
        };
        let mut error =
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorType::InvalidRequestError, code.as_str(), message);
        error.param = param.map(str::to_owned);
        error
    }

    /// The error for an engine failure: 503 with `Retry-After`. The cause of an unavailable
    /// ledger (a panic message, a store error) is logged here, in the request's span, and never
    /// answered: the client gets a fixed message and, in the body, the request id to quote.
    pub fn from_engine(error: &EngineError) -> ApiError {
        let (code, message) = match error {
            EngineError::Overloaded => ("queue_full", "The ledger is busy; retry in a second."),
            EngineError::Unavailable(why) => {
                tracing::error!(cause = %why, "the ledger is unavailable; nothing of the request was applied");
                ("ledger_unavailable", "The ledger is unavailable; nothing was applied. Retry later.")
            }
            EngineError::StorageFull => STORAGE_FULL,
            EngineError::NoReply => (
                "ledger_timeout",
                "The ledger did not answer in time; the request may still be applied. Retry it with the same \
                 Idempotency-Key (or the same ids), or read the object.",
            ),
        };
        let mut error = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorType::ApiError, code, message);
        error.retry_after = true;
        error
    }
}

/// The code and message of a write refused because the store's disk is full (503 with
/// `Retry-After`), whether the engine's commit or an API write (a batch upload) met it.
const STORAGE_FULL: (&str, &str) =
    ("storage_full", "The ledger's storage is full; nothing was applied. Retry later: reads still work.");

/// A store failure: its cause is logged in the request's span, so with the request id; the
/// client gets a fixed message and the request id, never the cause. A failure that may pass
/// by itself (the store busy or unreachable: `StoreError::is_transient`) is 503 with
/// `Retry-After` (`storage_full` for a full disk, else `store_unavailable`); any other is 500.
impl From<paycore_store::StoreError> for ApiError {
    fn from(error: paycore_store::StoreError) -> ApiError {
        if let paycore_store::StoreError::Full(_) = error {
            tracing::warn!(%error, "the store's disk is full");
            let mut answer =
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorType::ApiError, STORAGE_FULL.0, STORAGE_FULL.1);
            answer.retry_after = true;
            return answer;
        }
        if error.is_transient() {
            tracing::warn!(%error, "store busy or unavailable");
            let mut answer = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorType::ApiError,
                "store_unavailable",
                "The store is busy or unavailable; nothing was changed. Retry later.",
            );
            answer.retry_after = true;
            return answer;
        }
        tracing::error!(%error, "store operation failed");
        ApiError::internal("The service could not read its store.")
    }
}

impl IntoResponse for ApiError {
    /// The response, with the current request's id in the body unless this is the saved form.
    fn into_response(self) -> Response {
        let request_id = if self.saved_form { None } else { crate::request_id::current() };
        let mut response = json_response(self.status, self.body_with(request_id.as_deref()));
        if self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// A response with a JSON body.
pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_503_storage_full_with_retry_after_from_the_store_and_the_engine() {
        let from_store = ApiError::from(paycore_store::StoreError::Full("no space left on device".into()));
        let from_engine = ApiError::from_engine(&EngineError::StorageFull);
        for error in [from_store, from_engine] {
            assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(error.code, "storage_full");
            assert_eq!(error.kind, ErrorType::ApiError);
            let body = String::from_utf8(error.body_with(None)).unwrap_or_default();
            assert!(!body.contains("no space left"), "the cause stays in the log: {body}");
            let response = error.into_response();
            assert_eq!(response.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()), Some(&b"1"[..]));
        }
        let busy = ApiError::from(paycore_store::StoreError::Unavailable("closed".into()));
        assert_eq!((busy.status, busy.code.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"));
    }

    #[test]
    fn a_404_quotes_a_long_id_cut_short() {
        let short = ApiError::not_found("payment", "pay_123");
        assert!(short.body_with(None).windows(17).any(|w| w == b"payment: 'pay_123"));
        let long = "x".repeat(9000);
        let answer = String::from_utf8(ApiError::not_found("payment", &long).body_with(None)).unwrap_or_default();
        assert!(answer.contains(&format!("'{}…'", "x".repeat(ID_ECHO_MAX))), "{answer}");
        assert!(answer.len() < 400, "{answer}");
    }
}
