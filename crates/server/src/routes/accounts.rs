//! `/v1/accounts`: open an account, read it, change its status and limits, list its transfers
//! and the audit of its changes.

use super::{execute, path_id, read, Answer};
use crate::auth::{Actor, Auth};
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::Post;
use crate::ids::new_id;
use crate::json::{self, OverdraftLimit};
use crate::render::{self, AccountJson, AuditEntryJson, ListJson, OverdraftJson, TransferJson, VelocityJson};
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use paycore_ledger::{
    AccountId, AccountStatus, AccountUpdate, Change, Command, NewAccount, Outcome, Overdraft, TransferId, Velocity,
    AMOUNT_MAX, VELOCITY_COUNT_MAX, VELOCITY_WINDOW_SECONDS_MAX,
};
use paycore_store::Page;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa::ToSchema;

/// The longest `reference`, in characters.
pub const REFERENCE_LENGTH_MAX: usize = 128;
/// The most `metadata` keys.
pub const METADATA_KEYS_MAX: usize = 50;
/// The longest metadata key and value, in characters.
pub const METADATA_KEY_LENGTH_MAX: usize = 40;
pub const METADATA_VALUE_LENGTH_MAX: usize = 500;
/// The default and largest page of a list.
pub const LIST_LIMIT_DEFAULT: usize = 20;
pub const LIST_LIMIT_MAX: usize = 100;

/// Opens an account.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// ISO 4217 code, upper case (`EUR`).
    pub currency: String,
    /// How far below zero the account may go: minor units (default 0), or `"unlimited"` for
    /// funding and external accounts.
    #[schema(value_type = Option<OverdraftJson>)]
    pub overdraft_limit: Option<OverdraftLimit>,
    /// An external identifier (an IBAN, an account number), unique per tenant; 1 to 128
    /// characters.
    pub reference: Option<String>,
    /// Up to 50 string keys (≤ 40 characters) with string values (≤ 500 characters).
    #[serde(default, deserialize_with = "json::unique_map")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Makes the account interest-bearing from today (see `PUT /v1/accounts/{id}/interest`,
    /// which changes the terms, and `GET` there, which shows them and the accrual).
    pub interest: Option<super::interest::InterestTermsBody>,
}

/// `POST /v1/accounts`
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts",
    request_body = CreateAccount,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: 1 to 255 printable ASCII characters")),
    responses(
        (status = 201, description = "The account", body = AccountJson),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 409, description = "`reference_already_exists`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create(State(state): State<Arc<AppState>>, post: Post) -> Result<Response, ApiError> {
    if let Some(saved) = post.saved {
        return Ok(saved.into_response());
    }
    let params: CreateAccount = json::parse(&post.body)?;
    let currency = json::currency(&params.currency, "currency")?;
    if let Some(reference) = &params.reference {
        let length = reference.chars().count();
        if length == 0 || length > REFERENCE_LENGTH_MAX {
            return Err(ApiError::invalid("reference", "`reference` must be 1 to 128 characters."));
        }
    }
    if let Some(metadata) = &params.metadata {
        check_metadata(metadata)?;
    }
    let overdraft = params.overdraft_limit.map_or(Overdraft::Limit(0), |o| o.0);
    let terms = match &params.interest {
        None => None,
        Some(body) => {
            let terms = super::interest::terms(body, "interest.")?;
            if terms.debit_rate.is_some() && overdraft == Overdraft::Limit(0) {
                return Err(ApiError::invalid(
                    "interest.debit_rate",
                    "`interest.debit_rate` is charged on negative balances: the account needs an `overdraft_limit` (a credit line).",
                ));
            }
            Some(terms)
        }
    };
    let id = AccountId(new_id());
    let metadata = params.metadata.map(|m| serde_json::to_string(&m).unwrap_or_default());
    let command = Command::CreateAccount(NewAccount { id, currency, overdraft, reference: params.reference, metadata });
    let Some(terms) = terms else { return execute(&state, &post, command).await };
    // The account first (through the engine), then its terms (a store write): a retry with
    // the same `Idempotency-Key` replays the account and sets the same terms again.
    let answer = super::submit(&state, &post, command).await?;
    let created = match &answer {
        Answer::Done(Outcome::Account(Ok(account))) => Some(account.id),
        Answer::Done(_) => None,
        Answer::Saved(saved) if saved.status == 201 => serde_json::from_slice::<serde_json::Value>(&saved.body)
            .ok()
            .and_then(|body| body["id"].as_str().and_then(|id| id.parse().ok())),
        Answer::Saved(_) => None,
    };
    if let Some(account) = created {
        super::interest::set_terms(&state, post.auth.tenant, account, terms, "interest.").await?;
    }
    Ok(match answer {
        Answer::Done(outcome) => match (&post.key, crate::render::outcome_error(&outcome)) {
            (None, Some(error)) => error.into_response(),
            _ => super::rendered(state.renderer.render(&outcome)),
        },
        Answer::Saved(saved) => saved.into_response(),
    })
}

fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if metadata.len() > METADATA_KEYS_MAX {
        return Err(ApiError::invalid("metadata", "`metadata` may have at most 50 keys."));
    }
    for (key, value) in metadata {
        let key_length = key.chars().count();
        if key_length == 0 || key_length > METADATA_KEY_LENGTH_MAX {
            return Err(ApiError::invalid("metadata", "Metadata keys must be 1 to 40 characters."));
        }
        if value.chars().count() > METADATA_VALUE_LENGTH_MAX {
            return Err(ApiError::invalid(
                format!("metadata.{key}"),
                "Metadata values must be at most 500 characters.",
            ));
        }
    }
    Ok(())
}

/// `GET /v1/accounts/{id}`
#[utoipa::path(get, path = "/v1/accounts/{id}", tag = "accounts",
    params(("id" = String, Path, description = "`acct_…`")),
    responses(
        (status = 200, description = "The account with its balances", body = AccountJson),
        (status = 404, description = "`resource_missing`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn retrieve(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let account_id: AccountId = path_id(&id, "account")?;
    let row = read(&state, move |r| r.account(auth.tenant, account_id))
        .await?
        .ok_or_else(|| ApiError::not_found("account", &id))?;
    Ok(super::rendered(render::json(200, &AccountJson::new(&row))))
}

/// `GET /v1/accounts/{id}/transfers`
#[utoipa::path(get, path = "/v1/accounts/{id}/transfers", tag = "accounts",
    params(
        ("id" = String, Path, description = "`acct_…`"),
        ("limit" = Option<u32>, Query, description = "1 to 100, default 20"),
        ("starting_after" = Option<String>, Query, description = "A transfer id: the `next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "The account's transfers, newest first", body = ListJson<TransferJson>),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 404, description = "`resource_missing`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn transfers(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let account_id: AccountId = path_id(&id, "account")?;
    let page = list_page::<TransferId>(query.as_deref(), "a transfer id (`tr_…`)")?;
    let tenant = auth.tenant;
    let fetch = Page { after: page.after, limit: page.limit + 1 };
    let (account, transfers) = read(&state, move |r| {
        let Some(account) = r.account(tenant, account_id)? else { return Ok((None, Vec::new())) };
        Ok((Some(account), r.account_transfers(tenant, account_id, fetch)?))
    })
    .await?;
    if account.is_none() {
        return Err(ApiError::not_found("account", &id));
    }
    let list = ListJson::page(transfers, page.limit, |t| t.id.to_string(), |t| TransferJson::new(t, None));
    Ok(super::rendered(render::json(200, &list)))
}

/// Parses `limit` and `starting_after` from a query string; `cursor` says what a
/// `starting_after` must be (`a transfer id (\`tr_…\`)`).
pub(crate) fn list_page<C: std::str::FromStr>(query: Option<&str>, cursor: &str) -> Result<Page<C>, ApiError> {
    let mut page = Page { after: None, limit: LIST_LIMIT_DEFAULT };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "limit" => {
                page.limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=LIST_LIMIT_MAX).contains(l))
                    .ok_or_else(|| ApiError::invalid("limit", "`limit` must be an integer from 1 to 100."))?;
            }
            "starting_after" => {
                page.after =
                    Some(value.parse().map_err(|_| {
                        ApiError::invalid("starting_after", format!("`starting_after` must be {cursor}."))
                    })?);
            }
            other => {
                return Err(ApiError::bad_request(
                    "unknown_parameter",
                    format!("Received unknown query parameter `{other}`."),
                )
                .param(other.to_owned()))
            }
        }
    }
    Ok(page)
}

/// Changes an account's status or limits. Every field is optional: an absent field is kept,
/// `null` removes a limit (`"limits": null` removes them all). Fields may be added later with
/// the same rule.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccount {
    /// `active`, `frozen` (credits only) or `closed` (nothing, for good; only with a zero
    /// balance and no pending transfers).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub status: Option<Option<String>>,
    /// The limits to change; absent keeps them all, null removes them all.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<UpdateLimits>)]
    pub limits: Option<Option<UpdateLimits>>,
}

/// The limits to change: absent keeps one, null removes it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateLimits {
    /// The largest single debit, in minor units (0 to 9223372036854775807).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    pub max_payment: Option<Option<u64>>,
    /// The most debited per UTC day of the ledger's clock, in minor units.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    pub daily_outflow: Option<Option<u64>>,
    /// At most `count` debits in any `window_seconds` (rolling).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<VelocityJson>)]
    pub velocity: Option<Option<VelocityJson>>,
}

