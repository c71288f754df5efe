//! Interest: what-if quotes (`GET /v1/interest/quote`), an account's terms
//! (`PUT|GET|DELETE /v1/accounts/{id}/interest`, or `interest` on `POST /v1/accounts`), and
//! runs (`POST /v1/interest/runs`) that accrue and post it as a batch through the engine.
//!
//! **Rates are decimal strings**, a fraction per year: `"0.035"` is 3.5 %. A JSON number is
//! refused (400 naming the field): it is a float. The arithmetic is `ledger::interest`'s.
//!
//! **Where interest comes from.** Per tenant and currency, two ledger accounts the first run
//! that needs them opens (`Overdraft::Unlimited`, ids derived from tenant, currency and role,
//! listed in the run's answer): `interest_expense` pays credit interest, `interest_income`
//! receives debit interest. Their transfers are left out of the closing balances a run reads
//! (an account's posted interest earns from its period's end, through the accrual itself).
//!
//! **A run** (`through`, no later than today by the service's clock, UTC) accrues every
//! interest-bearing account of the tenant from the day after its `accrued_through`, period by
//! period, and posts every period that ended by `through` (a month still running waits for a
//! later run): one item per account, period and side (credit or debit) with a non-zero amount,
//! all in one batch of format `interest`, which the batch machinery runs and reports like any
//! batch. Each day earns on its closing balance as stored when the run reads it (its balance now
//! minus what moved after that day, read in one snapshot); amounts posted later for a day a run
//! has already accrued are not accrued again. A run for periods that were run creates nothing.

use super::{path_id, read, rendered};
use crate::auth::Auth;
use crate::error::{ApiError, ErrorBody, ErrorType};
use crate::json;
use crate::routes::batches::BatchJson;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use paycore_engine::{Reply, Submission};
use paycore_ledger::interest::{
    self, Accrual, Compounding, Date, DayCount, InterestError, PeriodPosting, Posting, Terms, QUOTE_DAYS_MAX,
};
use paycore_ledger::{
    AccountId, BatchFormat, BatchId, BatchStatus, Command, CommandError, Currency, ItemStatus, NewAccount, Outcome,
    Overdraft, Request, TenantId,
};
use paycore_store::{BatchItemRow, BatchRecord, BatchTotal, InterestAdvance, InterestRecord, InterestRun, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// An account's interest terms, as given.
#[derive(Deserialize, ToSchema, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct InterestTermsBody {
    /// Paid on positive balances: a fraction per year as a decimal string, `"0.035"` for
    /// 3.5 %; 0 to 1, at most 12 decimals. JSON numbers are refused.
    pub annual_rate: String,
    /// `act/365` (default) or `act/360`.
    pub day_count: Option<String>,
    /// `daily` (default), `monthly` or `none`.
    pub compounding: Option<String>,
    /// `monthly` (default) or `daily`.
    pub posting: Option<String>,
    /// Minor units; a day closing below it earns no interest. Default 0.
    pub min_balance: Option<u64>,
    /// Charged on negative balances, as `annual_rate`; only for an account with an overdraft
    /// (a credit line).
    pub debit_rate: Option<String>,
}

