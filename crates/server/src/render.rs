//! The JSON the API answers with, and [`Renderer::render`]: the one function that turns a ledger
//! outcome into a status and a body. The handlers and the engine (which saves the response of a
//! request with an `Idempotency-Key` in the same commit as its effect) both call it, so a first
//! answer and its replay are byte-identical.

use crate::error::ApiError;
use paycore_ledger::{
    format_amount, Account, AuditRecord, ClearingWindow, Currency, Limits, Outcome, Overdraft, Payment, Refund,
    ResultCode, Transfer,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Balances of an account, in minor units.
#[derive(Serialize, ToSchema)]
pub struct BalanceJson {
    /// Posted credits minus posted debits: money received is positive.
    pub posted: i64,
    /// Held for outgoing pending transfers.
    pub pending_debits: u64,
    /// Held for incoming pending transfers.
    pub pending_credits: u64,
    /// Posted − pending debits + overdraft limit; absent for an unlimited account.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>)]
    pub available: Option<i128>,
}

/// The word `"unlimited"`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unlimited {
    Unlimited,
}

/// How far below zero an account may go: a number of minor units, or `"unlimited"`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum OverdraftJson {
    Limit(u64),
    Unlimited(Unlimited),
}

/// The word `"account"`, `"transfer"`, … naming the kind of an object.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Account,
    Transfer,
    Payment,
    Refund,
    List,
    FxRate,
    FxQuote,
    AccountAuditEntry,
    ClearingWindow,
}

/// At most `count` debits in any `window_seconds`.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct VelocityJson {
    /// 1 to 10 000.
    pub count: u64,
    /// 1 to 86 400 (a day).
    pub window_seconds: u64,
}

/// An account's risk limits; null is no limit. Every debit counts (transfers, holds when
/// placed, payments, refunds paid by the account, batch items).
#[derive(Serialize, ToSchema)]
pub struct LimitsJson {
    /// The largest single debit, in minor units.
    pub max_payment: Option<u64>,
    /// The most debited per UTC day, in minor units.
    pub daily_outflow: Option<u64>,
    /// The most debits in a rolling window.
    pub velocity: Option<VelocityJson>,
}

impl LimitsJson {
    pub fn new(limits: &Limits) -> LimitsJson {
        LimitsJson {
            max_payment: limits.max_payment,
            daily_outflow: limits.daily_outflow,
            velocity: limits
                .velocity
                .map(|v| VelocityJson { count: u64::from(v.count), window_seconds: v.window_seconds }),
        }
    }
}

/// One change of an account's status or limits.
#[derive(Serialize, ToSchema)]
pub struct AuditEntryJson {
    pub object: ObjectKind,
    /// The account (`acct_…`).
    pub account: String,
    /// The id of the API key that made the change (`key_…`).
    pub actor: String,
    /// When the ledger applied it (RFC 3339, UTC, nanoseconds): also the cursor of the list.
    pub created_at: String,
    /// The changed fields before the change, as in the `PATCH` body (`{"status":"active"}`).
    #[schema(value_type = Object)]
    pub before: serde_json::Value,
    /// The same fields after it.
    #[schema(value_type = Object)]
    pub after: serde_json::Value,
}

impl AuditEntryJson {
    pub fn new(record: &AuditRecord) -> AuditEntryJson {
        let object = |text: &str| serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
        AuditEntryJson {
            object: ObjectKind::AccountAuditEntry,
            account: record.account.to_string(),
            actor: record.actor.clone(),
            created_at: rfc3339(record.at),
            before: object(&record.before),
            after: object(&record.after),
        }
    }
}

/// A ledger account.
#[derive(Serialize, ToSchema)]
pub struct AccountJson {
    /// `acct_…`
    pub id: String,
    pub object: ObjectKind,
    /// ISO 4217 code.
    pub currency: &'static str,
    pub overdraft_limit: OverdraftJson,
    pub reference: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub balance: BalanceJson,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// `active`, `frozen` (credits only) or `closed` (nothing).
    pub status: &'static str,
    pub limits: LimitsJson,
}

