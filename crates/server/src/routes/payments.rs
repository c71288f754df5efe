//! `/v1/payments`: the real-time flow. Create → confirm → (capture | cancel) → refunds.

use super::{execute, path_id, read};
use crate::auth::Auth;
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::Post;
use crate::ids::new_id;
use crate::json::{self, Amount, Id, Seconds};
use crate::render::{self, ListJson, PaymentJson, RefundJson};
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use paycore_formats::emvco;
use paycore_ledger::{
    parse_amount, AccountId, CaptureMethod, Command, Merchant, NewPayment, PaymentId, PaymentStatus, QuoteId, RefundId,
    TIMEOUT_MAX_SECONDS,
};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::ToSchema;

/// How long a payment waits for confirmation (and capture) by default: one day.
pub const EXPIRES_IN_SECONDS_DEFAULT: u64 = 86_400;
/// The longest description, in characters.
pub const DESCRIPTION_LENGTH_MAX: usize = 1000;

/// When the money moves.
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMethodParam {
    /// Confirmation moves the money.
    Automatic,
    /// Confirmation holds the money; a capture moves it (all or part), a cancel releases it.
    Manual,
}

/// Creates a payment order in `requires_confirmation`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    /// `acct_…`, the account debited. Leave it out for scan to pay: the payment can then only
    /// be confirmed by `POST /v1/payments/scan`, which names the payer.
    #[schema(value_type = Option<String>)]
    pub payer_account: Option<Id<AccountId>>,
    /// `acct_…`, the account credited.
    #[schema(value_type = String)]
    pub payee_account: Id<AccountId>,
    /// Minor units, 1 to 9223372036854775807.
    #[schema(value_type = u64)]
    pub amount: Amount,
    /// ISO 4217 code, upper case; both accounts must hold it.
    pub currency: String,
    /// `automatic` (default) or `manual`.
    pub capture_method: Option<CaptureMethodParam>,
    /// Seconds until an unconfirmed (or uncaptured) payment expires: 1 to 31622400, default 86400.
    #[schema(value_type = Option<u64>)]
    pub expires_in_seconds: Option<Seconds>,
    /// Free text, at most 1000 characters.
    pub description: Option<String>,
    /// `fxq_…`: a cross-currency payment's quote. `amount` and `currency` must be its
    /// `source_amount` and `from_currency` (the payer's), the payee's account must hold its
    /// `to_currency`; the payee receives its `target_amount`, the fee is charged on top. A quote
    /// is used once, before its `expires_at`.
    #[schema(value_type = Option<String>)]
    pub fx_quote: Option<Id<QuoteId>>,
    /// The merchant the payment's QR code (`qr_payload`) names; default `paycore`, `Internet`,
    /// `ZZ`, `5999`.
    pub merchant: Option<MerchantParam>,
}

/// The merchant a payment's EMVCo QR code names.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MerchantParam {
    /// 1 to 25 printable ASCII characters (EMVCo tag 59).
    pub name: String,
    /// 1 to 15 printable ASCII characters (tag 60).
    pub city: String,
    /// ISO 3166-1 alpha-2, upper case (tag 58).
    pub country: String,
    /// ISO 18245 merchant category code, four digits (tag 52).
    pub category_code: String,
}

/// Pays a payment by its QR code: binds the payer and confirms, in one step.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanPayment {
    /// The text the QR code holds (the payment's `qr_payload`), as scanned.
    pub payload: String,
    /// `acct_…`, the account debited: of this tenant, in the payment's currency.
    #[schema(value_type = String)]
    pub payer_account: Id<AccountId>,
}

/// Captures a held payment: all of it, or `amount`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapturePayment {
    /// At most the amount held; default all of it. The rest is released to the payer.
    #[schema(value_type = Option<u64>)]
    pub amount: Option<Amount>,
}

/// Refunds a succeeded payment: all that is left, or `amount`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    /// At most what was captured and not yet refunded; default all of it.
    #[schema(value_type = Option<u64>)]
    pub amount: Option<Amount>,
    /// Free text stored on the refund: one line, at most 140 characters.
    pub reason: Option<String>,
}