/// Reads terms from a body; `prefix` is the body's path to them (`interest.` inside an
/// account, empty on their own), so that every error names the field.
pub fn terms(body: &InterestTermsBody, prefix: &str) -> Result<Terms, ApiError> {
    let rate = |text: &str, field: &str| {
        interest::parse_rate(text).map_err(|error| {
            let param = format!("{prefix}{field}");
            ApiError::invalid(param.clone(), format!("Invalid value for `{param}`: {error}."))
        })
    };
    fn named<T: Copy>(
        value: Option<&str>,
        all: &[T],
        parse: fn(&str) -> Option<T>,
        name: fn(T) -> &'static str,
        default: T,
        param: String,
    ) -> Result<T, ApiError> {
        match value {
            None => Ok(default),
            Some(text) => parse(text).ok_or_else(|| {
                let names: Vec<&str> = all.iter().map(|v| name(*v)).collect();
                ApiError::invalid(param.clone(), format!("`{param}` must be one of: {}.", names.join(", ")))
            }),
        }
    }
    let min_balance = body.min_balance.unwrap_or(0);
    if min_balance > paycore_ledger::AMOUNT_MAX {
        let param = format!("{prefix}min_balance");
        return Err(ApiError::invalid(param.clone(), format!("`{param}` must be at most 9223372036854775807.")));
    }
    Ok(Terms {
        annual_rate: rate(&body.annual_rate, "annual_rate")?,
        day_count: named(
            body.day_count.as_deref(),
            DayCount::ALL,
            DayCount::parse,
            DayCount::as_str,
            DayCount::Act365,
            format!("{prefix}day_count"),
        )?,
        compounding: named(
            body.compounding.as_deref(),
            Compounding::ALL,
            Compounding::parse,
            Compounding::as_str,
            Compounding::Daily,
            format!("{prefix}compounding"),
        )?,
        posting: named(
            body.posting.as_deref(),
            Posting::ALL,
            Posting::parse,
            Posting::as_str,
            Posting::Monthly,
            format!("{prefix}posting"),
        )?,
        min_balance,
        debit_rate: body.debit_rate.as_deref().map(|d| rate(d, "debit_rate")).transpose()?,
    })
}

/// An account's interest terms and where its accrual stands.
#[derive(Serialize, ToSchema)]
pub struct InterestJson {
    /// Always `account_interest`.
    pub object: &'static str,
    /// `acct_…`
    pub account: String,
    pub currency: String,
    pub annual_rate: String,
    pub day_count: &'static str,
    pub compounding: &'static str,
    pub posting: &'static str,
    pub min_balance: u64,
    pub debit_rate: Option<String>,
    /// The first day accrued (`YYYY-MM-DD`, UTC).
    pub since: String,
    /// The last day accrued and posted; the next run starts the day after.
    pub accrued_through: String,
    /// Credit interest posted so far, minor units.
    pub credit_posted: u64,
    /// Credit interest accrued so far, exact, in minor units (decimal text).
    pub credit_accrued_exact: String,
    pub debit_posted: u64,
    pub debit_accrued_exact: String,
    /// The batch that last posted this account's interest (`bat_…`).
    pub last_batch: Option<String>,
}

impl InterestJson {
    pub fn new(r: &InterestRecord) -> InterestJson {
        InterestJson {
            object: "account_interest",
            account: r.account.to_string(),
            currency: r.currency.code().to_owned(),
            annual_rate: r.terms.annual_rate.to_string(),
            day_count: r.terms.day_count.as_str(),
            compounding: r.terms.compounding.as_str(),
            posting: r.terms.posting.as_str(),
            min_balance: r.terms.min_balance,
            debit_rate: r.terms.debit_rate.map(|d| d.to_string()),
            since: r.since.to_string(),
            accrued_through: r.accrued_through.to_string(),
            credit_posted: r.accrual.credit.posted,
            credit_accrued_exact: r.accrual.credit.exact.normalize().to_string(),
            debit_posted: r.accrual.debit.posted,
            debit_accrued_exact: r.accrual.debit.exact.normalize().to_string(),
            last_batch: r.last_batch.map(|b| b.to_string()),
        }
    }
}

async fn blocking<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&dyn paycore_store::InterestStore) -> paycore_store::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.interest.clone();
    Ok(tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|_| ApiError::internal("A store operation failed."))??)
}

/// The day the service's clock is in (UTC).
fn today(state: &AppState) -> Date {
    Date::of_instant(state.clock.now_ns())
}