impl AccountJson {
    pub fn new(account: &Account) -> AccountJson {
        let b = account.balances;
        AccountJson {
            id: account.id.to_string(),
            object: ObjectKind::Account,
            currency: account.currency.code(),
            overdraft_limit: match account.overdraft {
                Overdraft::Limit(limit) => OverdraftJson::Limit(limit),
                Overdraft::Unlimited => OverdraftJson::Unlimited(Unlimited::Unlimited),
            },
            reference: account.reference.clone(),
            metadata: account.metadata.as_deref().and_then(|m| serde_json::from_str(m).ok()).unwrap_or_default(),
            balance: BalanceJson {
                posted: b.posted(),
                pending_debits: b.debits_pending,
                pending_credits: b.credits_pending,
                available: b.available(account.overdraft),
            },
            created_at: rfc3339(account.created_at),
            status: account.status.as_str(),
            limits: LimitsJson::new(&account.limits),
        }
    }
}

/// A transfer: an immutable movement between two accounts.
#[derive(Serialize, ToSchema)]
pub struct TransferJson {
    /// `tr_…`
    pub id: String,
    pub object: ObjectKind,
    /// `single`, `pending`, `post_pending`, `void_pending` or `expire_pending`.
    pub kind: &'static str,
    pub debit_account: String,
    pub credit_account: String,
    /// For a post, the amount posted; for a void or an expiry, the amount released.
    pub amount: u64,
    pub currency: &'static str,
    /// The hold that a post, void or expiry resolves.
    pub pending_id: Option<String>,
    /// When a hold expires unless posted or voided first.
    pub expires_at: Option<String>,
    pub created_at: String,
    /// On `POST /v1/transfers` only: `ok`, or `exists` for a retry of a transfer with the same id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<&'static str>,
}

impl TransferJson {
    pub fn new(t: &Transfer, result: Option<ResultCode>) -> TransferJson {
        TransferJson {
            id: t.id.to_string(),
            object: ObjectKind::Transfer,
            kind: t.kind.as_str(),
            debit_account: t.debit_account.to_string(),
            credit_account: t.credit_account.to_string(),
            amount: t.amount,
            currency: t.currency.code(),
            pending_id: t.pending_id.map(|id| id.to_string()),
            expires_at: t.expires_at.map(rfc3339),
            created_at: rfc3339(t.timestamp),
            result: result.map(ResultCode::as_str),
        }
    }
}

/// A real-time payment order.
#[derive(Serialize, ToSchema)]
pub struct PaymentJson {
    /// `pay_…`
    pub id: String,
    pub object: ObjectKind,
    /// `requires_confirmation`, `requires_capture`, `succeeded`, `failed`, `cancelled` or `expired`.
    pub status: &'static str,
    /// `null` until a scan names the payer (a payment made without one: scan to pay).
    pub payer_account: Option<String>,
    pub payee_account: String,
    pub amount: u64,
    pub currency: &'static str,
    /// `automatic` or `manual`.
    pub capture_method: &'static str,
    pub description: Option<String>,
    /// Why confirmation failed, such as `insufficient_funds`.
    pub failure_code: Option<&'static str>,
    pub amount_captured: u64,
    pub amount_refunded: u64,
    /// Confirmation (and for manual capture, the capture) must happen before this instant.
    pub expires_at: String,
    pub created_at: String,
    pub updated_at: String,
    /// A cross-currency payment's quoted side; absent for a payment in one currency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fx: Option<PaymentFxJson>,
    /// While the payment requires confirmation: its EMVCo merchant-presented QR payload (the
    /// text of `GET /v1/payments/{id}/qr`), which a payer's app scans and sends to
    /// `POST /v1/payments/scan`. `null` in any other status.
    pub qr_payload: Option<String>,
}

/// The quoted side of a cross-currency payment: `amount` and `currency` are what the payer
/// pays; the payee receives `target_amount` in `target_currency`; `fee` is charged on top, in
/// `currency`.
#[derive(Serialize, ToSchema)]
pub struct PaymentFxJson {
    /// `fxq_…`
    pub quote: String,
    /// Units of `target_currency` per unit of `currency`, as a decimal string.
    pub rate: String,
    pub target_currency: &'static str,
    pub target_amount: u64,
    pub fee: u64,
}

