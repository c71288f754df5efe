//! `/v1/fx/…`: a tenant's exchange rates, its FX fee, quotes, and its FX accounts.
//!
//! Rates, the fee and quotes are not money: they are written through the store's FX side,
//! outside the engine. A quote becomes money only when a payment names it (`fx_quote`): the
//! engine checks and uses it inside its batch (see `paycore_ledger::fx` for the rounding rule).

use super::read;
use crate::auth::Auth;
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::Post;
use crate::ids::{new_id, now_ns};
use crate::json::{self, Amount, Seconds};
use crate::render::{self, rfc3339, AccountJson, ObjectKind};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use paycore_ledger::fx::{
    fee_revenue_account, liquidity_account, quote_amounts, ConversionError, Fixed, Quote, Rate, RateError, FEE_BPS_MAX,
    LOCK_SECONDS_MAX,
};
use paycore_ledger::{Currency, QuoteId, TenantId};
use paycore_store::{FxStore, IdempotencyRecord, RateRecord, StoreError};
use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use utoipa::ToSchema;

/// How long a quote is locked when the request does not say: one minute.
pub const LOCK_SECONDS_DEFAULT: u64 = 60;

/// A rate in a body: a JSON string of an exact decimal. A JSON number is refused: a float
/// cannot hold most rates exactly, and the platform never guesses which one was meant.
pub struct RateParam(pub Rate);

impl<'de> Deserialize<'de> for RateParam {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RateVisitor;
        impl Visitor<'_> for RateVisitor {
            type Value = RateParam;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal string such as \"1.0842\" (greater than zero, at most 12 significant digits and 12 decimals; never a JSON number)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RateParam, E> {
                Rate::parse(v).map(RateParam).map_err(|error| {
                    let what: &dyn fmt::Display = &error;
                    match error {
                        RateError::Syntax => E::invalid_value(Unexpected::Str(v), &self),
                        _ => E::custom(format_args!("{what}; got {v:?}")),
                    }
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RateParam, E> {
                Err(E::invalid_type(Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RateParam, E> {
                Err(E::invalid_type(Unexpected::Signed(v), &self))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RateParam, E> {
                Err(E::invalid_type(Unexpected::Float(v), &self))
            }
        }
        deserializer.deserialize_any(RateVisitor)
    }
}

/// Sets the tenant's rate for a currency pair.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRate {
    /// ISO 4217 code: the currency sold by the payer.
    pub base: String,
    /// ISO 4217 code: the currency the payee receives.
    pub quote: String,
    /// Units of `quote` for one unit of `base`, as a decimal **string** (`"1.0842"`): greater
    /// than zero, at most 12 significant digits and 12 decimals. A JSON number is refused.
    #[schema(value_type = String)]
    pub rate: RateParam,
}

/// A rate of the tenant.
#[derive(Serialize, ToSchema)]
pub struct RateJson {
    pub object: ObjectKind,
    pub base: &'static str,
    pub quote: &'static str,
    /// A decimal string, in canonical form (no trailing zeros).
    pub rate: String,
    pub updated_at: String,
}

impl RateJson {
    fn new(r: &RateRecord) -> RateJson {
        RateJson {
            object: ObjectKind::FxRate,
            base: r.base.code(),
            quote: r.quote.code(),
            rate: r.rate.to_string(),
            updated_at: rfc3339(r.updated_at),
        }
    }
}

/// Asks for a quote: give `source_amount` (what the payer pays) or `target_amount` (what the
/// payee receives), not both.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateQuote {
    /// ISO 4217 code of the payer's currency.
    pub from_currency: String,
    /// ISO 4217 code of the payee's currency.
    pub to_currency: String,
    /// Minor units of `from_currency`; the payee gets the floor of its conversion.
    #[schema(value_type = Option<u64>)]
    pub source_amount: Option<Amount>,
    /// Minor units of `to_currency`; the payer pays the ceiling of its conversion back.
    #[schema(value_type = Option<u64>)]
    pub target_amount: Option<Amount>,
    /// Seconds the rate is locked: 1 to 3600, default 60.
    #[schema(value_type = Option<u64>)]
    pub lock_seconds: Option<Seconds>,
}

/// A quote: both amounts and the fee, fixed until `expires_at`.
#[derive(Serialize, ToSchema)]
pub struct QuoteJson {
    /// `fxq_…`
    pub id: String,
    pub object: ObjectKind,
    pub from_currency: &'static str,
    pub to_currency: &'static str,
    /// Units of `to_currency` per unit of `from_currency`, as a decimal string.
    pub rate: String,
    /// What the payer pays, in minor units of `from_currency` (the fee comes on top).
    pub source_amount: u64,
    /// What the payee receives, in minor units of `to_currency`.
    pub target_amount: u64,
    /// Charged to the payer on top of `source_amount`, in minor units of `from_currency`.
    pub fee: u64,
    pub created_at: String,
    /// A payment must be created with the quote before this instant.
    pub expires_at: String,
    /// The payment that used the quote (`pay_…`), once used.
    pub used_by: Option<String>,
}

impl QuoteJson {
    fn new(q: &Quote) -> QuoteJson {
        QuoteJson {
            id: q.id.to_string(),
            object: ObjectKind::FxQuote,
            from_currency: q.from.code(),
            to_currency: q.to.code(),
            rate: q.rate.to_string(),
            source_amount: q.source_amount,
            target_amount: q.target_amount,
            fee: q.fee,
            created_at: rfc3339(q.created_at),
            expires_at: rfc3339(q.expires_at),
            used_by: q.used_by.map(|p| p.to_string()),
        }
    }
}

/// The tenant's FX settings.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSettings {
    /// The fee on every cross-currency payment, in basis points of the source amount (0 to
    /// 10000), rounded up to the minor unit; 0 unless set.
    pub fee_bps: u32,
}

/// The tenant's FX settings.
#[derive(Serialize, ToSchema)]
pub struct SettingsJson {
    pub fee_bps: u32,
}

/// One of the tenant's FX accounts: a liquidity account per currency (no overdraft limit: its
/// balance is the platform's position in that currency) and a fee revenue account per source
/// currency. The engine opens them with the first payment that needs them.
#[derive(Serialize, ToSchema)]
pub struct FxAccountJson {
    /// `liquidity` or `fee_revenue`.
    pub kind: &'static str,
    pub account: AccountJson,
}

async fn fx<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&dyn FxStore) -> paycore_store::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.fx.clone();
    Ok(tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|_| ApiError::internal("A store call failed."))??)
}