/// Sets the terms of `account` (of `auth`'s tenant): the one setter `POST /v1/accounts` and
/// `PUT /v1/accounts/{id}/interest` share. New terms start today; on an account that has terms
/// already they apply from the first day not yet accrued.
pub async fn set_terms(
    state: &Arc<AppState>,
    tenant: TenantId,
    account: AccountId,
    terms: Terms,
    param_prefix: &str,
) -> Result<InterestRecord, ApiError> {
    let found = read(state, move |r| r.account(tenant, account)).await?;
    let Some(found) = found else { return Err(ApiError::not_found("account", &account.to_string())) };
    if terms.debit_rate.is_some() && found.overdraft == Overdraft::Limit(0) {
        let param = format!("{param_prefix}debit_rate");
        return Err(ApiError::invalid(
            param.clone(),
            format!(
                "`{param}` is charged on negative balances: the account needs an `overdraft_limit` (a credit line)."
            ),
        ));
    }
    let since = today(state);
    let record = InterestRecord {
        account,
        tenant,
        currency: found.currency,
        terms,
        since,
        accrued_through: since.previous(),
        accrual: Accrual::default(),
        last_batch: None,
        updated_at: state.clock.now_ns(),
    };
    blocking(state, move |s| s.set_interest(&record)).await
}

/// `PUT /v1/accounts/{id}/interest`
#[utoipa::path(put, path = "/v1/accounts/{id}/interest", tag = "interest",
    params(("id" = String, Path, description = "`acct_…`")),
    request_body = InterestTermsBody,
    responses(
        (status = 200, description = "The terms as stored", body = InterestJson),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 404, description = "`resource_missing`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn put(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let account: AccountId = path_id(&id, "account")?;
    let params: InterestTermsBody = json::parse(&body)?;
    let terms = terms(&params, "")?;
    let record = set_terms(&state, auth.tenant, account, terms, "").await?;
    Ok(rendered(crate::render::json(200, &InterestJson::new(&record))))
}