impl PaymentJson {
    pub fn new(p: &Payment) -> PaymentJson {
        PaymentJson {
            id: p.id.to_string(),
            object: ObjectKind::Payment,
            status: p.status.as_str(),
            payer_account: p.payer.map(|a| a.to_string()),
            payee_account: p.payee.to_string(),
            amount: p.amount,
            currency: p.currency.code(),
            capture_method: p.capture_method.as_str(),
            description: p.description.clone(),
            failure_code: p.failure_code.map(ResultCode::as_str),
            amount_captured: p.amount_captured,
            amount_refunded: p.amount_refunded,
            expires_at: rfc3339(p.expires_at),
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
            fx: p.fx.as_ref().map(|fx| PaymentFxJson {
                quote: fx.quote.to_string(),
                rate: fx.rate.to_string(),
                target_currency: fx.target_currency.code(),
                target_amount: fx.target_amount,
                fee: fx.fee,
            }),
            qr_payload: crate::qr::payload(p),
        }
    }
}

/// A refund of (part of) a payment.
#[derive(Serialize, ToSchema)]
pub struct RefundJson {
    /// `re_…`
    pub id: String,
    pub object: ObjectKind,
    /// The payment refunded.
    pub payment: String,
    pub amount: u64,
    pub currency: &'static str,
    /// `succeeded` or `failed`.
    pub status: &'static str,
    /// Why the refund failed, such as `insufficient_funds` on the payee.
    pub failure_code: Option<&'static str>,
    pub created_at: String,
    /// The free text given with the refund (the API's `reason`, a refunds file's column).
    pub reason: Option<String>,
}

impl RefundJson {
    pub fn new(r: &Refund) -> RefundJson {
        RefundJson {
            id: r.id.to_string(),
            object: ObjectKind::Refund,
            payment: r.payment.to_string(),
            amount: r.amount,
            currency: r.currency.code(),
            status: r.status.as_str(),
            failure_code: r.failure_code.map(ResultCode::as_str),
            created_at: rfc3339(r.created_at),
            reason: r.reason.clone(),
        }
    }
}

/// One account's position in a closed clearing window, in minor units. Balances are posted
/// balances (credits − debits: money received is positive).
#[derive(Serialize, ToSchema)]
pub struct ClearingPositionJson {
    /// `acct_…`
    pub account: String,
    /// The posted balance when the window opened.
    pub opening: i64,
    /// The posted amounts the account paid in the window.
    pub debits: u64,
    /// The posted amounts the account received in the window.
    pub credits: u64,
    /// Credits − debits.
    pub net: i64,
    /// The posted balance when the window closed: opening + net.
    pub closing: i64,
}

/// A closed clearing (settlement) window of one currency: every posted transfer (a single
/// transfer, or the post of a hold at the amount posted) with `opened_at < time <= closed_at`,
/// netted per account.
#[derive(Serialize, ToSchema)]
pub struct ClearingWindowJson {
    /// `cw_…`
    pub id: String,
    pub object: ObjectKind,
    /// ISO 4217 code.
    pub currency: &'static str,
    /// 1 for the first window of this currency, then 2, 3, …
    pub sequence: u64,
    /// RFC 3339, UTC: when the previous window closed; null for the first window (it opened at
    /// the beginning of the ledger).
    pub opened_at: Option<String>,
    /// RFC 3339, UTC: the instant of the close on the ledger's clock.
    pub closed_at: String,
    /// Σ debits over the positions: every posted transfer of the window counted once.
    pub gross_volume: u64,
    /// Σ net over the positions: always 0.
    pub net_total: i64,
    /// The number of positions (accounts that moved posted money in the window).
    pub account_count: u64,
    /// In account id order. Absent in listings: get the window for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub positions: Option<Vec<ClearingPositionJson>>,
}

impl ClearingWindowJson {
    /// The window with its positions, or (`accounts` given: a listing) without them.
    pub fn new(w: &ClearingWindow, accounts: Option<u64>) -> ClearingWindowJson {
        let positions = w.positions.iter().map(|p| ClearingPositionJson {
            account: p.account.to_string(),
            opening: p.opening,
            debits: p.debits,
            credits: p.credits,
            net: p.net,
            closing: p.closing,
        });
        let net_total = w.positions.iter().map(|p| i128::from(p.net)).sum::<i128>();
        ClearingWindowJson {
            id: w.id.to_string(),
            object: ObjectKind::ClearingWindow,
            currency: w.currency.code(),
            sequence: w.sequence,
            opened_at: (w.opened_at > 0).then(|| rfc3339(w.opened_at)),
            closed_at: rfc3339(w.closed_at),
            gross_volume: w.gross_volume,
            net_total: i64::try_from(net_total).unwrap_or(i64::MAX),
            account_count: accounts.unwrap_or_else(|| u64::try_from(w.positions.len()).unwrap_or(u64::MAX)),
            positions: accounts.is_none().then(|| positions.collect()),
        }
    }
}

