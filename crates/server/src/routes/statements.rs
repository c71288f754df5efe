//! `GET /v1/accounts/{id}/statement`: an account statement for a period, as JSON, CSV or
//! ISO 20022 camt.053.001.08, streamed.
//!
//! What a statement holds, and where it comes from:
//! - **Booked entries only**: the account's transfers that moved posted money (single
//!   transfers and posts of holds), oldest first. Holds, voids and expiries move no booked
//!   money and are not entries.
//! - **The period** is `from` (included) to `to`: a `YYYY-MM-DD` date is a UTC day (`from` at
//!   its start, `to` through its end), an RFC 3339 instant is that instant (both included).
//!   `from` defaults to the account's opening, `to` to now; a `to` in the future is now (a
//!   statement never states what has not happened).
//! - **Opening balance** (`OPBD`): credits minus debits of the booked entries before `from`;
//!   **closing** (`CLBD`): the opening plus the period's entries. A first pass computes them,
//!   reading the shorter side of `from` in time: for a period late in the account's life (a
//!   recent day of an old account), the account's posted balance less what moved from `from`
//!   to now, so the read is bounded by the time since `from`; for an early one, the history
//!   from the opening up to `to`. The first pass also fixes the entries the statement holds:
//!   every transfer committed after it has a timestamp above all it read (the engine commits
//!   whole batches in execution order, each with the balances it moves), so the second pass,
//!   which writes the entries, stops at the last timestamp of the period that the first read
//!   and finds exactly the entries it summed. The writers check opening + Σ entries = closing
//!   before they close the document.
//! - **Identifiers**: `Stmt/Id` and `MsgId` are `S` and the period's bounds to the second
//!   (`S20261201000000-20261201235959`), the same for every download of the same period;
//!   `ElctrncSeqNb` is the number of UTC days from the account's opening day to the period's
//!   last day, plus one (a daily statement's sequence 1, 2, 3, …); `CreDtTm` is the time of
//!   the request. An `AcctSvcrRef` is the transfer id; the `EndToEndId` is the `reference` of
//!   the batch item that the transfer paid (a pain.001 `EndToEndId`, a CSV `reference`, a
//!   NACHA trace number: `BatchStore::item_references`), else `NOTPROVIDED`; `RmtInf/Ustrd`
//!   is the item's remittance information (pain.001 `RmtInf/Ustrd`), where it had one.
//! - The account is identified by its IBAN when its `reference` is a valid one, else by its
//!   id (`Othr/Id`).

use super::batches::query_error;
use super::batches::report::{ChannelWriter, CHANNEL_CHUNK};
use super::{path_id, read};
use crate::auth::Auth;
use crate::error::{ApiError, ErrorBody};
use crate::ids::now_ns;
use crate::render::rfc3339;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use paycore_formats::{
    check_iban, Camt053Writer, CsvStatementWriter, EntryTotals, JsonStatementWriter, StatementBalance, StatementEntry,
    StatementHeader, StatementWriter,
};
use paycore_ledger::{Account, AccountId, TenantId, Transfer, TransferKind};
use paycore_store::{BatchStore, Reader};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;

/// Transfers read from the store per step: bounds the memory of any statement.
const STATEMENT_PAGE: usize = 2048;
const NANOS_PER_SECOND: u64 = 1_000_000_000;
const NANOS_PER_DAY: u64 = 86_400 * NANOS_PER_SECOND;

/// Which statement.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatementQuery {
    /// The period's start, included: `YYYY-MM-DD` (the start of that UTC day) or an RFC 3339
    /// instant. Default: the account's opening.
    pub from: Option<String>,
    /// The period's end, included: `YYYY-MM-DD` (through the end of that UTC day) or an RFC
    /// 3339 instant. Default, and at most: now.
    pub to: Option<String>,
    /// `json` (default), `csv` or `camt.053` (ISO 20022 camt.053.001.08).
    pub format: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
    Camt053,
}