/// A field that is present: `Some(None)` for `null`, `Some(Some(v))` for a value (absent is
/// `None`, from `#[serde(default)]`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A field's change: absent keeps it, null removes it.
fn change<T>(field: Option<Option<T>>) -> Change<T> {
    match field {
        None => Change::Keep,
        Some(None) => Change::Remove,
        Some(Some(value)) => Change::Set(value),
    }
}

/// Checks the body and makes the ledger's update of it, naming the field at fault.
fn account_update(params: UpdateAccount) -> Result<AccountUpdate, ApiError> {
    let status = params
        .status
        .map(|s| {
            s.as_deref()
                .and_then(AccountStatus::parse)
                .ok_or_else(|| ApiError::invalid("status", "`status` must be `active`, `frozen` or `closed`."))
        })
        .transpose()?;
    let limits = match params.limits {
        None => UpdateLimits { max_payment: None, daily_outflow: None, velocity: None },
        Some(None) => UpdateLimits { max_payment: Some(None), daily_outflow: Some(None), velocity: Some(None) },
        Some(Some(limits)) => limits,
    };
    for (param, value) in [("limits.max_payment", limits.max_payment), ("limits.daily_outflow", limits.daily_outflow)] {
        if value.flatten().is_some_and(|v| v > AMOUNT_MAX) {
            return Err(ApiError::invalid(param, format!("`{param}` must be at most 9223372036854775807.")));
        }
    }
    let velocity = match limits.velocity {
        Some(Some(v)) => {
            let count =
                u32::try_from(v.count).ok().filter(|c| (1..=VELOCITY_COUNT_MAX).contains(c)).ok_or_else(|| {
                    ApiError::invalid("limits.velocity.count", "`limits.velocity.count` must be 1 to 10000.")
                })?;
            if !(1..=VELOCITY_WINDOW_SECONDS_MAX).contains(&v.window_seconds) {
                return Err(ApiError::invalid(
                    "limits.velocity.window_seconds",
                    "`limits.velocity.window_seconds` must be 1 to 86400 (a day).",
                ));
            }
            Some(Some(Velocity { count, window_seconds: v.window_seconds }))
        }
        Some(None) => Some(None),
        None => None,
    };
    Ok(AccountUpdate {
        status,
        max_payment: change(limits.max_payment),
        daily_outflow: change(limits.daily_outflow),
        velocity: change(velocity),
    })
}

/// `PATCH /v1/accounts/{id}`
#[utoipa::path(patch, path = "/v1/accounts/{id}", tag = "accounts",
    request_body = UpdateAccount,
    params(
        ("id" = String, Path, description = "`acct_…`"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: 1 to 255 printable ASCII characters"),
    ),
    responses(
        (status = 200, description = "The account as changed; the change is in its audit", body = AccountJson),
        (status = 400, description = "Invalid parameter (`param` names it: `status`, `limits.velocity.count`, …)", body = ErrorBody),
        (status = 404, description = "`resource_missing`", body = ErrorBody),
        (status = 409, description = "`account_not_empty`: only an account with a zero balance and no pending transfers can be closed", body = ErrorBody),
        (status = 422, description = "`account_closed`: a closed account cannot change", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Actor(actor): Actor,
    post: Post,
) -> Result<Response, ApiError> {
    let account: AccountId = path_id(&id, "account")?;
    if let Some(saved) = post.saved {
        return Ok(saved.into_response());
    }
    let update = account_update(json::parse(&post.body)?)?;
    execute(&state, &post, Command::UpdateAccount { account, update, actor }).await
}

/// `GET /v1/accounts/{id}/audit`
#[utoipa::path(get, path = "/v1/accounts/{id}/audit", tag = "accounts",
    params(
        ("id" = String, Path, description = "`acct_…`"),
        ("limit" = Option<u32>, Query, description = "1 to 100, default 20"),
        ("starting_after" = Option<String>, Query, description = "The `next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "The changes of the account's status and limits, newest first: who, when, the changed fields before and after", body = ListJson<AuditEntryJson>),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 404, description = "`resource_missing`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn audit(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let account_id: AccountId = path_id(&id, "account")?;
    let page = list_page::<u64>(query.as_deref(), "the `next_cursor` of a page")?;
    let tenant = auth.tenant;
    let fetch = Page { after: page.after, limit: page.limit + 1 };
    let (account, rows) = read(&state, move |r| {
        let Some(account) = r.account(tenant, account_id)? else { return Ok((None, Vec::new())) };
        Ok((Some(account), r.account_audit(tenant, account_id, fetch)?))
    })
    .await?;
    if account.is_none() {
        return Err(ApiError::not_found("account", &id));
    }
    let list = ListJson::page(rows, page.limit, |r| r.at.to_string(), AuditEntryJson::new);
    Ok(super::rendered(render::json(200, &list)))
}