/// A page of objects, newest first for transfers, oldest first for refunds.
#[derive(Serialize, ToSchema)]
pub struct ListJson<T> {
    pub object: ObjectKind,
    pub data: Vec<T>,
    pub has_more: bool,
    /// Pass as `starting_after` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> ListJson<T> {
    /// One page of a listing from `rows`, read with one row more than `limit` asked for: that
    /// extra row only says there is a next page. The cursor is the last shown row's.
    pub fn page<R>(mut rows: Vec<R>, limit: usize, cursor: impl Fn(&R) -> String, item: impl Fn(&R) -> T) -> Self {
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        ListJson {
            object: ObjectKind::List,
            next_cursor: if has_more { rows.last().map(cursor) } else { None },
            data: rows.iter().map(item).collect(),
            has_more,
        }
    }
}

/// The result of one item of a bulk transfer request.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TransferResultJson {
    /// Position of the item in the request.
    pub index: usize,
    /// The transfer's id (given by the client, or made by the server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `ok`, `exists`, or why the transfer was not applied (`insufficient_funds`,
    /// `linked_event_failed`, …).
    pub result: String,
}

/// The answer to a bulk transfer request: one result per item, in order.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TransferResultsJson {
    pub object: String,
    pub data: Vec<TransferResultJson>,
}

/// Renders outcomes. Deterministic: the same outcome always gives the same bytes.
#[derive(Default)]
pub struct Renderer;

impl Renderer {
    /// The status and JSON body for an outcome.
    ///
    /// Transfers, one or many, render as `{"object":"list","data":[{"index","result"}…]}`:
    /// the form saved with an idempotency key, which the transfer handler completes with the
    /// ids of the request and, for a single transfer, the stored transfer (see
    /// `routes::transfers`).
    pub fn render(&self, outcome: &Outcome) -> (u16, Vec<u8>) {
        match outcome {
            Outcome::Account(Ok(account)) => json(201, &AccountJson::new(account)),
            Outcome::Payment(Ok(payment)) => {
                let status = if payment.status == paycore_ledger::PaymentStatus::RequiresConfirmation
                    && payment.created_at == payment.updated_at
                {
                    201
                } else {
                    200
                };
                json(status, &PaymentJson::new(payment))
            }
            Outcome::Refund(Ok((refund, _))) => json(201, &RefundJson::new(refund)),
            // A limit's details are the saved form too, so that a replay gives them again.
            Outcome::Transfer { limit: Some(breach), .. } => {
                let error = ApiError::from_breach(*breach);
                (error.status.as_u16(), error.body())
            }
            Outcome::Transfer { code, .. } => json(200, &transfer_results(&[*code])),
            Outcome::AccountUpdated(Ok(account)) => json(200, &AccountJson::new(account)),
            Outcome::AccountUpdated(Err(e)) => {
                let error = account_update_error(e);
                (error.status.as_u16(), error.body())
            }
            Outcome::Transfers(codes) => json(200, &transfer_results(codes)),
            // Batches are not run through the real-time API; their outcome carries nothing.
            Outcome::BatchEnded => (200, b"{}".to_vec()),
            Outcome::ClearingWindow(Ok(window)) => json(201, &ClearingWindowJson::new(window, None)),
            Outcome::Account(Err(e))
            | Outcome::Payment(Err(e))
            | Outcome::Refund(Err(e))
            | Outcome::ClearingWindow(Err(e)) => {
                let error = ApiError::from_command(e);
                (error.status.as_u16(), error.body())
            }
        }
    }
}

/// The error an outcome is (a refused command), if it is one.
pub fn outcome_error(outcome: &Outcome) -> Option<ApiError> {
    match outcome {
        Outcome::Account(Err(e))
        | Outcome::Payment(Err(e))
        | Outcome::Refund(Err(e))
        | Outcome::ClearingWindow(Err(e)) => Some(ApiError::from_command(e)),
        Outcome::AccountUpdated(Err(e)) => Some(account_update_error(e)),
        _ => None,
    }
}

