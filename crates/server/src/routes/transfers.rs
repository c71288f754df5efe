//! `POST /v1/transfers`: one transfer, or up to 8 190 in one request with a result per item.

use super::{submit, Answer};
use crate::error::{json_response, ApiError, ErrorBody};
use crate::idempotency::{Post, Saved};
use crate::json::{self, Amount, CurrencyText, Id, Seconds};
use crate::render::{self, TransferJson, TransferResultsJson};
use crate::AppState;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use paycore_engine::IdempotencyKey;
use paycore_ledger::{
    AccountId, Command, Hold, NewTransfer, Outcome, ResultCode, TenantId, Transfer, TransferId, TransferOp,
    TIMEOUT_MAX_SECONDS,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use utoipa::ToSchema;

/// The most transfers in one request.
pub const BULK_TRANSFERS_MAX: usize = paycore_ledger::BATCH_EVENTS_MAX;

/// One transfer. Three forms: a move (`debit_account`, `credit_account`, `amount`,
/// `currency`, and `pending: true` to place a hold, optionally with `timeout_seconds`); a post
/// of a hold (`post_pending_id`, optionally a smaller `amount`); a void of a hold
/// (`void_pending_id`).
#[derive(Deserialize, ToSchema, Debug, PartialEq)]
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
    #[schema(value_type = Option<String>)]
    pub currency: Option<CurrencyText>,
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
        None => parse_bulk(&post.body).map(|transfers| (transfers, true)),
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
    // The ids the server makes for items without one, all at once when there is no key.
    let mut fresh = vec![0u128; if post.key.is_none() { items.iter().filter(|i| i.id.is_none()).count() } else { 0 }];
    crate::ids::new_ids(&mut fresh);
    let mut fresh = fresh.into_iter();
    let mut transfers: Vec<NewTransfer> = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let id = match item.id {
            Some(id) => id.0,
            None => fresh.next().map_or_else(|| new_transfer_id(tenant, post.key.as_ref(), index), TransferId),
        };
        transfers.push(new_transfer(item, id, bulk.then_some(index))?);
    }
    if !bulk {
        let transfer = transfers.pop().ok_or_else(|| ApiError::internal("A single transfer was parsed as none."))?;
        return single(&state, &post, transfer).await;
    }
    let ids: Vec<TransferId> = transfers.iter().map(|t| t.id).collect();
    // While the engine applies the request, the answer it most often gets (every item `ok`)
    // is written: with one bulk request in flight that is time off the request's path.
    let mut all_ok = None;
    let (codes, replayed) = match post.saved.clone() {
        Some(saved) => (saved_codes(&saved), Some(saved)),
        None => match submit_while(&state, &post, Command::Transfers(transfers), || {
            all_ok = Some(bulk_body_all_ok(&ids));
        })
        .await?
        {
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
    let body = match all_ok {
        Some(body) if codes.iter().all(|&code| code == ResultCode::Ok) => body,
        _ => bulk_body(&ids, &codes),
    };
    Ok(replayed_if(json_response(StatusCode::OK, body), replayed.is_some()))
}

/// Submits `command` and, once the engine has it, runs `meanwhile` before waiting for the
/// engine's answer; not when the answer comes at once (a full queue's refusal).
async fn submit_while(
    state: &AppState,
    post: &Post,
    command: Command,
    meanwhile: impl FnOnce(),
) -> Result<Answer, ApiError> {
    let mut submitted = std::pin::pin!(submit(state, post, command));
    // The first poll hands the command to the engine's queue (or answers at once).
    match std::future::poll_fn(|context| Poll::Ready(submitted.as_mut().poll(context))).await {
        Poll::Ready(answer) => answer,
        Poll::Pending => {
            meanwhile();
            submitted.await
        }
    }
}

/// Bodies from this size on are parsed in two halves on two threads (~2 000 transfers).
const SPLIT_PARSE_BYTES: usize = 256 * 1024;

/// The items of a valid bulk body, or `None` if it does not parse (the caller parses it again
/// to name the error). With one bulk request in flight, the engine and the client wait while
/// the body is parsed, so a large body is parsed in two halves at once: the body cut at the
/// comma between two items nearest its middle, `{"transfers":[first half` and
/// `second half]}`. The items are the whole body's when both halves parse: a cut anywhere but
/// between two items of `transfers` leaves the first half unparseable (a string or an object
/// left open, a key it does not know), and a second half that parses ends the array and the
/// body as the whole does. Either half failing falls back to one pass.
fn parse_bulk(body: &[u8]) -> Option<Vec<TransferParams>> {
    let cut = if body.len() >= SPLIT_PARSE_BYTES { item_boundary(body, body.len() / 2) } else { None };
    cut.and_then(|cut| parse_halves(body, cut)).or_else(|| parse_whole(body))
}

/// The items of a whole bulk body: the plain form by hand, anything else through serde.
fn parse_whole(body: &[u8]) -> Option<Vec<TransferParams>> {
    plain::bulk(body).or_else(|| json::parse_valid::<BulkTransfers>(body).map(|b| b.transfers))
}

/// The items of `body` parsed as two bodies cut at the comma at `cut`, at once; `None` if
/// either does not parse. The plain form is read in place, each half a slice of the body;
/// any other form goes to serde, as two bodies `{"transfers":[first half]}` and
/// `{"transfers":[second half]}` (copies).
fn parse_halves(body: &[u8], cut: usize) -> Option<Vec<TransferParams>> {
    let (first, second) = std::thread::scope(|scope| {
        let second = scope.spawn(|| plain::part(&body[cut + 1..], plain::Part::Last));
        let first = plain::part(&body[..cut], plain::Part::First);
        (first, second.join().ok().flatten())
    });
    if let (Some(mut first), Some(second)) = (first, second) {
        first.extend(second);
        return Some(first);
    }
    const OPEN: &[u8] = br#"{"transfers":["#;
    let mut second = Vec::with_capacity(OPEN.len() + body.len() - cut);
    second.extend_from_slice(OPEN);
    second.extend_from_slice(&body[cut + 1..]);
    let mut first = Vec::with_capacity(cut + 2);
    first.extend_from_slice(&body[..cut]);
    first.extend_from_slice(b"]}");
    let serde = |body: &[u8]| json::parse_valid::<BulkTransfers>(body).map(|b| b.transfers);
    let (first, second) = std::thread::scope(|scope| {
        let second = scope.spawn(|| serde(&second));
        let first = serde(&first);
        (first, second.join().ok().flatten())
    });
    let (mut first, second) = (first?, second?);
    first.extend(second);
    Some(first)
}
/// A parser for the plain form of a bulk body, by hand: the known keys spelled without
/// escapes, each at most once, strings without escapes or control characters, amounts and
/// timeouts as plain integers, `true`/`false`, no `null`. Anything else (a body it does not
/// know how to read, valid or not) gives `None`, and serde reads the body; so what this
/// returns is what serde would, and every error comes from serde. The body is checked to be
/// UTF-8 once, whole; its strings are slices of it (crates/bench/NOTES.md, issue 18).
mod plain {
    use super::{CurrencyText, Id, TransferParams};
    use crate::json::{Amount, Seconds};
    use paycore_ledger::{AccountId, TransferId};
    use std::str::FromStr;

    /// The bytes a plain string may hold: printable ASCII but `"` and `\`.
    const PLAIN: [bool; 256] = {
        let mut plain = [false; 256];
        let mut b = 0x20;
        while b < 0x80 {
            plain[b] = b != b'"' as usize && b != b'\\' as usize;
            b += 1;
        }
        plain
    };

    struct Reader<'a> {
        /// What is read; `body` is its bytes.
        text: &'a str,
        body: &'a [u8],
        at: usize,
    }

    impl<'a> Reader<'a> {
        fn space(&mut self) {
            while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.body.get(self.at) {
                self.at += 1;
            }
        }

        /// Skips whitespace, then takes `token` if it is next.
        fn eat(&mut self, token: &[u8]) -> bool {
            self.space();
            let found = self.body[self.at..].starts_with(token);
            if found {
                self.at += token.len();
            }
            found
        }

        /// A string without escapes, control characters or non-ASCII bytes; its text
        /// between the quotes.
        fn quoted(&mut self) -> Option<&'a str> {
            if !self.eat(b"\"") {
                return None;
            }
            // One pass over the bytes up to the first that is not plain printable ASCII; the
            // string is plain if that one is its closing quote.
            let start = self.at;
            let length = self.body[start..].iter().position(|&b| !PLAIN[usize::from(b)])?;
            if self.body[start + length] != b'"' {
                return None;
            }
            self.at += length + 1;
            // Both ends are next to ASCII quotes: character boundaries.
            self.text.get(start..start + length)
        }

        /// An id of type `T` in a string.
        fn id<T: FromStr>(&mut self) -> Option<Id<T>> {
            self.quoted()?.parse().ok().map(Id)
        }

        /// A JSON integer that serde reads as a `u64`: digits, no sign, no leading zero,
        /// no fraction or exponent (the next byte ends the value).
        fn integer(&mut self) -> Option<u64> {
            self.space();
            let start = self.at;
            let mut value: u64 = 0;
            while let Some(digit @ b'0'..=b'9') = self.body.get(self.at).copied() {
                value = value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))?;
                self.at += 1;
            }
            let digits = self.at - start;
            let ends = matches!(self.body.get(self.at), Some(b',' | b'}' | b' ' | b'\t' | b'\n' | b'\r'));
            let leading_zero = digits > 1 && self.body[start] == b'0';
            (digits > 0 && ends && !leading_zero).then_some(value)
        }

        fn boolean(&mut self) -> Option<bool> {
            if self.eat(b"true") {
                Some(true)
            } else if self.eat(b"false") {
                Some(false)
            } else {
                None
            }
        }
    }

    /// Sets a field not set yet (a key given twice is serde's error to give).
    fn once<T>(slot: &mut Option<T>, value: Option<T>) -> Option<()> {
        if slot.is_some() {
            return None;
        }
        *slot = Some(value?);
        Some(())
    }

    fn item(r: &mut Reader<'_>) -> Option<TransferParams> {
        if !r.eat(b"{") {
            return None;
        }
        let mut p = TransferParams {
            id: None,
            debit_account: None,
            credit_account: None,
            amount: None,
            currency: None,
            pending: false,
            timeout_seconds: None,
            post_pending_id: None,
            void_pending_id: None,
            linked: false,
        };
        if r.eat(b"}") {
            return Some(p);
        }
        let (mut pending, mut linked) = (None, None);
        loop {
            let key = r.quoted()?;
            if !r.eat(b":") {
                return None;
            }
            match key {
                "id" => once(&mut p.id, r.id::<TransferId>())?,
                "debit_account" => once(&mut p.debit_account, r.id::<AccountId>())?,
                "credit_account" => once(&mut p.credit_account, r.id::<AccountId>())?,
                "amount" => once(&mut p.amount, r.integer().and_then(Amount::of))?,
                "currency" => once(&mut p.currency, r.quoted().map(CurrencyText::of))?,
                "pending" => once(&mut pending, r.boolean())?,
                "timeout_seconds" => once(&mut p.timeout_seconds, r.integer().and_then(Seconds::of))?,
                "post_pending_id" => once(&mut p.post_pending_id, r.id::<TransferId>())?,
                "void_pending_id" => once(&mut p.void_pending_id, r.id::<TransferId>())?,
                "linked" => once(&mut linked, r.boolean())?,
                _ => return None,
            }
            if r.eat(b"}") {
                break;
            }
            if !r.eat(b",") {
                return None;
            }
        }
        p.pending = pending.unwrap_or(false);
        p.linked = linked.unwrap_or(false);
        Some(p)
    }

    /// Which part of a body cut between two items a slice is.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(super) enum Part {
        /// `{"transfers":[` and items, up to the cut.
        First,
        /// Items after the cut, then `]}`.
        Last,
        /// The whole body.
        Whole,
    }

    /// The items of `{"transfers":[…]}` in the plain form, or `None`.
    pub(super) fn bulk(body: &[u8]) -> Option<Vec<TransferParams>> {
        part(body, Part::Whole)
    }

    /// The items of `body`, `part` of a bulk body in the plain form, or `None`. It is checked
    /// to be UTF-8 whole (about an instruction a byte), so that every string is a slice of it
    /// with no check of its own (a check per string was ~125 instructions, 7 strings an item).
    pub(super) fn part(body: &[u8], part: Part) -> Option<Vec<TransferParams>> {
        let text = std::str::from_utf8(body).ok()?;
        let mut r = Reader { text, body, at: 0 };
        if part != Part::Last && !(r.eat(b"{") && r.eat(br#""transfers""#) && r.eat(b":") && r.eat(b"[")) {
            return None;
        }
        // About 120 bytes an item in the plain form: room for all of them at once.
        let mut items = Vec::with_capacity(body.len() / 100 + 1);
        loop {
            items.push(item(&mut r)?);
            if part == Part::First {
                r.space();
                if r.at == body.len() {
                    return Some(items);
                }
            } else if r.eat(b"]") {
                break;
            }
            if !r.eat(b",") {
                return None;
            }
        }
        if !r.eat(b"}") {
            return None;
        }
        r.space();
        (r.at == body.len()).then_some(items)
    }
}