/// `GET /v1/accounts/{id}/interest`
#[utoipa::path(get, path = "/v1/accounts/{id}/interest", tag = "interest",
    params(("id" = String, Path, description = "`acct_…`")),
    responses(
        (status = 200, description = "The account's terms and accrual", body = InterestJson),
        (status = 404, description = "`resource_missing`: no such account, or it bears no interest", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn get(State(state): State<Arc<AppState>>, auth: Auth, Path(id): Path<String>) -> Result<Response, ApiError> {
    let account: AccountId = path_id(&id, "account")?;
    let tenant = auth.tenant;
    let record = blocking(&state, move |s| s.interest(tenant, account))
        .await?
        .ok_or_else(|| ApiError::not_found("interest-bearing account", &id))?;
    Ok(rendered(crate::render::json(200, &InterestJson::new(&record))))
}

/// What `DELETE /v1/accounts/{id}/interest` answers.
#[derive(Serialize, ToSchema)]
pub struct InterestDeleted {
    /// Always `account_interest`.
    pub object: &'static str,
    pub account: String,
    pub deleted: bool,
}

/// `DELETE /v1/accounts/{id}/interest`: the account accrues no more. Interest accrued on days
/// after the last run is not posted.
#[utoipa::path(delete, path = "/v1/accounts/{id}/interest", tag = "interest",
    params(("id" = String, Path, description = "`acct_…`")),
    responses(
        (status = 200, description = "The terms are removed", body = InterestDeleted),
        (status = 404, description = "`resource_missing`: no such account, or it bears no interest", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let account: AccountId = path_id(&id, "account")?;
    let tenant = auth.tenant;
    if !blocking(&state, move |s| s.remove_interest(tenant, account)).await? {
        return Err(ApiError::not_found("interest-bearing account", &id));
    }
    let answer = InterestDeleted { object: "account_interest", account: id, deleted: true };
    Ok(rendered(crate::render::json(200, &answer)))
}

/// The parameters of `GET /v1/interest/quote`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct QuoteQuery {
    /// Minor units (an integer, 0 to 9223372036854775807).
    principal: u64,
    /// A fraction per year as a decimal string, `0.035` for 3.5 %.
    annual_rate: String,
    /// 0 to 3660.
    days: u32,
    /// `act/365` (default) or `act/360`.
    day_count: Option<String>,
    /// `daily` (default), `monthly` (every 30 days in a quote) or `none` (simple interest).
    compounding: Option<String>,
    /// ISO 4217 code (default `USD`): the minor unit of `principal` and of the answer.
    currency: Option<String>,
}

/// A what-if: the principal left for the days, nothing posted meanwhile.
#[derive(Serialize, ToSchema)]
pub struct QuoteJson {
    /// Always `interest_quote`.
    pub object: &'static str,
    pub principal: u64,
    pub currency: String,
    pub annual_rate: String,
    pub days: u32,
    pub day_count: &'static str,
    pub compounding: &'static str,
    /// The interest, minor units, rounded half-even from the exact amount.
    pub interest: u64,
    /// P(t) = principal + interest, minor units.
    pub amount: u64,
    /// The interest, exact, in major units (decimal text).
    pub exact_interest: String,
    /// P(t), exact, in major units (decimal text).
    pub exact_amount: String,
}

/// `GET /v1/interest/quote`
#[utoipa::path(get, path = "/v1/interest/quote", tag = "interest",
    params(QuoteQuery),
    responses(
        (status = 200, description = "P(t) and the interest", body = QuoteJson),
        (status = 400, description = "Invalid parameter, named in `param`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn quote(_auth: Auth, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let mut given: BTreeMap<String, String> = BTreeMap::new();
    for pair in query.as_deref().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value).ok_or_else(|| {
            ApiError::invalid(name.to_owned(), format!("`{name}` is not valid percent-encoded UTF-8."))
        })?;
        if !["principal", "annual_rate", "days", "day_count", "compounding", "currency"].contains(&name) {
            return Err(ApiError::bad_request(
                "unknown_parameter",
                format!("Received unknown query parameter `{name}`."),
            )
            .param(name.to_owned()));
        }
        if given.insert(name.to_owned(), value).is_some() {
            return Err(ApiError::invalid(name.to_owned(), format!("`{name}` appears more than once.")));
        }
    }
    let required = |name: &str| given.get(name).cloned().ok_or_else(|| ApiError::missing(name));
    let principal: u64 =
        required("principal")?.parse().ok().filter(|p| *p <= paycore_ledger::AMOUNT_MAX).ok_or_else(|| {
            ApiError::invalid(
                "principal",
                "`principal` must be an integer of minor units from 0 to 9223372036854775807.",
            )
        })?;
    let annual_rate = interest::parse_rate(&required("annual_rate")?)
        .map_err(|e| ApiError::invalid("annual_rate", format!("Invalid value for `annual_rate`: {e}.")))?;
    let days: u32 = required("days")?
        .parse()
        .ok()
        .filter(|d| *d <= QUOTE_DAYS_MAX)
        .ok_or_else(|| ApiError::invalid("days", "`days` must be an integer from 0 to 3660."))?;
    let body = InterestTermsBody {
        annual_rate: String::from("0"),
        day_count: given.get("day_count").cloned(),
        compounding: given.get("compounding").cloned(),
        posting: None,
        min_balance: None,
        debit_rate: None,
    };
    let named = terms(&body, "")?;
    let currency = match given.get("currency") {
        Some(code) => json::currency(code, "currency")?,
        None => Currency::from_code("USD").ok_or_else(|| ApiError::internal("USD is unknown"))?,
    };
    let result =
        interest::quote(principal, annual_rate, days, named.day_count, named.compounding).map_err(|e| match e {
            InterestError::Overflow => {
                ApiError::invalid("principal", "The interest on this `principal` is too large to compute.")
            }
            other => ApiError::invalid("annual_rate", other.to_string()),
        })?;
    let amount = principal
        .checked_add(result.interest)
        .filter(|a| *a <= paycore_ledger::AMOUNT_MAX)
        .ok_or_else(|| ApiError::invalid("principal", "The interest on this `principal` is too large to compute."))?;
    let answer = QuoteJson {
        object: "interest_quote",
        principal,
        currency: currency.code().to_owned(),
        annual_rate: annual_rate.to_string(),
        days,
        day_count: named.day_count.as_str(),
        compounding: named.compounding.as_str(),
        interest: result.interest,
        amount,
        exact_interest: result.exact_interest_text(currency),
        exact_amount: result.exact_amount_text(principal, currency),
    };
    Ok(rendered(crate::render::json(200, &answer)))
}

/// `%XX` escapes and `+` for a space, as browsers encode a query.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `POST /v1/interest/runs`
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    /// The last day to accrue, `YYYY-MM-DD` (UTC), no later than today.
    pub through: String,
}