fn list<T: Serialize>(data: &[T]) -> serde_json::Value {
    serde_json::json!({ "object": "list", "data": data, "has_more": false, "next_cursor": null })
}

/// `POST /v1/fx/rates`: sets the tenant's rate for a pair (200), replacing the one before. A
/// quote made earlier keeps its rate.
#[utoipa::path(post, path = "/v1/fx/rates", tag = "fx",
    request_body = SetRate,
    responses(
        (status = 200, description = "The rate as stored", body = RateJson),
        (status = 400, description = "Invalid parameter (`rate` a number, zero, negative, too many digits; an unknown currency; `base` = `quote`), with `param`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn set_rate(State(state): State<Arc<AppState>>, post: Post) -> Result<Response, ApiError> {
    let params: SetRate = json::parse(&post.body)?;
    let base = json::currency(&params.base, "base")?;
    let quote = json::currency(&params.quote, "quote")?;
    if base == quote {
        return Err(ApiError::invalid("quote", "`quote` must be another currency than `base`."));
    }
    let record = RateRecord { tenant: post.auth.tenant, base, quote, rate: params.rate.0, updated_at: now_ns() };
    let stored = record.clone();
    fx(&state, move |s| s.set_rate(&stored)).await?;
    Ok(super::rendered(render::json(200, &RateJson::new(&record))))
}

/// `GET /v1/fx/rates`: the tenant's rates, by base then quote currency.
#[utoipa::path(get, path = "/v1/fx/rates", tag = "fx",
    responses((status = 200, description = "`{object: list, data: [rate], has_more: false}`")),
    security(("bearer" = [])))]
pub async fn rates(State(state): State<Arc<AppState>>, auth: Auth) -> Result<Response, ApiError> {
    let tenant = auth.tenant;
    let rates = fx(&state, move |s| s.rates(tenant)).await?;
    let data: Vec<RateJson> = rates.iter().map(RateJson::new).collect();
    Ok(super::rendered(render::json(200, &list(&data))))
}