/// An empty body (`{}`), as confirm and cancel take.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `POST /v1/payments`
#[utoipa::path(post, path = "/v1/payments", tag = "payments",
    request_body = CreatePayment,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses(
        (status = 201, description = "The payment, `requires_confirmation`", body = PaymentJson),
        (status = 400, description = "Invalid parameter; `account_not_found`, `currency_mismatch`, `same_account` or `quote_expired` with `param`", body = ErrorBody),
        (status = 404, description = "`resource_missing`: no such `fx_quote`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create(State(state): State<Arc<AppState>>, post: Post) -> Result<Response, ApiError> {
    if let Some(saved) = post.saved {
        return Ok(saved.into_response());
    }
    let params: CreatePayment = json::parse(&post.body)?;
    let currency = json::currency(&params.currency, "currency")?;
    let expires_in_seconds = params.expires_in_seconds.map_or(EXPIRES_IN_SECONDS_DEFAULT, |s| s.0);
    if expires_in_seconds > TIMEOUT_MAX_SECONDS {
        return Err(ApiError::invalid(
            "expires_in_seconds",
            "`expires_in_seconds` must be from 1 to 31622400 (366 days).",
        ));
    }
    if params.description.as_ref().is_some_and(|d| d.chars().count() > DESCRIPTION_LENGTH_MAX) {
        return Err(ApiError::invalid("description", "`description` must be at most 1000 characters."));
    }
    let merchant = match params.merchant {
        None => crate::qr::default_merchant(),
        Some(m) => {
            if let Some((field, why)) = emvco::check_merchant(&m.name, &m.city, &m.country, &m.category_code) {
                return Err(ApiError::invalid(format!("merchant.{field}"), format!("`merchant.{field}` {why}.")));
            }
            Merchant { name: m.name, city: m.city, country: m.country, category_code: m.category_code }
        }
    };
    let command = Command::CreatePayment(NewPayment {
        id: PaymentId(new_id()),
        payer: params.payer_account.map(|p| p.0),
        payee: params.payee_account.0,
        amount: params.amount.0,
        currency,
        capture_method: match params.capture_method {
            None | Some(CaptureMethodParam::Automatic) => CaptureMethod::Automatic,
            Some(CaptureMethodParam::Manual) => CaptureMethod::Manual,
        },
        expires_in_seconds,
        description: params.description,
        fx_quote: params.fx_quote.map(|q| q.0),
        merchant: Some(merchant),
    });
    execute(&state, &post, command).await
}

/// `POST /v1/payments/{id}/confirm`
#[utoipa::path(post, path = "/v1/payments/{id}/confirm", tag = "payments",
    params(("id" = String, Path, description = "`pay_…`"), ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    request_body(content = Option<Empty>, description = "Empty, or `{}`"),
    responses(
        (status = 200, description = "The payment: `succeeded`, `failed` with `failure_code`, or `requires_capture` (manual capture: funds held)", body = PaymentJson),
        (status = 404, description = "`resource_missing`", body = ErrorBody),
        (status = 409, description = "`payment_unexpected_state`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn confirm(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    post: Post,
) -> Result<Response, ApiError> {
    if let Some(saved) = post.saved {
        return Ok(saved.into_response());
    }
    let payment: PaymentId = path_id(&id, "payment")?;
    let _: Empty = json::parse(&post.body)?;
    execute(&state, &post, Command::ConfirmPayment(payment)).await
}

/// `POST /v1/payments/{id}/capture`
#[utoipa::path(post, path = "/v1/payments/{id}/capture", tag = "payments",
    params(("id" = String, Path, description = "`pay_…`"), ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    request_body(content = Option<CapturePayment>, description = "Empty to capture all"),
    responses(
        (status = 200, description = "The payment, `succeeded`", body = PaymentJson),
        (status = 400, description = "`amount_too_large` (the message names the maximum)", body = ErrorBody),
        (status = 404, description = "`resource_missing`", body = ErrorBody),
        (status = 409, description = "`payment_unexpected_state`", body = ErrorBody),
        (status = 422, description = "The ledger refused the capture (`pending_expired`)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn capture(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    post: Post,
) -> Result<Response, ApiError> {
    if let Some(saved) = post.saved {
        return Ok(saved.into_response());
    }
    let payment: PaymentId = path_id(&id, "payment")?;
    let params: CapturePayment = json::parse(&post.body)?;
    execute(&state, &post, Command::CapturePayment { payment, amount: params.amount.map(|a| a.0) }).await
}

/// `POST /v1/payments/{id}/cancel`
#[utoipa::path(post, path = "/v1/payments/{id}/cancel", tag = "payments",
    params(("id" = String, Path, description = "`pay_…`"), ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    request_body(content = Option<Empty>, description = "Empty, or `{}`"),
    responses(
        (status = 200, description = "The payment, `cancelled` (held funds released)", body = PaymentJson),
        (status = 404, description = "`resource_missing`", body = ErrorBody),
        (status = 409, description = "`payment_unexpected_state`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    post: Post,
) -> Result<Response, ApiError> {
    if let Some(saved) = post.saved {
        return Ok(saved.into_response());
    }
    let payment: PaymentId = path_id(&id, "payment")?;
    let _: Empty = json::parse(&post.body)?;
    execute(&state, &post, Command::CancelPayment(payment)).await
}

/// `POST /v1/payments/{id}/refunds`
#[utoipa::path(post, path = "/v1/payments/{id}/refunds", tag = "payments",
    params(("id" = String, Path, description = "`pay_…`"), ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    request_body(content = Option<CreateRefund>, description = "Empty to refund all that is left"),
    responses(
        (status = 201, description = "The refund: `succeeded`, or `failed` with `failure_code`", body = RefundJson),
        (status = 400, description = "`amount_too_large` (the message names the maximum)", body = ErrorBody),
        (status = 404, description = "`resource_missing`", body = ErrorBody),
        (status = 409, description = "`payment_unexpected_state`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn refund(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    post: Post,
) -> Result<Response, ApiError> {
    if let Some(saved) = post.saved {
        return Ok(saved.into_response());
    }
    let payment: PaymentId = path_id(&id, "payment")?;
    let params: CreateRefund = json::parse(&post.body)?;
    if let Some(reason) = &params.reason {
        // The rule of a refunds file's `reason` column.
        if reason.chars().count() > paycore_formats::REASON_CHARS_MAX || reason.chars().any(char::is_control) {
            return Err(ApiError::invalid("reason", "`reason` must be one line of at most 140 characters."));
        }
    }
    let amount = params.amount.map(|a| a.0);
    let command = Command::RefundPayment { payment, refund: RefundId(new_id()), amount, reason: params.reason };
    execute(&state, &post, command).await
}

/// `GET /v1/payments/{id}`
#[utoipa::path(get, path = "/v1/payments/{id}", tag = "payments",
    params(("id" = String, Path, description = "`pay_…`")),
    responses(
        (status = 200, description = "The payment", body = PaymentJson),
        (status = 404, description = "`resource_missing`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn retrieve(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let payment_id: PaymentId = path_id(&id, "payment")?;
    let payment = read(&state, move |r| r.payment(auth.tenant, payment_id))
        .await?
        .ok_or_else(|| ApiError::not_found("payment", &id))?;
    Ok(super::rendered(render::json(200, &PaymentJson::new(&payment))))
}

/// `GET /v1/payments`
#[utoipa::path(get, path = "/v1/payments", tag = "payments",
    params(
        ("status" = Option<String>, Query, description = "Only payments in this status: `requires_confirmation`, `requires_capture`, `succeeded`, `failed`, `cancelled` or `expired`"),
        ("limit" = Option<u32>, Query, description = "1 to 100, default 20"),
        ("starting_after" = Option<String>, Query, description = "A payment id: the `next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "The tenant's payments, newest first", body = ListJson<PaymentJson>),
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
        match pair.split_once('=') {
            Some(("status", value)) => {
                status = Some(PaymentStatus::parse(value).ok_or_else(|| {
                    ApiError::invalid(
                        "status",
                        "`status` must be one of: requires_confirmation, requires_capture, succeeded, failed, cancelled, expired.",
                    )
                })?);
            }
            _ => rest.push(pair),
        }
    }
    let page = super::accounts::list_page::<PaymentId>(Some(&rest.join("&")), "a payment id (`pay_…`)")?;
    let (tenant, fetch) = (auth.tenant, paycore_store::Page { after: page.after, limit: page.limit + 1 });
    let payments = read(&state, move |r| r.payments(tenant, status, fetch)).await?;
    let list = ListJson::page(payments, page.limit, |p| p.id.to_string(), PaymentJson::new);
    Ok(super::rendered(render::json(200, &list)))
}

/// `GET /v1/payments/{id}/refunds`
#[utoipa::path(get, path = "/v1/payments/{id}/refunds", tag = "payments",
    params(("id" = String, Path, description = "`pay_…`")),
    responses(
        (status = 200, description = "The payment's refunds, oldest first", body = ListJson<RefundJson>),
        (status = 404, description = "`resource_missing`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn refunds(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let payment_id: PaymentId = path_id(&id, "payment")?;
    let tenant = auth.tenant;
    let refunds = read(&state, move |r| {
        if r.payment(tenant, payment_id)?.is_none() {
            return Ok(None);
        }
        r.refunds(tenant, payment_id).map(Some)
    })
    .await?
    .ok_or_else(|| ApiError::not_found("payment", &id))?;
    let list = ListJson {
        object: render::ObjectKind::List,
        data: refunds.iter().map(RefundJson::new).collect::<Vec<_>>(),
        has_more: false,
        next_cursor: None,
    };
    Ok(super::rendered(render::json(200, &list)))
}

/// `GET /v1/payments/{id}/qr`
#[utoipa::path(get, path = "/v1/payments/{id}/qr", tag = "payments",
    params(("id" = String, Path, description = "`pay_…`"),
        ("format" = Option<String>, Query, description = "`svg` (default, `image/svg+xml`) or `png` (`image/png`)")),
    responses(
        (status = 200, description = "The payment's QR code (its `qr_payload`)", content_type = "image/svg+xml"),
        (status = 400, description = "`parameter_invalid` (`format`)", body = ErrorBody),
        (status = 404, description = "`resource_missing`", body = ErrorBody),
        (status = 409, description = "`payment_unexpected_state`: only a payment that requires confirmation has a code", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn qr(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let payment_id: PaymentId = path_id(&id, "payment")?;
    let mut png = false;
    for pair in query.as_deref().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("format", "svg") => png = false,
            ("format", "png") => png = true,
            ("format", _) => return Err(ApiError::invalid("format", "`format` must be `svg` or `png`.")),
            (other, _) => {
                return Err(ApiError::bad_request(
                    "unknown_parameter",
                    format!("Received unknown query parameter `{other}`."),
                )
                .param(other.to_owned()))
            }
        }
    }
    let payment = read(&state, move |r| r.payment(auth.tenant, payment_id))
        .await?
        .ok_or_else(|| ApiError::not_found("payment", &id))?;
    let text = crate::qr::payload(&payment).ok_or_else(|| {
        ApiError::from_command(&paycore_ledger::CommandError::UnexpectedState { status: payment.status })
    })?;
    let headers =
        |content_type: &'static str| [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-store")];
    Ok(if png {
        (StatusCode::OK, headers("image/png"), crate::qr::png(&text)?).into_response()
    } else {
        (StatusCode::OK, headers("image/svg+xml"), crate::qr::svg(&text)?).into_response()
    })
}

/// `POST /v1/payments/scan`
#[utoipa::path(post, path = "/v1/payments/scan", tag = "payments",
    request_body = ScanPayment,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses(
        (status = 200, description = "The payment, paid by `payer_account`: `succeeded`, or `requires_capture` (manual capture)", body = PaymentJson),
        (status = 400, description = "`qr_crc_mismatch` (the code was changed or misread), `qr_invalid`, `qr_mismatch` (amount or currency not the payment's), `account_not_found`, `currency_mismatch` or `same_account`, with `param`; nothing moved", body = ErrorBody),
        (status = 404, description = "`resource_missing`: no such payment in this tenant", body = ErrorBody),
        (status = 409, description = "`payment_expired`, `payment_unexpected_state` (paid already, cancelled...) or `payer_mismatch`", body = ErrorBody),
        (status = 422, description = "The ledger refused the debit (`insufficient_funds`, `limit_exceeded`, `account_frozen`...): the payment stays open", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn scan(State(state): State<Arc<AppState>>, post: Post) -> Result<Response, ApiError> {
    if let Some(saved) = post.saved {
        return Ok(saved.into_response());
    }
    let params: ScanPayment = json::parse(&post.body)?;
    let decoded = emvco::decode(&params.payload).map_err(|e| {
        ApiError::bad_request(e.code(), format!("`payload` is not a paycore QR code: {e}.")).param("payload")
    })?;
    let payment_id: PaymentId = decoded.payment.parse().map_err(|_| {
        ApiError::bad_request("qr_invalid", "`payload` names no paycore payment (not a `pay_…` id).").param("payload")
    })?;
    let tenant = post.auth.tenant;
    // Another tenant's payment is "no such payment", never a hint that it exists.
    let payment = read(&state, move |r| r.payment(tenant, payment_id))
        .await?
        .ok_or_else(|| ApiError::not_found("payment", &decoded.payment))?;
    // The amount and currency of a payment never change, so this check need not wait for the
    // engine; status, expiry, payer and funds are decided there.
    let amount = parse_amount(&decoded.amount, payment.currency).ok().map(|a| a.get());
    if decoded.currency != payment.currency.numeric() || amount != Some(payment.amount) {
        return Err(ApiError::bad_request(
            "qr_mismatch",
            "The code's amount or currency is not the payment's: it was not made by paycore for this payment.",
        )
        .param("payload"));
    }
    if payment.status == PaymentStatus::Expired {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            crate::error::ErrorType::InvalidRequestError,
            "payment_expired",
            "This payment has expired: ask the merchant for a new code.",
        )
        .param("payload"));
    }
    execute(&state, &post, Command::ScanPayment { payment: payment_id, payer: params.payer_account.0 }).await
}