/// One account's posting for one period.
#[derive(Serialize, ToSchema)]
pub struct RunPostingJson {
    pub account: String,
    /// `YYYY-MM` or `YYYY-MM-DD`.
    pub period: String,
    pub first_day: String,
    pub last_day: String,
    /// Credit interest paid into the account, minor units.
    pub credit: u64,
    /// Debit interest charged to the account, minor units.
    pub debit: u64,
}

/// The accounts interest is paid from and charged to, in one currency.
#[derive(Serialize, ToSchema)]
pub struct InterestAccountsJson {
    pub currency: String,
    /// `interest_expense`: pays credit interest.
    pub expense: String,
    /// `interest_income`: receives debit interest.
    pub income: String,
}

/// What a run did.
#[derive(Serialize, ToSchema)]
pub struct RunJson {
    /// Always `interest_run`.
    pub object: &'static str,
    pub through: String,
    /// The batch that posts the interest (run like any batch: follow it at
    /// `/v1/batches/{id}`); `null` when nothing was due or every amount was zero.
    pub batch: Option<BatchJson>,
    /// Accounts whose accrual advanced.
    pub accounts_accrued: usize,
    pub postings: Vec<RunPostingJson>,
    pub interest_accounts: Vec<InterestAccountsJson>,
}

/// The ledger account that pays (`expense`) or receives (`income`) a tenant's interest in a
/// currency: its id is derived from the three, so every run (and every node) finds the same.
pub fn interest_account(tenant: TenantId, currency: Currency, role: &str) -> AccountId {
    let mut hash = Sha256::new();
    hash.update(b"paycore interest account\0");
    hash.update(tenant.0.to_be_bytes());
    hash.update(currency.code().as_bytes());
    hash.update([0]);
    hash.update(role.as_bytes());
    let digest = hash.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    AccountId(u128::from_be_bytes(id))
}

const EXPENSE: &str = "interest_expense";
const INCOME: &str = "interest_income";

fn conflict(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, ErrorType::InvalidRequestError, code, message)
}

/// Opens the interest account if it is not there yet (through the engine, like any account).
async fn ensure_account(state: &AppState, tenant: TenantId, currency: Currency, role: &str) -> Result<(), ApiError> {
    let id = interest_account(tenant, currency, role);
    let metadata = serde_json::json!({ "paycore": role }).to_string();
    let command = Command::CreateAccount(NewAccount {
        id,
        currency,
        overdraft: Overdraft::Unlimited,
        reference: None,
        metadata: Some(metadata),
    });
    let submission = Submission { request: Request { tenant, command }, idempotency: None };
    match state.engine.submit(submission).await {
        Ok(Reply::Done(Outcome::Account(Ok(_) | Err(CommandError::AlreadyExists)))) => Ok(()),
        Ok(Reply::Done(Outcome::Account(Err(error)))) => Err(ApiError::from_command(&error)),
        Ok(_) => Err(ApiError::internal("The ledger gave an unexpected answer.")),
        Err(error) => Err(ApiError::from_engine(&error)),
    }
}