/// A refused `PATCH /v1/accounts/{id}`: an account that is not the tenant's is missing (404).
fn account_update_error(error: &paycore_ledger::CommandError) -> ApiError {
    match error {
        paycore_ledger::CommandError::AccountNotFound { .. } => ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            crate::error::ErrorType::InvalidRequestError,
            "resource_missing",
            "No such account.",
        )
        .param("id"),
        other => ApiError::from_command(other),
    }
}

/// The bulk result list for these codes, without ids.
pub fn transfer_results(codes: &[ResultCode]) -> TransferResultsJson {
    TransferResultsJson {
        object: "list".to_owned(),
        data: codes
            .iter()
            .enumerate()
            .map(|(index, code)| TransferResultJson { index, id: None, result: code.as_str().to_owned() })
            .collect(),
    }
}

/// Serializes a response body. Serializing these types cannot fail; if it ever did, the
/// answer is an empty body rather than a panic.
pub fn json<T: Serialize>(status: u16, value: &T) -> (u16, Vec<u8>) {
    // Room for a transfer or a payment (300 to 500 bytes) at once; `to_vec` starts at 128
    // bytes and copies the body twice growing it.
    let mut body = Vec::with_capacity(512);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => (status, body),
        Err(_) => (status, Vec::new()),
    }
}

/// Formats nanoseconds since the Unix epoch as RFC 3339 in UTC with nanoseconds:
/// `2024-05-01T12:34:56.123456789Z`.
pub fn rfc3339(nanos: u64) -> String {
    let seconds = nanos / 1_000_000_000;
    let fraction = nanos % 1_000_000_000;
    let days = seconds / 86_400;
    let in_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    // By hand rather than `format!`: every object the API answers with carries one to three
    // timestamps. The largest `nanos` is in the year 2554, so the year has 4 digits.
    let mut text = *b"0000-00-00T00:00:00.000000000Z";
    put_digits(&mut text[0..4], year);
    put_digits(&mut text[5..7], month);
    put_digits(&mut text[8..10], day);
    put_digits(&mut text[11..13], in_day / 3600);
    put_digits(&mut text[14..16], in_day % 3600 / 60);
    put_digits(&mut text[17..19], in_day % 60);
    put_digits(&mut text[20..29], fraction);
    // Only ASCII digits were written, so this borrows and never replaces anything.
    String::from_utf8_lossy(&text).into_owned()
}

/// Writes the last `out.len()` decimal digits of `value` into `out`, zero-padded.
fn put_digits(out: &mut [u8], mut value: u64) {
    for byte in out.iter_mut().rev() {
        *byte = b'0' + u8::try_from(value % 10).unwrap_or(0);
        value /= 10;
    }
}

/// Year, month and day of a count of days since 1970-01-01 (Howard Hinnant's algorithm, for
/// dates after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A sum of many amounts may pass `u64`: format it digit by digit.
pub fn format_total(sum: u128, currency: Currency) -> String {
    match u64::try_from(sum) {
        Ok(sum) => format_amount(sum, currency),
        Err(_) => {
            let units = usize::from(currency.minor_units());
            let digits = sum.to_string();
            if units == 0 {
                return digits;
            }
            let (whole, fraction) = digits.split_at(digits.len() - units);
            format!("{whole}.{fraction}")
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400_000_000_001), "2000-02-29T00:00:00.000000001Z");
        assert_eq!(rfc3339(1_714_566_896_123_456_789), "2024-05-01T12:34:56.123456789Z");
        assert_eq!(rfc3339(u64::MAX), "2554-07-21T23:34:33.709551615Z");
        for nanos in [1, 999_999_999, 1_000_000_000, 86_399_999_999_999, 4_102_444_800_000_000_000] {
            let seconds = nanos / 1_000_000_000;
            let (year, month, day) = civil_from_days(seconds / 86_400);
            let in_day = seconds % 86_400;
            let expected = format!(
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
                in_day / 3600,
                in_day % 3600 / 60,
                in_day % 60,
                nanos % 1_000_000_000
            );
            assert_eq!(rfc3339(nanos), expected);
        }
    }
}