/// `GET /v1/accounts/{id}/statement`
#[utoipa::path(get, path = "/v1/accounts/{id}/statement", tag = "accounts",
    params(("id" = String, Path, description = "`acct_…`"), StatementQuery),
    responses(
        (status = 200, description = "The statement, streamed: JSON (`application/json`), CSV (`type,booked_at,transfer,counterparty,credit_debit,amount,currency,balance,end_to_end_id,remittance_information`) or camt.053.001.08 XML (`application/xml`)", content(
            (String = "application/json"),
            (String = "text/csv"),
            (String = "application/xml"),
        )),
        (status = 400, description = "`parameter_invalid` naming `from`, `to` or `format`", body = ErrorBody),
        (status = 404, description = "`resource_missing`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn statement(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
    query: Result<Query<StatementQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(query_error)?;
    let format = match query.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        Some("camt.053") | Some("camt.053.001.08") => Format::Camt053,
        Some(_) => return Err(ApiError::invalid("format", "`format` must be json, csv or camt.053.")),
    };
    let from = query.from.as_deref().map(|text| parse_bound(text, Bound::From)).transpose()?;
    let to = query.to.as_deref().map(|text| parse_bound(text, Bound::To)).transpose()?;
    let account_id: AccountId = path_id(&id, "account")?;
    let tenant = auth.tenant;
    let now = now_ns();
    let account = read(&state, move |r| r.account(tenant, account_id))
        .await?
        .ok_or_else(|| ApiError::not_found("account", &id))?;
    // The period as timestamps: `start..end`, end excluded.
    let start = from.unwrap_or(account.created_at);
    let end = to.unwrap_or(u64::MAX).min(now.saturating_add(1));
    if start > now {
        return Err(ApiError::invalid("from", "`from` must not be in the future."));
    }
    if end <= start {
        return Err(ApiError::invalid("to", "`to` must not be before `from` (or the account's opening)."));
    }
    let of = account.clone();
    let sums = read(&state, move |r| sums(r, tenant, &of, start, end, now)).await?;
    let header = statement_header(&account, start, end, now, &sums)
        .ok_or_else(|| ApiError::internal("The statement's totals overflow."))?;
    let (content_type, extension) = match format {
        Format::Json => ("application/json", "json"),
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::Camt053 => ("application/xml", "xml"),
    };
    let filename = format!("attachment; filename=\"{id}-statement.{extension}\"");
    let stores = (state.reader.clone(), state.batches.clone());
    let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    let entries_end = sums.last_seen.map_or(start, |last| last.saturating_add(1)).min(end);
    crate::request_id::spawn_blocking(move || {
        let out = ChannelWriter { sender: sender.clone(), buffer: Vec::with_capacity(CHANNEL_CHUNK) };
        let (reader, batches) = (stores.0.as_ref(), stores.1.as_ref());
        let written = write_statement(reader, batches, tenant, account_id, format, &header, start..entries_end, out);
        if let Err(error) = written {
            tracing::error!(%error, "statement failed part way");
            let _ = sender.blocking_send(Err(error));
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&filename) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// What the first pass over the account's history found.
#[derive(Debug, Default)]
struct Sums {
    /// Credits minus debits booked before the period.
    opening: i128,
    credits: EntryTotals,
    debits: EntryTotals,
    /// The last timestamp read: the entries of the statement are those up to it.
    last_seen: Option<u64>,
}

/// How a booked transfer moves the account: `Some((amount, credit))`, or `None` for a hold,
/// a void or an expiry (no booked money).
fn booked(transfer: &Transfer, account: AccountId) -> Option<(u64, bool)> {
    match transfer.kind {
        TransferKind::Single | TransferKind::PostPending => Some((transfer.amount, transfer.credit_account == account)),
        TransferKind::Pending | TransferKind::VoidPending | TransferKind::ExpirePending => None,
    }
}

/// How many times [`sums_from_balance`] reads the balance again while transfers keep landing
/// before it falls back to [`sums_from_opening`].
const BALANCE_TRIES: usize = 8;

/// The opening balance at `start` and the totals of `start..end`, reading whichever side of
/// `start` is the shorter span of time: for a period in the first half of the account's life,
/// its history from the opening ([`sums_from_opening`]); for a later one (the usual case: a
/// recent day of an old account), its current balance minus what moved from `start` on
/// ([`sums_from_balance`]), so the read is bounded by the time since `start`, not by the age
/// of the account.
fn sums(
    reader: &dyn Reader,
    tenant: TenantId,
    account: &Account,
    start: u64,
    end: u64,
    now: u64,
) -> paycore_store::Result<Sums> {
    let before = start.saturating_sub(account.created_at);
    if before > now.saturating_sub(start) {
        if let Some(sums) = sums_from_balance(reader, tenant, account.id, start, end)? {
            return Ok(sums);
        }
    }
    sums_from_opening(reader, tenant, account.id, start, end)
}

fn overflow(account: AccountId) -> paycore_store::StoreError {
    paycore_store::StoreError::Corrupt(format!("account {account}: booked totals overflow"))
}

/// Adds one transfer of `start..end` to the period's totals.
fn add_to_period(sums: &mut Sums, account: AccountId, transfer: &Transfer) -> paycore_store::Result<()> {
    sums.last_seen = Some(transfer.timestamp);
    let Some((amount, credit)) = booked(transfer, account) else { return Ok(()) };
    let totals = if credit { &mut sums.credits } else { &mut sums.debits };
    totals.add(amount).ok_or_else(|| overflow(account))?;
    Ok(())
}

/// The signed movement of a booked transfer (credits positive), 0 for the others.
fn movement(transfer: &Transfer, account: AccountId) -> i128 {
    match booked(transfer, account) {
        Some((amount, true)) => i128::from(amount),
        Some((amount, false)) => -i128::from(amount),
        None => 0,
    }
}

/// [`sums`] from the account's whole history, from its opening up to `end`.
fn sums_from_opening(
    reader: &dyn Reader,
    tenant: TenantId,
    account: AccountId,
    start: u64,
    end: u64,
) -> paycore_store::Result<Sums> {
    let mut sums = Sums::default();
    let mut from = 0;
    loop {
        let page = reader.account_transfers_between(tenant, account, from..end, STATEMENT_PAGE)?;
        for transfer in &page {
            if transfer.timestamp < start {
                sums.last_seen = Some(transfer.timestamp);
                sums.opening =
                    sums.opening.checked_add(movement(transfer, account)).ok_or_else(|| overflow(account))?;
            } else {
                add_to_period(&mut sums, account, transfer)?;
            }
        }
        match page.last() {
            Some(last) if page.len() == STATEMENT_PAGE => from = last.timestamp.saturating_add(1),
            _ => return Ok(sums),
        }
    }
}

/// [`sums`] from the account's posted balance, less what moved from `start` to now: the
/// transfers from `start` on are read (those of the period summed as entries, the later ones
/// only netted), then the balance, then whatever committed since the read; the balance is
/// taken when nothing did (every transfer commits with the balances it moves, at a timestamp
/// above all those committed before it). `None` when transfers kept landing
/// [`BALANCE_TRIES`] times.
fn sums_from_balance(
    reader: &dyn Reader,
    tenant: TenantId,
    account: AccountId,
    start: u64,
    end: u64,
) -> paycore_store::Result<Option<Sums>> {
    let mut sums = Sums::default();
    // Credits minus debits from `start` to the last transfer read.
    let mut since_start: i128 = 0;
    let mut from = start;
    for _ in 0..BALANCE_TRIES {
        loop {
            let page = reader.account_transfers_between(tenant, account, from..u64::MAX, STATEMENT_PAGE)?;
            for transfer in &page {
                since_start = since_start.checked_add(movement(transfer, account)).ok_or_else(|| overflow(account))?;
                if transfer.timestamp < end {
                    add_to_period(&mut sums, account, transfer)?;
                }
            }
            let Some(last) = page.last() else { break };
            from = last.timestamp.saturating_add(1);
            if page.len() < STATEMENT_PAGE {
                break;
            }
        }
        let Some(current) = reader.account(tenant, account)? else {
            return Err(paycore_store::StoreError::Corrupt(format!("account {account} is gone")));
        };
        if reader.account_transfers_between(tenant, account, from..u64::MAX, 1)?.is_empty() {
            let posted = i128::from(current.balances.posted());
            sums.opening = posted.checked_sub(since_start).ok_or_else(|| overflow(account))?;
            return Ok(Some(sums));
        }
    }
    Ok(None)
}

fn statement_header(account: &Account, start: u64, end: u64, now: u64, sums: &Sums) -> Option<StatementHeader> {
    let last = end.saturating_sub(1);
    let net = i128::try_from(sums.credits.sum).ok()?.checked_sub(i128::try_from(sums.debits.sum).ok()?)?;
    let closing = sums.opening.checked_add(net)?;
    let id = format!("S{}-{}", compact(start), compact(last));
    let sequence = (last / NANOS_PER_DAY).saturating_sub(account.created_at / NANOS_PER_DAY).saturating_add(1);
    let iban = account.reference.as_deref().filter(|r| check_iban(r).is_ok()).map(str::to_owned);
    Some(StatementHeader {
        message_id: id.clone(),
        statement_id: id,
        sequence,
        created_at: rfc3339(now),
        from: rfc3339(start),
        to: rfc3339(last),
        account_id: account.id.to_string(),
        iban,
        currency: account.currency,
        opening: StatementBalance { amount: sums.opening, date: date(start) },
        closing: StatementBalance { amount: closing, date: date(last) },
        credits: sums.credits,
        debits: sums.debits,
    })
}

/// The second pass: the entries of `range`, oldest first, a page at a time, each with the
/// end-to-end reference of the batch item that made it, if one did.
#[allow(clippy::too_many_arguments)]
fn write_statement(
    reader: &dyn Reader,
    batches: &dyn BatchStore,
    tenant: TenantId,
    account: AccountId,
    format: Format,
    header: &StatementHeader,
    range: std::ops::Range<u64>,
    out: ChannelWriter,
) -> std::io::Result<()> {
    let mut writer: Box<dyn StatementWriter> = match format {
        Format::Json => Box::new(JsonStatementWriter::begin(out, header)?),
        Format::Csv => Box::new(CsvStatementWriter::begin(out, header)?),
        Format::Camt053 => Box::new(Camt053Writer::begin(out, header)?),
    };
    let mut from = range.start;
    while from < range.end {
        let page = reader
            .account_transfers_between(tenant, account, from..range.end, STATEMENT_PAGE)
            .map_err(std::io::Error::other)?;
        let entries: Vec<Transfer> = page.iter().filter(|t| booked(t, account).is_some()).cloned().collect();
        let references = batches.item_references(tenant, &entries).map_err(std::io::Error::other)?;
        for (transfer, reference) in entries.iter().zip(&references) {
            let Some((amount, credit)) = booked(transfer, account) else { continue };
            let counterparty = if credit { transfer.debit_account } else { transfer.credit_account };
            let (transfer_id, counterparty) = (transfer.id.to_string(), counterparty.to_string());
            let booked_at = rfc3339(transfer.timestamp);
            writer.entry(&StatementEntry {
                transfer_id: &transfer_id,
                counterparty: &counterparty,
                amount,
                credit,
                booked_at: &booked_at,
                value_date: &booked_at[..10],
                end_to_end_id: reference.as_ref().and_then(|r| r.reference.as_deref()),
                remittance: reference.as_ref().and_then(|r| r.remittance.as_deref()),
            })?;
        }
        match page.last() {
            Some(last) if page.len() == STATEMENT_PAGE => from = last.timestamp.saturating_add(1),
            _ => break,
        }
    }
    writer.finish()
}

/// The ISO date (UTC) of a timestamp.
fn date(nanos: u64) -> String {
    rfc3339(nanos)[..10].to_owned()
}

/// `YYYYMMDDHHMMSS` of a timestamp.
fn compact(nanos: u64) -> String {
    rfc3339(nanos)[..19].chars().filter(char::is_ascii_digit).collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bound {
    From,
    To,
}

impl Bound {
    fn name(self) -> &'static str {
        match self {
            Bound::From => "from",
            Bound::To => "to",
        }
    }
}

/// A period bound as a timestamp: for `from`, the first instant included; for `to`, the
/// first instant after the period (the end of the UTC day for a date, the instant plus 1 ns).
fn parse_bound(text: &str, bound: Bound) -> Result<u64, ApiError> {
    let name = bound.name();
    let invalid = || {
        ApiError::invalid(
            name,
            format!("`{name}` must be a date (`YYYY-MM-DD`) or an RFC 3339 instant (`2026-12-01T09:30:00Z`)."),
        )
    };
    if text.len() == 10 {
        let day = parse_date(text).ok_or_else(invalid)?;
        let day = if bound == Bound::To { day.checked_add(1).ok_or_else(invalid)? } else { day };
        return day.checked_mul(NANOS_PER_DAY).ok_or_else(invalid);
    }
    let instant = parse_rfc3339(text).ok_or_else(invalid)?;
    Ok(if bound == Bound::To { instant.saturating_add(1) } else { instant })
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date from 1970 on.
fn parse_date(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let year = digits(&text[0..4])?;
    let month = digits(&text[5..7])?;
    let day = digits(&text[8..10])?;
    if year < 1970 || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// Nanoseconds since the epoch of an RFC 3339 date-time (`2026-12-01T09:30:00Z`,
/// `…T09:30:00.5+01:00`); `None` before 1970 or past what a `u64` of nanoseconds holds.
pub(crate) fn parse_rfc3339(text: &str) -> Option<u64> {
    if text.len() < 20 || !text.is_char_boundary(10) {
        return None;
    }
    let days = parse_date(&text[..10])?;
    let rest = text[10..].strip_prefix(['T', 't', ' '])?;
    let bytes = rest.as_bytes();
    if bytes.len() < 9 || bytes[2] != b':' || bytes[5] != b':' {
        return None;
    }
    let (hour, minute, second) = (digits(&rest[0..2])?, digits(&rest[3..5])?, digits(&rest[6..8])?);
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &rest[8..];
    let mut fraction = 0u64;
    if let Some(after) = rest.strip_prefix('.') {
        let length = after.bytes().take_while(u8::is_ascii_digit).count();
        if length == 0 || length > 9 {
            return None;
        }
        fraction = digits(&after[..length])? * 10u64.pow(u32::try_from(9 - length).ok()?);
        rest = &after[length..];
    }
    let offset_seconds: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            let bytes = rest.as_bytes();
            if bytes.len() != 6 || bytes[3] != b':' {
                return None;
            }
            let (hours, minutes) = (digits(&rest[1..3])?, digits(&rest[4..6])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            sign * i64::try_from(hours * 3600 + minutes * 60).ok()?
        }
    };
    let local = days.checked_mul(86_400)?.checked_add(hour * 3600 + minute * 60 + second)?;
    let utc = i64::try_from(local).ok()?.checked_sub(offset_seconds)?;
    u64::try_from(utc).ok()?.checked_mul(NANOS_PER_SECOND)?.checked_add(fraction)
}

/// A run of ASCII digits as a number.
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm, the inverse of `render`'s).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let yoe = year % 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dates_and_instants() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2000-03-01"), Some(11_017));
        assert_eq!(parse_date("2024-02-29"), Some(19_782));
        for bad in ["2023-02-29", "2026-13-01", "2026-00-10", "1969-12-31", "2026-1-01", "2026/01/01", "2026-01-0a"] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01Z"), Some(NANOS_PER_SECOND));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:01+01:00"), Some(NANOS_PER_SECOND));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00.5Z"), Some(NANOS_PER_SECOND / 2));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00.000000001Z"), Some(1));
        for bad in [
            "1970-01-01T00:00:00",
            "1970-01-01T00:00:00.Z",
            "1970-01-01T00:00:00.0000000001Z",
            "1970-01-01T24:00:00Z",
            "1970-01-01T00:00:00+1:00",
            "1970-01-01T00:00:00-01:00x",
            "1970-01-01T00:00:00+00:01",
            "2026-12-01Té0:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert_eq!(
            parse_bound("2026-12-01", Bound::To).unwrap() - parse_bound("2026-12-01", Bound::From).unwrap(),
            NANOS_PER_DAY
        );
        assert_eq!(parse_bound("1970-01-01T00:00:00Z", Bound::To).unwrap(), 1);
        assert!(parse_bound("9999-12-31", Bound::To).is_err(), "past a u64 of nanoseconds");
    }

    proptest! {
        /// What `rfc3339` writes reads back as the same instant.
        #[test]
        fn rfc3339_round_trips(nanos in 0u64..=u64::MAX) {
            prop_assert_eq!(parse_rfc3339(&rfc3339(nanos)), Some(nanos));
            let day = parse_date(&rfc3339(nanos)[..10]).unwrap();
            prop_assert_eq!(day, nanos / NANOS_PER_DAY);
        }
    }
}