/// `POST /v1/interest/runs`
#[utoipa::path(post, path = "/v1/interest/runs", tag = "interest",
    request_body = CreateRun,
    responses(
        (status = 201, description = "The run's batch was created and is being paid", body = RunJson),
        (status = 200, description = "Nothing was due: no batch", body = RunJson),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 409, description = "`interest_run_in_progress` (the last run's batch has not ended) or `interest_run_conflict` (another run accrued meanwhile)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn run(State(state): State<Arc<AppState>>, auth: Auth, body: Bytes) -> Result<Response, ApiError> {
    let params: CreateRun = json::parse(&body)?;
    let through = Date::parse(&params.through)
        .ok_or_else(|| ApiError::invalid("through", "`through` must be a date, `YYYY-MM-DD`."))?;
    let today = today(&state);
    if through > today {
        return Err(ApiError::invalid("through", format!("`through` must be no later than today, {today} (UTC).")));
    }
    let tenant = auth.tenant;
    let accounts = blocking(&state, move |s| s.interest_accounts(tenant)).await?;
    // The last run's money must have moved before its amounts count in the balances.
    let last_batches: HashSet<BatchId> = accounts.iter().filter_map(|a| a.last_batch).collect();
    for batch in last_batches {
        let store = state.batches.clone();
        let found = tokio::task::spawn_blocking(move || store.batch(tenant, batch))
            .await
            .map_err(|_| ApiError::internal("A store operation failed."))??;
        if found.is_some_and(|b| !b.status.is_final()) {
            return Err(conflict(
                "interest_run_in_progress",
                format!("The batch of the last interest run, {batch}, has not ended yet; run again once it has."),
            ));
        }
    }
    let due: Vec<InterestRecord> = accounts.into_iter().filter(|a| a.accrued_through < through).collect();
    let currencies: Vec<Currency> = {
        let mut seen: Vec<Currency> = due.iter().map(|a| a.currency).collect();
        seen.sort_by_key(|c| c.code());
        seen.dedup();
        seen
    };
    let exclude: Vec<AccountId> = currencies
        .iter()
        .flat_map(|c| [interest_account(tenant, *c, EXPENSE), interest_account(tenant, *c, INCOME)])
        .collect();
    let ids: Vec<AccountId> = due.iter().map(|a| a.account).collect();
    let after = due.iter().map(|a| a.accrued_through).min().unwrap_or(through);
    let history = if due.is_empty() {
        paycore_store::BalanceHistory::default()
    } else {
        let exclude = exclude.clone();
        blocking(&state, move |s| s.balance_history(tenant, &ids, &exclude, after)).await?
    };

    let batch_id = BatchId(crate::ids::new_id());
    let mut items = Vec::new();
    let mut advances = Vec::new();
    let mut postings_json = Vec::new();
    for account in &due {
        let mut accrual = account.accrual;
        let (postings, last) =
            interest::accrue_periods(&account.terms, &mut accrual, account.accrued_through, through, |day| {
                history.closing(account.account, day)
            })
            .map_err(|_| ApiError::internal("The interest of an account is too large to compute."))?;
        if last == account.accrued_through {
            continue;
        }
        advances.push(InterestAdvance {
            account: account.account,
            from: account.accrued_through,
            accrued_through: last,
            accrual,
        });
        for posting in postings {
            add_items(&mut items, tenant, account, &posting);
            postings_json.push(RunPostingJson {
                account: account.account.to_string(),
                period: posting.last.period_name(account.terms.posting),
                first_day: posting.first.to_string(),
                last_day: posting.last.to_string(),
                credit: posting.credit,
                debit: posting.debit,
            });
        }
    }
    // The accounts the items name must exist before the batch can pay them.
    let mut needed: Vec<(Currency, &str)> = Vec::new();
    for item in &items {
        let Some(currency) = item.currency else { continue };
        for role in [EXPENSE, INCOME] {
            let id = interest_account(tenant, currency, role);
            if (item.payer == Some(id) || item.payee == Some(id)) && !needed.contains(&(currency, role)) {
                needed.push((currency, role));
            }
        }
    }
    for (currency, role) in needed {
        ensure_account(&state, tenant, currency, role).await?;
    }

    let now = crate::ids::now_ns();
    let mut batch = BatchRecord::new(batch_id, tenant, BatchFormat::Interest, now);
    batch.status = BatchStatus::Processing;
    batch.total = u64::try_from(items.len()).unwrap_or(u64::MAX);
    batch.validated_at = Some(now);
    let mut totals: BTreeMap<&'static str, BatchTotal> = BTreeMap::new();
    for item in &items {
        if let (Some(currency), Some(amount)) = (item.currency, item.amount) {
            let total = totals.entry(currency.code()).or_insert(BatchTotal { currency, count: 0, sum: 0 });
            total.count += 1;
            total.sum += u128::from(amount);
        }
    }
    if totals.len() == 1 {
        batch.currency = totals.keys().next().map(|c| (*c).to_owned());
    }
    let totals: Vec<BatchTotal> = totals.into_values().collect();
    let accounts_accrued = advances.len();
    if !advances.is_empty() {
        let (batch, items, totals, advances) = (batch.clone(), std::mem::take(&mut items), totals.clone(), advances);
        let store = state.interest.clone();
        let created = tokio::task::spawn_blocking(move || {
            store.create_interest_run(&InterestRun {
                batch: &batch,
                items: &items,
                totals: &totals,
                advances: &advances,
            })
        })
        .await
        .map_err(|_| ApiError::internal("A store operation failed."))?;
        match created {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(conflict(
                    "interest_run_conflict",
                    "Another interest run accrued these accounts meanwhile; nothing was changed. Run again.",
                ))
            }
            Err(error) => return Err(error.into()),
        }
    }
    let has_batch = batch.total > 0;
    if has_batch {
        crate::jobs::spawn(state.clone(), batch.clone(), None);
    }
    let answer = RunJson {
        object: "interest_run",
        through: through.to_string(),
        batch: has_batch.then(|| BatchJson::new(&batch, &totals)),
        accounts_accrued,
        postings: postings_json,
        interest_accounts: currencies
            .iter()
            .map(|c| InterestAccountsJson {
                currency: c.code().to_owned(),
                expense: interest_account(tenant, *c, EXPENSE).to_string(),
                income: interest_account(tenant, *c, INCOME).to_string(),
            })
            .collect(),
    };
    Ok(rendered(crate::render::json(if has_batch { 201 } else { 200 }, &answer)))
}

