//! `POST /v1/transfers`: one transfer, or up to 8 190 in one request with a result per item.

use super::{submit, Answer};
use crate::error::{json_response, ApiError, ErrorBody};
use crate::idempotency::{Post, Saved};
use crate::json::{self, Amount, Id, Seconds};
use crate::render::{self, TransferJson, TransferResultJson, TransferResultsJson};
use crate::AppState;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use paycore_engine::IdempotencyKey;
use paycore_ledger::{
    AccountId, Command, Currency, Hold, NewTransfer, Outcome, ResultCode, TenantId, Transfer, TransferId, TransferOp,
    TIMEOUT_MAX_SECONDS,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use utoipa::ToSchema;

/// The most transfers in one request.
pub const BULK_TRANSFERS_MAX: usize = paycore_ledger::BATCH_EVENTS_MAX;

/// One transfer. Three forms: a move (`debit_account`, `credit_account`, `amount`,
/// `currency`, and `pending: true` to place a hold, optionally with `timeout_seconds`); a post
/// of a hold (`post_pending_id`, optionally a smaller `amount`); a void of a hold
/// (`void_pending_id`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferParams {
    /// `tr_…`: makes a retry idempotent at the ledger level (the retry answers `exists`).
    /// Made by the server when absent.
    #[schema(value_type = Option<String>)]
    pub id: Option<Id<TransferId>>,
    #[schema(value_type = Option<String>)]
    pub debit_account: Option<Id<AccountId>>,
    #[schema(value_type = Option<String>)]
    pub credit_account: Option<Id<AccountId>>,
    /// Minor units, 1 to 9223372036854775807.
    #[schema(value_type = Option<u64>)]
    pub amount: Option<Amount>,
    /// ISO 4217 code, upper case.
    pub currency: Option<String>,
    /// Place a hold instead of moving the money.
    #[serde(default)]
    pub pending: bool,
    /// For a hold: release it by itself after this many seconds (1 to 31622400).
    #[schema(value_type = Option<u64>)]
    pub timeout_seconds: Option<Seconds>,
    /// Post this hold (all of it, or `amount`).
    #[schema(value_type = Option<String>)]
    pub post_pending_id: Option<Id<TransferId>>,
    /// Release this hold.
    #[schema(value_type = Option<String>)]
    pub void_pending_id: Option<Id<TransferId>>,
    /// Link to the next transfer of the request: the chain succeeds or fails as one.
    #[serde(default)]
    pub linked: bool,
}

/// Up to 8 190 transfers, applied in order.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkTransfers {
    pub transfers: Vec<TransferParams>,
}

/// The body of `POST /v1/transfers`: one transfer, or `{"transfers":[…]}`.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum CreateTransfers {
    Single(TransferParams),
    Bulk(BulkTransfers),
}

/// `POST /v1/transfers`
#[utoipa::path(post, path = "/v1/transfers", tag = "transfers",
    request_body = CreateTransfers,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses(
        (status = 201, description = "A single transfer was applied (`result`: `ok`)", body = TransferJson),
        (status = 200, description = "A single transfer existed already (`result`: `exists`), or the results of a bulk request, one per item in order", body = TransferResultsJson),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 422, description = "A single transfer was rejected: `code` is the result code (`insufficient_funds`, `account_not_found`, `currency_mismatch`, `same_account`, `overflow`, `pending_not_found`, `pending_already_posted`, …)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create(State(state): State<Arc<AppState>>, post: Post) -> Result<Response, ApiError> {
    // The common cases, parsed in one pass each: a single transfer that parses has no
    // `transfers` field (unknown fields are refused), and a bulk body has only that one, so
    // each is exactly what the general way below makes of it. A bulk body fails the first
    // try at its first key.
    let parsed = match json::parse_valid::<TransferParams>(&post.body) {
        Some(single) => Some((vec![single], false)),
        None => json::parse_valid::<BulkTransfers>(&post.body).map(|b| (b.transfers, true)),
    };
    let (items, bulk): (Vec<TransferParams>, _) = match parsed {
        Some(parsed) => parsed,
        None => {
            // Looked at as JSON first: a value that refuses a key given twice, at any depth.
            let body = json::parse_object(&post.body)?;
            if body.as_object().is_some_and(|o| o.contains_key("transfers")) {
                (json::parse_value::<BulkTransfers>(body)?.transfers, true)
            } else {
                (vec![json::parse_value(body)?], false)
            }
        }
    };
    if bulk && (items.is_empty() || items.len() > BULK_TRANSFERS_MAX) {
        return Err(ApiError::invalid("transfers", format!("`transfers` must have 1 to {BULK_TRANSFERS_MAX} items.")));
    }
    let tenant = post.auth.tenant;
    let mut transfers: Vec<NewTransfer> = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let id = item.id.map_or_else(|| new_transfer_id(tenant, post.key.as_ref(), index), |id| id.0);
        transfers.push(new_transfer(item, id, bulk.then_some(index))?);
    }
    if !bulk {
        let transfer = transfers.pop().ok_or_else(|| ApiError::internal("A single transfer was parsed as none."))?;
        return single(&state, &post, transfer).await;
    }
    let ids: Vec<TransferId> = transfers.iter().map(|t| t.id).collect();
    let (codes, replayed) = match post.saved.clone() {
        Some(saved) => (saved_codes(&saved), Some(saved)),
        None => match submit(&state, &post, Command::Transfers(transfers)).await? {
            Answer::Done(Outcome::Transfers(codes)) => (Some(codes), None),
            Answer::Done(_) => return Err(ApiError::internal("The engine answered with another kind of outcome.")),
            Answer::Saved(saved) => (saved_codes(&saved), Some(saved)),
        },
    };
    let Some(codes) = codes.filter(|c| c.len() == ids.len()) else {
        // A saved response of another shape (an error): replay it as it is.
        return match replayed {
            Some(saved) => Ok(saved.into_response()),
            None => Err(ApiError::internal("The engine answered with the wrong number of results.")),
        };
    };
    Ok(replayed_if(bulk_response(&ids, &codes), replayed.is_some()))
}