/// The position of a comma from `from` on whose neighbours, whitespace aside, are `}` and
/// `{`: the comma between two items of an array of objects, if the body is what it seems.
fn item_boundary(body: &[u8], from: usize) -> Option<usize> {
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    (from..body.len()).find(|&at| {
        body[at] == b','
            && body[..at].iter().rev().find(|b| !is_space(b)) == Some(&b'}')
            && body[at + 1..].iter().find(|b| !is_space(b)) == Some(&b'{')
    })
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
        // Looked up while parsing; the field is named only for an error.
        let currency =
            p.currency.ok_or_else(|| ApiError::missing(field("currency")))?.currency(|| field("currency"))?;
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

/// The answer to a bulk request: the bytes `render::json` makes of a [`TransferResultsJson`]
/// (index, id, result per item), written straight into one buffer. Through serde it took two
/// `String`s per item and a formatter per id.
fn bulk_body(ids: &[TransferId], codes: &[ResultCode]) -> Vec<u8> {
    const HEAD: &[u8] = br#"{"object":"list","data":["#;
    // `{"index":8188,"id":"tr_…26…","result":"ok"},` is 65 bytes; longer codes grow it once.
    let mut body = Vec::with_capacity(HEAD.len() + ids.len() * 72 + 2);
    body.extend_from_slice(HEAD);
    for (index, (id, code)) in ids.iter().zip(codes).enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(br#"{"index":"#);
        push_decimal(&mut body, index);
        body.extend_from_slice(br#","id":""#);
        id.push_text(&mut body);
        body.extend_from_slice(br#"","result":""#);
        // Codes are lower-case ASCII words: nothing to escape.
        body.extend_from_slice(code.as_str().as_bytes());
        body.extend_from_slice(br#""}"#);
    }
    body.extend_from_slice(b"]}");
    body
}

/// [`bulk_body`] of `ids` with every result `ok`.
fn bulk_body_all_ok(ids: &[TransferId]) -> Vec<u8> {
    bulk_body(ids, &vec![ResultCode::Ok; ids.len()])
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b"0123456789"[n % 10];
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::render::TransferResultJson;

    /// `n` items as a bulk body, and what each parses to (tenant 1, no key, position ids).
    fn items(n: usize, item: impl Fn(usize) -> String) -> Vec<u8> {
        format!(r#"{{"transfers":[{}]}}"#, (0..n).map(item).collect::<Vec<_>>().join(",")).into_bytes()
    }

    fn parsed(items: Vec<TransferParams>) -> Vec<NewTransfer> {
        items.into_iter().enumerate().map(|(i, p)| new_transfer(p, TransferId(i as u128), Some(i)).unwrap()).collect()
    }

    fn one_pass(body: &[u8]) -> Option<Vec<NewTransfer>> {
        json::parse_valid::<BulkTransfers>(body).map(|b| parsed(b.transfers))
    }

    const ACCOUNT: &str = "acct_01j9z6m5v8k3q2w1x0y9z8a7b6";

    fn move_item(i: usize) -> String {
        format!(
            r#"{{"id":"tr_{:026}","debit_account":"{ACCOUNT}","credit_account":"acct_01j9z6m5v8k3q2w1x0y9z8a7b7","amount":{},"currency":"EUR","linked":{}}}"#,
            i,
            i + 1,
            i.is_multiple_of(3)
        )
    }

    /// A large body parsed in two halves gives the items of one pass, in order.
    #[test]
    fn a_large_body_parsed_in_halves_is_the_one_pass_parse() {
        let body = items(8189, move_item);
        assert!(body.len() >= SPLIT_PARSE_BYTES);
        assert!(plain::bulk(&body).is_some(), "the plain form is read by hand");
        let halves = parsed(parse_bulk(&body).unwrap());
        assert_eq!(halves.len(), 8189);
        assert_eq!(Some(halves), one_pass(&body));
        // Whitespace around the cut, and a body under the threshold.
        let spaced = String::from_utf8(body.clone()).unwrap().replace("},{", "} ,\n\t{");
        assert_eq!(parse_bulk(spaced.as_bytes()).map(parsed), one_pass(&body));
        let small = items(10, move_item);
        assert_eq!(parse_bulk(&small).map(parsed), one_pass(&small));
    }

    /// A body that does not parse in one pass does not parse in halves, wherever the cut
    /// falls: in a string, in the second half's items, after the array.
    #[test]
    fn a_large_body_that_does_not_parse_does_not_parse_in_halves() {
        let half = 4000;
        let bad_amount = items(8189, |i| {
            if i == 6000 {
                move_item(i).replace(r#""amount":6001"#, r#""amount":1.5"#)
            } else {
                move_item(i)
            }
        });
        let unknown_key =
            items(8189, |i| if i == 7000 { move_item(i).replace("linked", "linkd") } else { move_item(i) });
        // `},{` inside a string around the middle: the first comma found is not a boundary.
        let in_string = items(8189, |i| {
            if (half..half + 200).contains(&i) {
                move_item(i).replace(r#""EUR""#, r#""},{""#)
            } else {
                move_item(i)
            }
        });
        let mut trailing_key = items(8189, move_item);
        trailing_key.truncate(trailing_key.len() - 1);
        trailing_key.extend_from_slice(br#","transfers":[]}"#);
        let mut trailing_text = items(8189, move_item);
        trailing_text.extend_from_slice(b" x");
        for body in [bad_amount, unknown_key, trailing_key, trailing_text] {
            assert!(one_pass(&body).is_none());
            assert!(parse_bulk(&body).is_none());
        }
        // A currency that is not one parses (its error comes after). Cut at the comma in
        // the string, the halves do not parse; cut between items, they are the one pass.
        let in_item = |i: usize| {
            let text = String::from_utf8_lossy(&in_string).into_owned();
            let item = text.match_indices(r#"{"id":"#).nth(i).unwrap().0;
            item + text[item..].find(r#""},{""#).unwrap() + 2
        };
        assert_eq!(in_string[in_item(half)], b',');
        assert!(parse_halves(&in_string, in_item(half)).is_none());
        let between = item_boundary(&in_string, in_item(half) + 1).unwrap();
        let from_halves = parse_halves(&in_string, between).unwrap();
        let from_one_pass = json::parse_valid::<BulkTransfers>(&in_string).unwrap().transfers;
        assert_eq!(from_halves.len(), from_one_pass.len());
        for (a, b) in from_halves.iter().zip(&from_one_pass) {
            assert_eq!((&a.currency, a.amount, a.linked), (&b.currency, b.amount, b.linked));
        }
        assert_eq!(from_halves[half].currency, Some(CurrencyText::Unknown("},{".to_owned())));
        assert_eq!(parse_bulk(&in_string).unwrap().len(), 8189);
    }

    /// A large plain body is read in place as two slices, the first with the head and the
    /// second with the tail, and that is the one-pass parse; a half that is not plain (an
    /// escape in the second half) goes to serde in halves, with the same items.
    #[test]
    fn a_plain_body_is_read_in_halves_in_place_and_any_other_through_serde() {
        let body = items(8189, move_item);
        let cut = item_boundary(&body, body.len() / 2).unwrap();
        let first = plain::part(&body[..cut], plain::Part::First).unwrap();
        let second = plain::part(&body[cut + 1..], plain::Part::Last).unwrap();
        assert_eq!(first.len() + second.len(), 8189);
        assert_eq!(Some(parsed(first.into_iter().chain(second).collect())), one_pass(&body));
        // The slices are parts, not bodies: the first has no tail, the last no head.
        assert_eq!(plain::part(&body[..cut], plain::Part::Whole), None);
        assert_eq!(plain::part(&body[cut + 1..], plain::Part::First), None);
        assert_eq!(plain::part(&body[..cut], plain::Part::Last), None);
        assert_eq!(plain::part(&body, plain::Part::First), None, "a first part ends at the cut, not after the array");

        let escaped =
            items(8189, |i| if i == 7000 { move_item(i).replace(r#""EUR""#, r#""E\u0055R""#) } else { move_item(i) });
        let cut = item_boundary(&escaped, escaped.len() / 2).unwrap();
        assert!(plain::part(&escaped[cut + 1..], plain::Part::Last).is_none());
        let halves = parse_halves(&escaped, cut).map(parsed);
        assert_eq!(halves.as_ref().map(Vec::len), Some(8189));
        assert_eq!(halves, one_pass(&escaped));
    }

    /// A body that is not UTF-8 is not the plain form, and is refused in halves as in one pass.
    #[test]
    fn a_body_that_is_not_utf8_is_left_to_serde() {
        let mut body = items(8189, move_item);
        let at = body.len() / 4;
        let quote = at + body[at..].iter().position(|&b| b == b'E').unwrap();
        body[quote] = 0xff;
        assert_eq!(plain::bulk(&body), None);
        assert!(one_pass(&body).is_none());
        assert!(parse_bulk(&body).is_none());
    }

    /// The plain form is read by hand into what serde reads; every other body is left to
    /// serde (`None`), valid or not.
    #[test]
    fn the_plain_reader_reads_what_serde_reads_or_leaves_the_body_to_it() {
        let serde = |body: &str| json::parse_valid::<BulkTransfers>(body.as_bytes()).map(|b| b.transfers);
        let plain = |body: &str| plain::bulk(body.as_bytes());
        let hold = format!(
            r#"{{"id":"tr_01aaaaaaaaaaaaaaaaaaaaaaaa","debit_account":"{ACCOUNT}","credit_account":"acct_01j9z6m5v8k3q2w1x0y9z8a7b7","amount":9223372036854775807,"currency":"JPY","pending":true,"timeout_seconds":31622400,"linked":false}}"#
        );
        let read_by_hand = [
            items(3, move_item),
            format!(r#" {{ "transfers" : [ {hold} , {{"post_pending_id":"tr_01aaaaaaaaaaaaaaaaaaaaaaaa","amount":1}},{{"void_pending_id":"TR_01AAAAAAAAAAAAAAAAAAAAAAAA"}},{{}},{{"currency":"XYZ","amount":5}}] }}"#)
                .replace("TR_", "tr_")
                .into_bytes(),
            format!("{{\n\t\"transfers\":\r\n[{hold}]}}\n").into_bytes(),
        ];
        for body in &read_by_hand {
            let body = std::str::from_utf8(body).unwrap();
            assert!(plain(body).is_some(), "{body}");
            assert_eq!(plain(body), serde(body), "{body}");
        }
        let item = move_item(0);
        let left_to_serde = [
            r#"{"transfers":[]}"#.to_owned(),
            format!(r#"{{"transfers":[{item}],"transfers":[{item}]}}"#),
            format!(r#"{{"transfers":[{item}]}} x"#),
            format!(r#"{{"transfers":[{item},]}}"#),
            format!(r#"{{"transfers":[{}]}}"#, item.replace(r#""amount":1"#, r#""amount":01"#)),
            format!(r#"{{"transfers":[{}]}}"#, item.replace(r#""amount":1"#, r#""amount":1.0"#)),
            format!(r#"{{"transfers":[{}]}}"#, item.replace(r#""amount":1"#, r#""amount":-1"#)),
            format!(r#"{{"transfers":[{}]}}"#, item.replace(r#""amount":1"#, r#""amount":1e2"#)),
            format!(r#"{{"transfers":[{}]}}"#, item.replace(r#""amount":1"#, r#""amount":18446744073709551616"#)),
            format!(r#"{{"transfers":[{}]}}"#, item.replace(r#""amount":1"#, r#""amount":null"#)),
            format!(r#"{{"transfers":[{}]}}"#, item.replace(r#""amount":1"#, r#""amount":1,"amount":2"#)),
            format!(r#"{{"transfers":[{}]}}"#, item.replace(r#""currency":"EUR""#, r#""currency":"E\u0055R""#)),
            format!(r#"{{"transfers":[{}]}}"#, item.replace(r#""currency":"EUR""#, r#""curr\u0065ncy":"EUR""#)),
            format!(r#"{{"transfers":[{}]}}"#, item.replace(r#""currency":"EUR""#, r#""currency":"EUR","memo":"x""#)),
            format!(r#"{{"transfers":[{}]}}"#, item.replace(r#""linked":true"#, r#""linked":1"#)),
            format!(r#"{{"transfers":[{}]}}"#, item.replace(r#""linked":true"#, r#""linked":null"#)),
            format!(r#"{{"transfers":[{}]}}"#, item.replace(r#""linked":true"#, r#""linked":truex"#)),
            format!(r#"{{"transfers":[{}]}}"#, item.replace(ACCOUNT, "pay_01j9z6m5v8k3q2w1x0y9z8a7b6")),
            format!(r#"{{"transfers":[{}]}}"#, item.replace(ACCOUNT, r"acct_01j9z6m5v8k3q2w1x0y9z8a7b\u0036")),
            format!(r#"{{"transfers":[{}]}}"#, item.replace(r#""EUR""#, "\"EU\tR\"")),
            format!(r#"{{"transfers":[{}]}}"#, item.replace(r#""EUR""#, r#""€""#)),
            format!(r#"{{"transfers":[{item}]"#),
            format!(r#"{{"transfers":[{item}"#),
            format!(r#"{{"transfers":{item}}}"#),
        ];
        for body in &left_to_serde {
            assert_eq!(plain(body), None, "{body}");
        }
        // Of those, serde reads some (a key spelled with an escape, a currency with a
        // character the plain form leaves out): what it reads is what the request gets.
        assert_eq!(serde(&left_to_serde[12]).map(|items| items.len()), Some(1));
    }

    /// The hand-written answer is byte for byte what serde writes of the same results, for
    /// every result code and for indexes of every width.
    #[test]
    fn bulk_body_is_the_serde_rendering() {
        let codes: Vec<ResultCode> = ResultCode::ALL.iter().copied().cycle().take(10_050).collect();
        let ids: Vec<TransferId> = (0..codes.len() as u128)
            .map(|i| TransferId(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)))
            .collect();
        let expected = TransferResultsJson {
            object: "list".to_owned(),
            data: ids
                .iter()
                .zip(&codes)
                .enumerate()
                .map(|(index, (id, code))| TransferResultJson {
                    index,
                    id: Some(id.to_string()),
                    result: code.as_str().to_owned(),
                })
                .collect(),
        };
        let (_, serde_body) = render::json(200, &expected);
        assert_eq!(String::from_utf8(bulk_body(&ids, &codes)).unwrap(), String::from_utf8(serde_body).unwrap());
        assert_eq!(
            bulk_body(&ids[..1], &codes[..1]),
            br#"{"object":"list","data":[{"index":0,"id":"tr_00000000000000000000000000","result":"ok"}]}"#
        );
    }
}
