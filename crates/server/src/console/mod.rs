//! The operator console at `/console`: server-rendered HTML (maud) with a little vendored
//! JavaScript and CSS, embedded in the binary. No second query path: every page renders the
//! JSON the `/v1` handler of the same object answers (the console calls those handlers in
//! process, as the signed-in key's tenant), and every action is the `/v1` handler of that
//! action, with an `Idempotency-Key` made when its confirmation page was shown.
//!
//! Sessions and CSRF: `session`. Scopes: a key without `write` sees no button that writes,
//! and its POSTs are 403. Another tenant's ids are 404, as in the API.

mod money;
mod session;
mod views;

pub use session::Sessions;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::idempotency::{fingerprint, Post};
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::Markup;
use paycore_engine::IdempotencyKey;
use paycore_ledger::{parse_amount, Currency};
use serde::Deserialize;
use serde_json::{json, Value};
use session::{Session, SignedOut, CSRF_HEADER, SIGN_IN_COOKIE};
use std::sync::Arc;

/// The console's routes, nested at `/console`.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(home))
        .route("/sign-in", get(sign_in_page).post(sign_in))
        .route("/sign-out", post(sign_out))
        .route("/accounts", get(accounts))
        .route("/accounts/{id}", get(account))
        .route("/payments", get(payments))
        .route("/payments/{id}", get(payment))
        .route("/payments/{id}/{action}", get(confirm_action).post(act))
        .route("/batches", get(batches).post(upload))
        .route("/batches/{id}", get(batch))
        .route("/batches/{id}/status", get(batch_status))
        .route("/batches/{id}/report", get(batch_report))
        .route("/health", get(health))
        .route("/health/figures", get(health_figures))
        .route("/assets/console.js", get(script))
        .route("/assets/console.css", get(style))
        .fallback(not_found)
}

/// A console page as a response: HTML that may not be framed, cached or run scripts from
/// anywhere but the console itself.
fn html(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    response
}

fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

impl IntoResponse for SignedOut {
    fn into_response(self) -> Response {
        see_other("/console/sign-in")
    }
}

/// A refusal shown as a page: the API's status, code and message.
pub struct Problem {
    status: StatusCode,
    code: String,
    message: String,
}

impl Problem {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Problem {
        Problem { status, code: code.to_owned(), message: message.into() }
    }

    fn csrf() -> Problem {
        Problem::new(
            StatusCode::FORBIDDEN,
            "csrf_token_invalid",
            "This form's CSRF token is missing or not this session's: nothing was done. Reload the page and try again.",
        )
    }

    fn read_only() -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "insufficient_scope", "This API key lacks the `write` scope.")
    }

    fn page(&self, session: Option<&Session>) -> Response {
        html(self.status, views::problem(session, self.status, &self.code, &self.message))
    }
}

impl From<ApiError> for Problem {
    fn from(error: ApiError) -> Problem {
        Problem { status: error.status, code: error.code, message: error.message }
    }
}

/// The JSON an API handler answered, or its error as a [`Problem`].
async fn api_json(answer: Result<Response, ApiError>) -> Result<Value, Problem> {
    let response = answer?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.map_err(|_| {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "The answer could not be read.")
    })?;
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(value);
    }
    let error = &value["error"];
    Err(Problem::new(
        status,
        error["code"].as_str().unwrap_or("error"),
        error["message"].as_str().unwrap_or("The request failed."),
    ))
}

fn now_seconds() -> u64 {
    crate::ids::now_ns() / 1_000_000_000
}

async fn home(session: Result<Session, SignedOut>) -> Response {
    match session {
        Ok(_) => see_other("/console/accounts"),
        Err(signed_out) => signed_out.into_response(),
    }
}

/// The sign-in form, with its own double-submit token in a cookie.
async fn sign_in_page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    sign_in_form(&state, &headers, StatusCode::OK, None)
}