/// The single form: the transfer as stored (`201` when it was applied now, `200` when it
/// existed), or the error its result code names. With an `Idempotency-Key`, a refusal is
/// answered in its saved form (no request id in the body), the same bytes as every replay.
async fn single(state: &Arc<AppState>, post: &Post, transfer: NewTransfer) -> Result<Response, ApiError> {
    let (id, pending_param) = (transfer.id, pending_param(&transfer.op));
    let saved = match post.saved.clone() {
        Some(saved) => saved,
        None => match submit(state, post, Command::Transfer(transfer)).await? {
            Answer::Done(Outcome::Transfer { limit: Some(breach), .. }) => {
                let refusal = ApiError::from_breach(breach);
                return Err(if post.key.is_some() { refusal.saved_form() } else { refusal });
            }
            Answer::Done(Outcome::Transfer { code, transfer, .. }) => {
                let answer = single_response(code, transfer, pending_param);
                return if post.key.is_some() { answer.map_err(ApiError::saved_form) } else { answer };
            }
            Answer::Done(_) => return Err(ApiError::internal("The engine answered with another kind of outcome.")),
            Answer::Saved(saved) => saved,
        },
    };
    // A replay: the saved form has the result code only, so a success reads the transfer back.
    let Some(&[code]) = saved_codes(&saved).as_deref() else {
        // A saved response of another shape (an error): replay it as it is.
        return Ok(saved.into_response());
    };
    if !code.is_success() {
        let refusal = ApiError::from_result(code, pending_param).saved_form().into_response();
        return Ok(replayed_if(refusal, true));
    }
    let tenant = post.auth.tenant;
    let stored = state.point_reads.read("A store read failed.", move |r| r.transfer(tenant, id)).await?;
    Ok(replayed_if(single_response(code, stored, pending_param)?, true))
}

