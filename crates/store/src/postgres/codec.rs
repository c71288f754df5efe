//! Conversions between ledger values and PostgreSQL's columns, and PostgreSQL's errors by kind.
//!
//! Every column is read through [`get`], so that a value that does not decode (a NULL where
//! the schema has none, an id of the wrong length, an unknown status) is `Corrupt`, whatever
//! the query was.

use crate::{IdempotencyRecord, Result, StoreError};
use paycore_ledger::fx::{Quote, Rate};
use paycore_ledger::{
    Account, AccountId, AccountStatus, Balances, CaptureMethod, Currency, HoldRecord, HoldStatus, Limits, Merchant,
    Overdraft, Payment, PaymentFx, PaymentId, PaymentStatus, QuoteId, Refund, RefundId, RefundStatus, ResultCode,
    TenantId, Transfer, TransferId, TransferKind, Velocity,
};
use postgres::error::SqlState;
use postgres::types::FromSql;
use postgres::Row;

impl From<postgres::Error> for StoreError {
    /// PostgreSQL's error, by what the caller can do about it: SQLSTATE 23505 is a conflict;
    /// serialization failures, deadlocks, lock and statement timeouts are `Busy`; a lost
    /// connection, a server shutting down or out of resources is `Unavailable`, except a full
    /// disk (SQLSTATE 53100, `disk_full`), which is `Full`. `paycore_require`'s PCF01 and
    /// PCC01 are `Fenced` and `Corrupt`.
    fn from(e: postgres::Error) -> Self {
        let text = match (e.as_db_error(), std::error::Error::source(&e)) {
            (Some(db), _) => format!("{}: {}", db.code().code(), db.message()),
            (None, Some(source)) => format!("{e}: {source}"),
            (None, None) => e.to_string(),
        };
        match e.code() {
            Some(code) if *code == SqlState::UNIQUE_VIOLATION => StoreError::Conflict(text),
            Some(code)
                if [
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                    SqlState::LOCK_NOT_AVAILABLE,
                    SqlState::QUERY_CANCELED,
                ]
                .contains(code) =>
            {
                StoreError::Busy(text)
            }
            Some(code) if *code == SqlState::DISK_FULL => StoreError::Full(text),
            // Raised by `paycore_require` (migration 0021) in a commit of one statement.
            Some(code) if code.code() == "PCF01" => StoreError::Fenced(text),
            Some(code) if code.code() == "PCC01" => StoreError::Corrupt(text),
            // Connection exceptions, insufficient resources, operator intervention.
            Some(code) if ["08", "53", "57"].iter().any(|class| code.code().starts_with(class)) => {
                StoreError::Unavailable(text)
            }
            Some(_) => StoreError::Internal(text),
            None if e.is_closed() || is_connection_failure(&e) => StoreError::Unavailable(text),
            None => StoreError::Internal(text),
        }
    }
}

/// Whether an error without a SQLSTATE is the network's or the server's: an I/O error, a
/// refused or timed-out connection.
fn is_connection_failure(e: &postgres::Error) -> bool {
    let words = e.to_string();
    std::error::Error::source(e).is_some_and(|source| source.is::<std::io::Error>())
        || ["error connecting", "error communicating", "timeout"].iter().any(|w| words.starts_with(w))
}

// Conversions between ledger values and columns.

pub(super) fn id_bytes(id: u128) -> [u8; 16] {
    id.to_be_bytes()
}

/// Amounts and counters are at most `i64::MAX`, so they fit BIGINT exactly.
pub(super) fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(super) fn corrupt(column: &str, what: &str) -> StoreError {
    StoreError::Corrupt(format!("column {column} holds {what}"))
}

/// A column's value; one that does not decode as `T` is corrupt data.
pub(super) fn get<'a, T: FromSql<'a>>(row: &'a Row, column: &str) -> Result<T> {
    row.try_get(column).map_err(|e| match std::error::Error::source(&e) {
        Some(source) => corrupt(column, &format!("a value that does not decode ({source})")),
        None => corrupt(column, &format!("a value that does not decode ({e})")),
    })
}

pub(super) fn opt_id(row: &Row, column: &str) -> Result<Option<u128>> {
    let bytes: Option<&[u8]> = get(row, column)?;
    bytes
        .map(|b| <[u8; 16]>::try_from(b).map(u128::from_be_bytes).map_err(|_| corrupt(column, "an id of wrong length")))
        .transpose()
}