/// The items of one account's posting: the credit interest paid from the expense account, the
/// debit interest charged to the income account; none for a zero amount.
fn add_items(items: &mut Vec<BatchItemRow>, tenant: TenantId, account: &InterestRecord, posting: &PeriodPosting) {
    let period = posting.last.period_name(account.terms.posting);
    let sides = [
        (posting.credit, interest_account(tenant, account.currency, EXPENSE), account.account, "credit"),
        (posting.debit, account.account, interest_account(tenant, account.currency, INCOME), "debit"),
    ];
    for (amount, payer, payee, side) in sides {
        if amount == 0 {
            continue;
        }
        let index = u64::try_from(items.len()).unwrap_or(u64::MAX);
        items.push(BatchItemRow {
            index,
            line: index + 1,
            location: format!("{} {period}", account.account),
            reference: Some(format!("interest {period} {side}")),
            instruction_id: None,
            payment_information_id: None,
            payer_text: Some(payer.to_string()),
            payee_text: Some(payee.to_string()),
            payer: Some(payer),
            payee: Some(payee),
            amount: Some(amount),
            currency: Some(account.currency),
            status: ItemStatus::Pending,
            failure_code: None,
            message: None,
            // What a statement (camt.053 `RmtInf`) shows for the posting.
            remittance: Some(format!("{side} interest {period}")),
        });
    }
}