/// The id of a transfer the client gave none: derived from the idempotency key and the
/// position when there is a key (so that a replay names the same ids), else time-ordered.
fn new_transfer_id(tenant: TenantId, key: Option<&IdempotencyKey>, index: usize) -> TransferId {
    let Some(key) = key else { return TransferId(crate::ids::new_id()) };
    let mut hash = Sha256::new();
    hash.update(tenant.0.to_be_bytes());
    hash.update(key.key.as_bytes());
    hash.update(b"\n");
    hash.update(index.to_be_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    TransferId(u128::from_be_bytes(bytes))
}

/// Checks that the fields of one item make one of the three forms, naming the field that
/// does not fit; `index`: the item's position in a bulk request (its path is `transfers[3].`).
fn new_transfer(p: TransferParams, id: TransferId, index: Option<usize>) -> Result<NewTransfer, ApiError> {
    // Only errors name a field: the path is made then.
    let field = |name: &str| match index {
        Some(index) => format!("transfers[{index}].{name}"),
        None => name.to_owned(),
    };
    let resolving = match (&p.post_pending_id, &p.void_pending_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                field("void_pending_id"),
                "`void_pending_id` cannot be combined with `post_pending_id`.",
            ))
        }
        (Some(_), None) => Some("post_pending_id"),
        (None, Some(_)) => Some("void_pending_id"),
        (None, None) => None,
    };
    if let Some(resolving) = resolving {
        let mut not_allowed = vec![
            ("debit_account", p.debit_account.is_some()),
            ("credit_account", p.credit_account.is_some()),
            ("currency", p.currency.is_some()),
            ("pending", p.pending),
            ("timeout_seconds", p.timeout_seconds.is_some()),
        ];
        if resolving == "void_pending_id" {
            not_allowed.push(("amount", p.amount.is_some()));
        }
        if let Some((name, _)) = not_allowed.into_iter().find(|(_, present)| *present) {
            return Err(ApiError::invalid(
                field(name),
                format!("`{name}` is not allowed with `{resolving}`: it resolves a pending transfer, whose accounts and currency are fixed."),
            ));
        }
    }
    let op = if let Some(pending) = p.post_pending_id {
        TransferOp::Post { pending_id: pending.0, amount: p.amount.map(|a| a.0) }
    } else if let Some(pending) = p.void_pending_id {
        TransferOp::Void { pending_id: pending.0 }
    } else {
        let debit = p.debit_account.ok_or_else(|| ApiError::missing(field("debit_account")))?;
        let credit = p.credit_account.ok_or_else(|| ApiError::missing(field("credit_account")))?;
        let amount = p.amount.ok_or_else(|| ApiError::missing(field("amount")))?;
        let code = p.currency.ok_or_else(|| ApiError::missing(field("currency")))?;
        // Looked up before naming the field: the name is only needed for the error.
        let currency = Currency::from_code(&code).ok_or_else(|| json::unknown_currency(&code, &field("currency")))?;
        if p.timeout_seconds.is_some() && !p.pending {
            return Err(ApiError::invalid(
                field("timeout_seconds"),
                "`timeout_seconds` is only allowed with `pending: true`.",
            ));
        }
        if let Some(Seconds(seconds)) = p.timeout_seconds {
            if seconds > TIMEOUT_MAX_SECONDS {
                return Err(ApiError::invalid(
                    field("timeout_seconds"),
                    "`timeout_seconds` must be from 1 to 31622400 (366 days).",
                ));
            }
        }
        TransferOp::Move {
            debit_account: debit.0,
            credit_account: credit.0,
            amount: amount.0,
            currency,
            hold: p.pending.then_some(Hold { timeout_seconds: p.timeout_seconds.map(|s| s.0) }),
        }
    };
    Ok(NewTransfer { id, linked: p.linked, op })
}

fn pending_param(op: &TransferOp) -> Option<&'static str> {
    match op {
        TransferOp::Post { .. } => Some("post_pending_id"),
        TransferOp::Void { .. } => Some("void_pending_id"),
        TransferOp::Move { .. } => None,
    }
}

/// The result codes in a saved transfer response, if it is one.
fn saved_codes(saved: &Saved) -> Option<Vec<ResultCode>> {
    if saved.status != 200 {
        return None;
    }
    let results: TransferResultsJson = serde_json::from_slice(&saved.body).ok()?;
    results.data.iter().map(|r| ResultCode::parse(&r.result)).collect()
}

fn single_response(
    code: ResultCode,
    transfer: Option<Transfer>,
    pending_param: Option<&'static str>,
) -> Result<Response, ApiError> {
    if !code.is_success() {
        return Err(ApiError::from_result(code, pending_param));
    }
    let transfer = transfer.ok_or_else(|| ApiError::internal("The transfer was applied but cannot be read back."))?;
    let status = if code == ResultCode::Ok { StatusCode::CREATED } else { StatusCode::OK };
    let (_, body) = render::json(status.as_u16(), &TransferJson::new(&transfer, Some(code)));
    Ok(json_response(status, body))
}

/// Marks a response that repeats a saved one.
fn replayed_if(mut response: Response, replayed: bool) -> Response {
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

fn bulk_response(ids: &[TransferId], codes: &[ResultCode]) -> Response {
    let results = TransferResultsJson {
        object: "list".to_owned(),
        data: ids
            .iter()
            .zip(codes)
            .enumerate()
            .map(|(index, (id, code))| TransferResultJson {
                index,
                id: Some(id.to_string()),
                result: code.as_str().to_owned(),
            })
            .collect(),
    };
    let (_, body) = render::json(200, &results);
    json_response(StatusCode::OK, body)
}