fn sign_in_form(state: &AppState, headers: &HeaderMap, status: StatusCode, error: Option<&str>) -> Response {
    let token = session::random_token();
    let mut response = html(status, views::sign_in(&token, error));
    if let Ok(value) = HeaderValue::from_str(&state.console.set_cookie(headers, SIGN_IN_COOKIE, &token, 3600)) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
struct SignIn {
    key: String,
    #[serde(default)]
    sign_in: String,
}

async fn sign_in(State(state): State<Arc<AppState>>, headers: HeaderMap, Form(form): Form<SignIn>) -> Response {
    let expected = session::cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !session::same(expected.as_bytes(), form.sign_in.as_bytes()) {
        let error = "This sign-in form has expired (or came from another site). Sign in again.";
        return sign_in_form(&state, &headers, StatusCode::FORBIDDEN, Some(error));
    }
    let hash = crate::auth::hash_key(&crate::auth::Secret::new(form.key.trim().to_owned()));
    let (reader, cache, clock_now) = (state.reader.clone(), state.keys.clone(), state.clock.now_ns());
    let record = crate::request_id::spawn_blocking(move || cache.lookup(reader.as_ref(), hash, clock_now)).await;
    let record = match record {
        Ok(Ok(Some(record))) if crate::auth::check_expiry(&record, clock_now).is_ok() => record,
        Ok(Ok(Some(_))) => {
            let error = "This API key has expired: use its new secret, or ask an admin for a new key.";
            return sign_in_form(&state, &headers, StatusCode::UNAUTHORIZED, Some(error));
        }
        Ok(Ok(None)) => {
            return sign_in_form(&state, &headers, StatusCode::UNAUTHORIZED, Some("Invalid API key provided."))
        }
        _ => {
            let error = "The key could not be checked now. Try again.";
            return sign_in_form(&state, &headers, StatusCode::SERVICE_UNAVAILABLE, Some(error));
        }
    };
    if !session::can(&record, "read") {
        let error = "This API key lacks the `read` scope: the console needs it.";
        return sign_in_form(&state, &headers, StatusCode::FORBIDDEN, Some(error));
    }
    tracing::info!(key = %record.id, "console sign-in");
    let value = state.console.issue(&hash, now_seconds());
    let mut response = see_other("/console/accounts");
    let cookies = [
        state.console.set_cookie(&headers, session::COOKIE, &value, session::SESSION_SECONDS),
        state.console.set_cookie(&headers, SIGN_IN_COOKIE, "", 0),
    ];
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// A form's CSRF token (every console form has only the fields named here).
#[derive(Deserialize)]
struct Csrf {
    csrf: Option<String>,
}

async fn sign_out(
    State(state): State<Arc<AppState>>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<Csrf>,
) -> Response {
    if !session.csrf_ok(form.csrf.as_deref()) {
        return Problem::csrf().page(Some(&session));
    }
    state.console.sign_out(&session.cookie, now_seconds());
    // Recorded in the store too, so that every API node refuses the cookie from now on.
    let (admin, cookie) = (state.admin.clone(), session.cookie);
    let recorded = crate::request_id::spawn_blocking(move || {
        admin.end_console_session(&cookie.id, cookie.expires.saturating_mul(1_000_000_000))
    })
    .await;
    if !matches!(recorded, Ok(Ok(()))) {
        tracing::warn!(
            "the sign-out is not recorded in the store; other API nodes accept the session until it expires"
        );
    }
    let mut response = see_other("/console/sign-in");
    if let Ok(value) = HeaderValue::from_str(&state.console.set_cookie(&headers, session::COOKIE, "", 0)) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
struct Search {
    q: Option<String>,
}

/// The account search: an id (`acct_…`) or a reference, looked up as batch files name
/// accounts (`BatchStore::find_account`).
async fn accounts(State(state): State<Arc<AppState>>, session: Session, Query(search): Query<Search>) -> Response {
    let Some(text) = search.q.map(|q| q.trim().to_owned()).filter(|q| !q.is_empty()) else {
        return html(StatusCode::OK, views::accounts(&session, None));
    };
    let (batches, tenant, wanted) = (state.batches.clone(), session.auth.tenant, text.clone());
    let found = crate::request_id::spawn_blocking(move || batches.find_account(tenant, &wanted, None)).await;
    match found {
        Ok(Ok(Some(account))) => see_other(&format!("/console/accounts/{}", account.id)),
        Ok(Ok(None)) => html(StatusCode::NOT_FOUND, views::accounts(&session, Some(&text))),
        Ok(Err(error)) => Problem::from(ApiError::from(error)).page(Some(&session)),
        Err(_) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "A store read failed.")
            .page(Some(&session)),
    }
}

/// An account: `GET /v1/accounts/{id}` and a page of `GET /v1/accounts/{id}/transfers`.
async fn account(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let auth = session.auth;
    let shown = async {
        let account =
            api_json(crate::routes::accounts::retrieve(State(state.clone()), auth, Path(id.clone())).await).await?;
        let transfers = api_json(
            crate::routes::accounts::transfers(State(state.clone()), auth, Path(id), RawQuery(query.clone())).await,
        )
        .await?;
        Ok::<_, Problem>((account, transfers))
    };
    match shown.await {
        Ok((account, transfers)) => {
            html(StatusCode::OK, views::account(&session, &account, &transfers, query.is_some()))
        }
        Err(problem) => problem.page(Some(&session)),
    }
}

/// An id typed into a page's "open" form.
#[derive(Deserialize)]
struct PaymentSearch {
    id: Option<String>,
}

/// The live list (`GET /v1/payments` with the page's `status` and cursor), or the payment a
/// typed id names.
async fn payments(
    State(state): State<Arc<AppState>>,
    session: Session,
    Query(search): Query<PaymentSearch>,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(id) = search.id.map(|id| id.trim().to_owned()).filter(|id| !id.is_empty()) {
        return see_other(&format!("/console/payments/{}", urlencode(&id)));
    }
    // An empty `status` (the filter's "all") is no filter.
    let query: Vec<&str> =
        query.as_deref().unwrap_or("").split('&').filter(|p| !p.is_empty() && *p != "status=").collect();
    let status = query.iter().find_map(|p| p.strip_prefix("status=")).map(str::to_owned);
    let paged = query.iter().any(|p| p.starts_with("starting_after="));
    let listed = crate::routes::payments::list(State(state), session.auth, RawQuery(Some(query.join("&")))).await;
    match api_json(listed).await {
        Ok(list) => html(StatusCode::OK, views::payments(&session, &list, status.as_deref(), paged)),
        Err(problem) => problem.page(Some(&session)),
    }
}

#[derive(Deserialize)]
struct Done {
    done: Option<String>,
}

/// A payment: `GET /v1/payments/{id}`, its refunds, and the transfer its confirmation made.
async fn payment(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    match payment_data(&state, session.auth, &id).await {
        Ok((payment, refunds, transfer)) => {
            html(StatusCode::OK, views::payment(&session, &payment, &refunds, transfer.as_ref(), done.done.as_deref()))
        }
        Err(problem) => problem.page(Some(&session)),
    }
}

async fn payment_data(state: &Arc<AppState>, auth: Auth, id: &str) -> Result<(Value, Value, Option<Value>), Problem> {
    let payment =
        api_json(crate::routes::payments::retrieve(State(state.clone()), auth, Path(id.to_owned())).await).await?;
    let refunds =
        api_json(crate::routes::payments::refunds(State(state.clone()), auth, Path(id.to_owned())).await).await?;
    // The transfer the confirmation made (the payment's move, or its hold): the payment as
    // the store holds it names it, and it is rendered as the API renders transfers.
    let payment_id: paycore_ledger::PaymentId = crate::routes::path_id(id, "payment")?;
    let tenant = auth.tenant;
    let transfer = crate::routes::read(state, move |r| {
        let Some(transfer) = r.payment(tenant, payment_id)?.and_then(|p| p.transfer) else { return Ok(None) };
        r.transfer(tenant, transfer)
    })
    .await?;
    let transfer = transfer.map(|t| json!(crate::render::TransferJson::new(&t, None)));
    Ok((payment, refunds, transfer))
}

/// What the console can do to a payment.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Action {
    Capture,
    Cancel,
    Refund,
}

impl Action {
    fn parse(text: &str) -> Option<Action> {
        match text {
            "capture" => Some(Action::Capture),
            "cancel" => Some(Action::Cancel),
            "refund" => Some(Action::Refund),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Capture => "capture",
            Action::Cancel => "cancel",
            Action::Refund => "refund",
        }
    }

    /// The actions a payment's state allows, as the ledger decides them.
    pub fn allowed(payment: &Value) -> Vec<Action> {
        let captured = payment["amount_captured"].as_u64().unwrap_or(0);
        let refunded = payment["amount_refunded"].as_u64().unwrap_or(0);
        match payment["status"].as_str() {
            Some("requires_capture") => vec![Action::Capture, Action::Cancel],
            Some("requires_confirmation") => vec![Action::Cancel],
            Some("succeeded") if captured > refunded => vec![Action::Refund],
            _ => Vec::new(),
        }
    }

    /// The API route that does it.
    fn path(self, id: &str) -> String {
        match self {
            Action::Capture => format!("/v1/payments/{id}/capture"),
            Action::Cancel => format!("/v1/payments/{id}/cancel"),
            Action::Refund => format!("/v1/payments/{id}/refunds"),
        }
    }
}

/// The confirmation step of an action, with the `Idempotency-Key` its form will carry.
async fn confirm_action(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let Some(action) = Action::parse(&action) else { return not_found_page(Some(&session)) };
    if !session.can_write {
        return Problem::read_only().page(Some(&session));
    }
    match payment_data(&state, session.auth, &id).await {
        Ok((payment, _, _)) => {
            let key = format!("console-{}", session::random_token());
            html(StatusCode::OK, views::confirm(&session, &payment, action, &key))
        }
        Err(problem) => problem.page(Some(&session)),
    }
}

#[derive(Deserialize)]
struct ActionForm {
    csrf: Option<String>,
    idempotency_key: Option<String>,
    amount: Option<String>,
}

/// Does an action through its `/v1` handler, as the session's key.
async fn act(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    if !session.csrf_ok(form.csrf.as_deref()) {
        return Problem::csrf().page(Some(&session));
    }
    if !session.can_write {
        return Problem::read_only().page(Some(&session));
    }
    let Some(action) = Action::parse(&action) else { return not_found_page(Some(&session)) };
    match perform(&state, &session, &id, action, form).await {
        Ok(()) => see_other(&format!("/console/payments/{}?done={}", urlencode(&id), action.as_str())),
        Err(problem) => problem.page(Some(&session)),
    }
}

async fn perform(
    state: &Arc<AppState>,
    session: &Session,
    id: &str,
    action: Action,
    form: ActionForm,
) -> Result<(), Problem> {
    let payment =
        api_json(crate::routes::payments::retrieve(State(state.clone()), session.auth, Path(id.to_owned())).await)
            .await?;
    let amount = match form.amount.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
        None => None,
        Some(_) if action == Action::Cancel => None,
        Some(text) => {
            let currency = payment["currency"].as_str().and_then(Currency::from_code).ok_or_else(|| {
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "The payment's currency is unknown.")
            })?;
            let amount = parse_amount(text, currency).map_err(|error| {
                Problem::new(StatusCode::BAD_REQUEST, "parameter_invalid", format!("`amount`: {error} ({text:?})."))
            })?;
            Some(amount.get())
        }
    };
    let body = match amount {
        Some(amount) => json!({ "amount": amount }),
        None => json!({}),
    };
    let body = Bytes::from(body.to_string());
    let key = match form.idempotency_key.filter(|k| !k.is_empty()) {
        Some(key)
            if key.len() <= crate::idempotency::KEY_LENGTH_MAX && key.bytes().all(|b| (0x20..=0x7e).contains(&b)) =>
        {
            Some(IdempotencyKey { fingerprint: fingerprint("POST", &action.path(id), &body), key })
        }
        Some(_) => {
            return Err(Problem::new(StatusCode::BAD_REQUEST, "parameter_invalid", "`idempotency_key` is not valid."))
        }
        None => None,
    };
    let post = Post { auth: session.auth, body, key, saved: None };
    let (state, path) = (State(state.clone()), Path(id.to_owned()));
    let answer = match action {
        Action::Capture => crate::routes::payments::capture(state, path, post).await,
        Action::Cancel => crate::routes::payments::cancel(state, path, post).await,
        Action::Refund => crate::routes::payments::refund(state, path, post).await,
    };
    let answer = api_json(answer).await?;
    // A refund the ledger refused is a 201 with a `failed` refund: say so.
    if answer["object"] == "refund" && answer["status"] == "failed" {
        let code = answer["failure_code"].as_str().unwrap_or("failed");
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, code, format!("The refund failed: {code}.")));
    }
    Ok(())
}