/// The error of a conversion out of range, naming the amount that was given.
fn conversion_error(error: ConversionError, param: &'static str) -> ApiError {
    let message = match error {
        ConversionError::TooSmall => format!("`{param}` converts to less than one minor unit."),
        ConversionError::TooLarge => {
            format!("`{param}` converts (with the fee) to more than 9223372036854775807 minor units.")
        }
    };
    ApiError::invalid(param, message)
}

/// `POST /v1/fx/quotes` (201): locks the tenant's current rate for one payment, fixing both
/// amounts and the fee. `no_rate` when the tenant has no rate for the pair (never 1:1).
#[utoipa::path(post, path = "/v1/fx/quotes", tag = "fx",
    request_body = CreateQuote,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: a retry gets the same quote")),
    responses(
        (status = 201, description = "The quote", body = QuoteJson),
        (status = 400, description = "Invalid parameter, or `no_rate` (`param`: `to_currency`)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create_quote(State(state): State<Arc<AppState>>, post: Post) -> Result<Response, ApiError> {
    if let Some(saved) = post.saved {
        return Ok(saved.into_response());
    }
    let params: CreateQuote = json::parse(&post.body)?;
    let from = json::currency(&params.from_currency, "from_currency")?;
    let to = json::currency(&params.to_currency, "to_currency")?;
    if from == to {
        return Err(ApiError::invalid("to_currency", "`to_currency` must be another currency than `from_currency`."));
    }
    let (fixed, param) = match (params.source_amount, params.target_amount) {
        (Some(source), None) => (Fixed::Source(source.0), "source_amount"),
        (None, Some(target)) => (Fixed::Target(target.0), "target_amount"),
        (None, None) => return Err(ApiError::missing("source_amount")),
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "target_amount",
                "Give `source_amount` or `target_amount`, not both: the quote computes the other.",
            ))
        }
    };
    let lock_seconds = params.lock_seconds.map_or(LOCK_SECONDS_DEFAULT, |s| s.0);
    if lock_seconds > LOCK_SECONDS_MAX {
        return Err(ApiError::invalid("lock_seconds", "`lock_seconds` must be from 1 to 3600."));
    }
    let tenant = post.auth.tenant;
    let (rate, fee_bps) = fx(&state, move |s| Ok((s.rate(tenant, from, to)?, s.fee_bps(tenant)?))).await?;
    let rate = rate.ok_or_else(|| no_rate(from, to))?;
    let (source_amount, target_amount, fee) =
        quote_amounts(fixed, rate.rate, from, to, fee_bps).map_err(|e| conversion_error(e, param))?;
    let created_at = now_ns();
    let quote = Quote {
        id: QuoteId(new_id()),
        tenant,
        from,
        to,
        rate: rate.rate,
        source_amount,
        target_amount,
        fee,
        created_at,
        expires_at: created_at.saturating_add(lock_seconds * 1_000_000_000),
        used_by: None,
    };
    let (status, body) = render::json(201, &QuoteJson::new(&quote));
    let saved = post.key.clone().map(|key| IdempotencyRecord {
        tenant,
        key: key.key,
        fingerprint: key.fingerprint,
        status,
        body: body.clone(),
        created_at,
    });
    let stored = fx(&state, move |s| match s.insert_quote(&quote, saved.as_ref()) {
        Ok(()) => Ok(true),
        Err(StoreError::Conflict(_)) => Ok(false),
        Err(e) => Err(e),
    })
    .await?;
    if !stored {
        // Another request with the same key won the race: answer what it was answered.
        return replay_or_refuse(&state, &post).await;
    }
    Ok(super::rendered((status, body)))
}

/// The answer saved for the request's key by a concurrent request: its response if the
/// requests are the same, `idempotency_key_reused` if not.
async fn replay_or_refuse(state: &Arc<AppState>, post: &Post) -> Result<Response, ApiError> {
    let Some(key) = post.key.clone() else { return Err(ApiError::internal("A quote id was taken twice.")) };
    let tenant = post.auth.tenant;
    let name = key.key.clone();
    let saved = read(state, move |r| r.idempotency(tenant, &name)).await?;
    match saved {
        Some(saved) if saved.fingerprint == key.fingerprint => {
            Ok(crate::idempotency::Saved { status: saved.status, body: saved.body }.into_response())
        }
        _ => Err(ApiError::key_reused()),
    }
}