pub(super) fn id(row: &Row, column: &str) -> Result<u128> {
    opt_id(row, column)?.ok_or_else(|| corrupt(column, "NULL"))
}

pub(super) fn hash(row: &Row, column: &str) -> Result<[u8; 32]> {
    opt_hash(row, column)?.ok_or_else(|| corrupt(column, "NULL"))
}

pub(super) fn opt_hash(row: &Row, column: &str) -> Result<Option<[u8; 32]>> {
    let bytes: Option<&[u8]> = get(row, column)?;
    bytes.map(|b| <[u8; 32]>::try_from(b).map_err(|_| corrupt(column, "a hash of wrong length"))).transpose()
}

pub(super) fn uint(row: &Row, column: &str) -> Result<u64> {
    let value: i64 = get(row, column)?;
    u64::try_from(value).map_err(|_| corrupt(column, "a negative amount or time"))
}

pub(super) fn opt_uint(row: &Row, column: &str) -> Result<Option<u64>> {
    let value: Option<i64> = get(row, column)?;
    value.map(|v| u64::try_from(v).map_err(|_| corrupt(column, "a negative amount or time"))).transpose()
}

pub(super) fn parsed<T>(row: &Row, column: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T> {
    let text: &str = get(row, column)?;
    parse(text).ok_or_else(|| corrupt(column, &format!("unknown value {text:?}")))
}

pub(super) fn currency(row: &Row) -> Result<Currency> {
    parsed(row, "currency", Currency::from_code)
}

fn failure_code(row: &Row) -> Result<Option<ResultCode>> {
    let failure: Option<&str> = get(row, "failure_code")?;
    failure.map(|f| ResultCode::parse(f).ok_or_else(|| corrupt("failure_code", f))).transpose()
}

pub(super) fn account_from(row: &Row) -> Result<Account> {
    Ok(Account {
        id: AccountId(id(row, "id")?),
        tenant: TenantId(id(row, "tenant")?),
        currency: currency(row)?,
        overdraft: match opt_uint(row, "overdraft_limit")? {
            Some(limit) => Overdraft::Limit(limit),
            None => Overdraft::Unlimited,
        },
        reference: get(row, "reference")?,
        metadata: get(row, "metadata")?,
        balances: Balances {
            debits_posted: uint(row, "debits_posted")?,
            credits_posted: uint(row, "credits_posted")?,
            debits_pending: uint(row, "debits_pending")?,
            credits_pending: uint(row, "credits_pending")?,
        },
        created_at: uint(row, "created_at")?,
        status: parsed(row, "status", AccountStatus::parse)?,
        limits: Limits {
            max_payment: opt_uint(row, "max_payment")?,
            daily_outflow: opt_uint(row, "daily_outflow")?,
            velocity: match (opt_uint(row, "velocity_count")?, opt_uint(row, "velocity_window_seconds")?) {
                (Some(count), Some(window_seconds)) => Some(Velocity {
                    count: u32::try_from(count).map_err(|_| corrupt("velocity_count", "above u32"))?,
                    window_seconds,
                }),
                _ => None,
            },
        },
    })
}

pub(super) fn transfer_from(row: &Row) -> Result<Transfer> {
    Ok(Transfer {
        id: TransferId(id(row, "id")?),
        tenant: TenantId(id(row, "tenant")?),
        debit_account: AccountId(id(row, "debit_account")?),
        credit_account: AccountId(id(row, "credit_account")?),
        amount: uint(row, "amount")?,
        currency: currency(row)?,
        kind: parsed(row, "kind", TransferKind::parse)?,
        pending_id: opt_id(row, "pending_id")?.map(TransferId),
        expires_at: opt_uint(row, "expires_at")?,
        timestamp: uint(row, "timestamp")?,
    })
}

/// A hold's columns: its transfer's, then its status and payment.
pub(super) const HOLD_SELECT: &str = "SELECT t.*, h.status, h.payment FROM holds h JOIN transfers t ON t.id = h.id";

pub(super) fn hold_from(row: &Row) -> Result<HoldRecord> {
    Ok(HoldRecord {
        transfer: transfer_from(row)?,
        status: parsed(row, "status", HoldStatus::parse)?,
        payment: opt_id(row, "payment")?.map(PaymentId),
    })
}

pub(super) fn payment_from(row: &Row) -> Result<Payment> {
    Ok(Payment {
        id: PaymentId(id(row, "id")?),
        tenant: TenantId(id(row, "tenant")?),
        payer: opt_id(row, "payer")?.map(AccountId),
        payee: AccountId(id(row, "payee")?),
        amount: uint(row, "amount")?,
        currency: currency(row)?,
        capture_method: parsed(row, "capture_method", CaptureMethod::parse)?,
        status: parsed(row, "status", PaymentStatus::parse)?,
        description: get(row, "description")?,
        failure_code: failure_code(row)?,
        amount_captured: uint(row, "amount_captured")?,
        amount_refunded: uint(row, "amount_refunded")?,
        expires_at: uint(row, "expires_at")?,
        created_at: uint(row, "created_at")?,
        updated_at: uint(row, "updated_at")?,
        transfer: opt_id(row, "transfer")?.map(TransferId),
        fx: payment_fx_from(row)?,
        merchant: merchant_from(row)?,
    })
}

/// The merchant a payment's QR code names: all four columns, or none.
fn merchant_from(row: &Row) -> Result<Option<Merchant>> {
    let Some(name) = get::<Option<String>>(row, "qr_merchant_name")? else { return Ok(None) };
    let text = |column: &str| get::<Option<String>>(row, column)?.ok_or_else(|| corrupt(column, "NULL"));
    Ok(Some(Merchant {
        name,
        city: text("qr_merchant_city")?,
        country: text("qr_country")?,
        category_code: text("qr_category_code")?,
    }))
}

/// A cross-currency payment's quoted side: all five columns, or none.
fn payment_fx_from(row: &Row) -> Result<Option<PaymentFx>> {
    let Some(quote) = opt_id(row, "fx_quote")? else { return Ok(None) };
    Ok(Some(PaymentFx {
        quote: QuoteId(quote),
        rate: parsed(row, "fx_rate", |text| Rate::parse(text).ok())?,
        target_currency: parsed(row, "fx_currency", Currency::from_code)?,
        target_amount: uint(row, "fx_amount")?,
        fee: uint(row, "fx_fee")?,
    }))
}

pub(super) fn quote_from(row: &Row) -> Result<Quote> {
    Ok(Quote {
        id: QuoteId(id(row, "id")?),
        tenant: TenantId(id(row, "tenant")?),
        from: parsed(row, "from_currency", Currency::from_code)?,
        to: parsed(row, "to_currency", Currency::from_code)?,
        rate: parsed(row, "rate", |text| Rate::parse(text).ok())?,
        source_amount: uint(row, "source_amount")?,
        target_amount: uint(row, "target_amount")?,
        fee: uint(row, "fee")?,
        created_at: uint(row, "created_at")?,
        expires_at: uint(row, "expires_at")?,
        used_by: opt_id(row, "used_by")?.map(PaymentId),
    })
}

pub(super) fn refund_from(row: &Row) -> Result<Refund> {
    Ok(Refund {
        id: RefundId(id(row, "id")?),
        tenant: TenantId(id(row, "tenant")?),
        payment: PaymentId(id(row, "payment")?),
        amount: uint(row, "amount")?,
        currency: currency(row)?,
        status: parsed(row, "status", RefundStatus::parse)?,
        failure_code: failure_code(row)?,
        transfer: TransferId(id(row, "transfer")?),
        created_at: uint(row, "created_at")?,
        reason: get(row, "reason")?,
    })
}

pub(super) fn idempotency_from(row: &Row) -> Result<IdempotencyRecord> {
    let status: i32 = get(row, "status")?;
    Ok(IdempotencyRecord {
        tenant: TenantId(id(row, "tenant")?),
        key: get(row, "key")?,
        fingerprint: hash(row, "fingerprint")?,
        status: u16::try_from(status).map_err(|_| corrupt("status", "an invalid HTTP status"))?,
        body: get(row, "body")?,
        created_at: uint(row, "created_at")?,
    })
}

/// Decodes every row with `decode`.
pub(super) fn all<T>(rows: &[Row], decode: fn(&Row) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(decode).collect()
}