/// The upload form and the list (`GET /v1/batches` with the page's `status` and cursor), or
/// the batch a typed id names.
async fn batches(
    State(state): State<Arc<AppState>>,
    session: Session,
    Query(search): Query<PaymentSearch>,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(id) = search.id.map(|id| id.trim().to_owned()).filter(|id| !id.is_empty()) {
        return see_other(&format!("/console/batches/{}", urlencode(&id)));
    }
    // An empty `status` (the filter's "all") is no filter; `id=` is the empty "open" form.
    let query: Vec<&str> =
        query.as_deref().unwrap_or("").split('&').filter(|p| !p.is_empty() && *p != "status=" && *p != "id=").collect();
    let status = query.iter().find_map(|p| p.strip_prefix("status=")).map(str::to_owned);
    let paged = query.iter().any(|p| p.starts_with("starting_after="));
    let listed = crate::routes::batches::list(State(state), session.auth, RawQuery(Some(query.join("&")))).await;
    match api_json(listed).await {
        Ok(list) => html(StatusCode::OK, views::batches(&session, &list, status.as_deref(), paged)),
        Err(problem) => problem.page(Some(&session)),
    }
}

/// The upload (`fetch` from the page, the CSRF token in a header): `POST /v1/batches` as it is.
async fn upload(
    State(state): State<Arc<AppState>>,
    session: Session,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let token = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if !session.csrf_ok(token) {
        let problem = Problem::csrf();
        return ApiError::new(
            problem.status,
            crate::error::ErrorType::AuthenticationError,
            &problem.code,
            problem.message,
        )
        .into_response();
    }
    if !session.can_write {
        let problem = Problem::read_only();
        return ApiError::new(
            problem.status,
            crate::error::ErrorType::AuthenticationError,
            &problem.code,
            problem.message,
        )
        .into_response();
    }
    let query = Query::try_from_uri(&uri);
    match crate::routes::batches::create(State(state), session.auth, query, headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// A batch: `GET /v1/batches/{id}` and, once validated, its invalid and failed items.
async fn batch(State(state): State<Arc<AppState>>, session: Session, Path(id): Path<String>) -> Response {
    let auth = session.auth;
    let shown = async {
        let batch =
            api_json(crate::routes::batches::retrieve(State(state.clone()), auth, Path(id.clone())).await).await?;
        let mut lists = Vec::new();
        for status in ["invalid", "failed"] {
            let uri: Uri = format!("/?status={status}&limit=1000").parse().unwrap_or_default();
            let items =
                crate::routes::batches::items(State(state.clone()), auth, Path(id.clone()), Query::try_from_uri(&uri));
            lists.push(api_json(items.await).await?);
        }
        Ok::<_, Problem>((batch, lists))
    };
    match shown.await {
        Ok((batch, lists)) => html(StatusCode::OK, views::batch(&session, &batch, &lists[0], &lists[1])),
        Err(problem) => problem.page(Some(&session)),
    }
}

/// The batch as `GET /v1/batches/{id}` answers it, for the page's progress bar.
async fn batch_status(State(state): State<Arc<AppState>>, session: Session, Path(id): Path<String>) -> Response {
    match crate::routes::batches::retrieve(State(state), session.auth, Path(id)).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// `GET /v1/batches/{id}/report` as it is, to download.
async fn batch_report(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    let answer =
        crate::routes::batches::report(State(state), session.auth, Path(id.clone()), Query::try_from_uri(&uri)).await;
    match answer {
        Ok(mut response) => {
            let name = if uri.query().unwrap_or("").contains("pain.002") { "pain.002.xml" } else { "report.csv" };
            if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{id}-{name}\"")) {
                response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
            }
            response
        }
        Err(error) => Problem::from(error).page(Some(&session)),
    }
}

/// The figures of `/metrics` the health page charts, read from the same text.
fn figures(state: &AppState) -> Value {
    let text = state.metrics.encode(state.engine.queue_depth());
    let wanted = [
        "paycore_engine_batch_events_sum",
        "paycore_engine_batch_events_count",
        "paycore_engine_commit_seconds_sum",
        "paycore_engine_commit_seconds_count",
        "paycore_engine_queue_depth",
    ];
    let mut figures = serde_json::Map::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.split_whitespace();
        if let (Some(name), Some(value)) = (parts.next(), parts.next()) {
            if wanted.contains(&name) {
                figures.insert(name.to_owned(), serde_json::from_str(value).unwrap_or(Value::Null));
            }
        }
    }
    figures.insert("at_ms".to_owned(), json!(crate::ids::now_ns() / 1_000_000));
    Value::Object(figures)
}

async fn health(State(state): State<Arc<AppState>>, session: Session) -> Response {
    html(StatusCode::OK, views::health(&session, &figures(&state)))
}

async fn health_figures(State(state): State<Arc<AppState>>, _session: Session) -> Response {
    crate::error::json_response(StatusCode::OK, figures(&state).to_string().into_bytes())
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("console.js"))
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", include_str!("console.css"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn not_found(session: Result<Session, SignedOut>) -> Response {
    not_found_page(session.as_ref().ok())
}

fn not_found_page(session: Option<&Session>) -> Response {
    Problem::new(StatusCode::NOT_FOUND, "route_not_found", "No such page in the console.").page(session)
}

/// Percent-encodes a path segment.
fn urlencode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