fn no_rate(from: Currency, to: Currency) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        crate::error::ErrorType::InvalidRequestError,
        "no_rate",
        format!("There is no rate from {from} to {to}: set one with POST /v1/fx/rates."),
    )
    .param("to_currency")
}

/// `GET /v1/fx/quotes/{id}`: a quote of the tenant, with the payment that used it.
#[utoipa::path(get, path = "/v1/fx/quotes/{id}", tag = "fx",
    params(("id" = String, Path, description = "`fxq_…`")),
    responses(
        (status = 200, description = "The quote", body = QuoteJson),
        (status = 404, description = "`resource_missing`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn quote(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let quote_id: QuoteId = super::path_id(&id, "FX quote")?;
    let tenant = auth.tenant;
    let found = fx(&state, move |s| s.quote(tenant, quote_id)).await?;
    let quote = found.ok_or_else(|| ApiError::not_found("FX quote", &id))?;
    Ok(super::rendered(render::json(200, &QuoteJson::new(&quote))))
}

/// `POST /v1/fx/settings`: sets the tenant's FX fee (200).
#[utoipa::path(post, path = "/v1/fx/settings", tag = "fx",
    request_body = SetSettings,
    responses(
        (status = 200, description = "The settings", body = SettingsJson),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn set_settings(State(state): State<Arc<AppState>>, post: Post) -> Result<Response, ApiError> {
    let params: SetSettings = json::parse(&post.body)?;
    if params.fee_bps > FEE_BPS_MAX {
        return Err(ApiError::invalid("fee_bps", "`fee_bps` must be from 0 to 10000."));
    }
    let tenant = post.auth.tenant;
    let fee_bps = params.fee_bps;
    fx(&state, move |s| s.set_fee_bps(tenant, fee_bps, now_ns())).await?;
    Ok(super::rendered(render::json(200, &SettingsJson { fee_bps })))
}

/// `GET /v1/fx/settings`: the tenant's FX fee.
#[utoipa::path(get, path = "/v1/fx/settings", tag = "fx",
    responses((status = 200, description = "The settings", body = SettingsJson)),
    security(("bearer" = [])))]
pub async fn settings(State(state): State<Arc<AppState>>, auth: Auth) -> Result<Response, ApiError> {
    let tenant = auth.tenant;
    let fee_bps = fx(&state, move |s| s.fee_bps(tenant)).await?;
    Ok(super::rendered(render::json(200, &SettingsJson { fee_bps })))
}

/// `GET /v1/fx/accounts`: the tenant's FX accounts that exist (opened by the first payment
/// that needed them), for every currency of its rates, with their balances.
#[utoipa::path(get, path = "/v1/fx/accounts", tag = "fx",
    responses((status = 200, description = "`{object: list, data: [{kind, account}], has_more: false}`")),
    security(("bearer" = [])))]
pub async fn accounts(State(state): State<Arc<AppState>>, auth: Auth) -> Result<Response, ApiError> {
    let tenant = auth.tenant;
    let rates = fx(&state, move |s| s.rates(tenant)).await?;
    let mut currencies: Vec<Currency> = rates.iter().flat_map(|r| [r.base, r.quote]).collect();
    currencies.sort_unstable();
    currencies.dedup();
    let found = read(&state, move |r| fx_accounts(r, tenant, &currencies)).await?;
    Ok(super::rendered(render::json(200, &list(&found))))
}

fn fx_accounts(
    reader: &dyn paycore_store::Reader,
    tenant: TenantId,
    currencies: &[Currency],
) -> paycore_store::Result<Vec<FxAccountJson>> {
    let mut found = Vec::new();
    for &currency in currencies {
        for (kind, id) in
            [("liquidity", liquidity_account(tenant, currency)), ("fee_revenue", fee_revenue_account(tenant, currency))]
        {
            if let Some(account) = reader.account(tenant, id)? {
                found.push(FxAccountJson { kind, account: AccountJson::new(&account) });
            }
        }
    }
    Ok(found)
}
