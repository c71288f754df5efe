//! `/v1/accounts`: open an account, read it, list its transfers.

use super::{execute, path_id, read, Answer};
use crate::auth::Auth;
use crate::error::{ApiError, ErrorBody};
use crate::idempotency::Post;
use crate::ids::new_id;
use crate::json::{self, OverdraftLimit};
use crate::render::{self, AccountJson, ListJson, OverdraftJson, TransferJson};
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use paycore_ledger::{AccountId, Command, NewAccount, Outcome, Overdraft, TransferId};
use paycore_store::Page;
use serde::Deserialize;
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
    let page = list_page(query.as_deref())?;
    let tenant = auth.tenant;
    let fetch = Page { after: page.after, limit: page.limit + 1 };
    let (account, mut transfers) = read(&state, move |r| {
        let Some(account) = r.account(tenant, account_id)? else { return Ok((None, Vec::new())) };
        Ok((Some(account), r.account_transfers(tenant, account_id, fetch)?))
    })
    .await?;
    if account.is_none() {
        return Err(ApiError::not_found("account", &id));
    }
    let has_more = transfers.len() > page.limit;
    transfers.truncate(page.limit);
    let list = ListJson {
        object: render::ObjectKind::List,
        next_cursor: if has_more { transfers.last().map(|t| t.id.to_string()) } else { None },
        data: transfers.iter().map(|t| TransferJson::new(t, None)).collect::<Vec<_>>(),
        has_more,
    };
    Ok(super::rendered(render::json(200, &list)))
}

/// Parses `limit` and `starting_after` from a query string.
fn list_page(query: Option<&str>) -> Result<Page<TransferId>, ApiError> {
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
                page.after = Some(value.parse().map_err(|_| {
                    ApiError::invalid("starting_after", "`starting_after` must be a transfer id (`tr_…`).")
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
