//! Conversions between ledger values and SQLite's columns, and SQLite's errors by kind.

use crate::{IdempotencyRecord, Result, StoreError};
use paycore_ledger::fx::{Quote, Rate};
use paycore_ledger::{
    Account, AccountId, AccountStatus, Balances, CaptureMethod, Currency, HoldRecord, HoldStatus, Limits, Merchant,
    Overdraft, Payment, PaymentFx, PaymentId, PaymentStatus, QuoteId, Refund, RefundId, RefundStatus, ResultCode,
    TenantId, Transfer, TransferId, TransferKind, Velocity,
};
use rusqlite::ffi::ErrorCode;
use rusqlite::{Connection, Row};

impl From<rusqlite::Error> for StoreError {
    /// SQLite's error, by what the caller can do about it.
    fn from(e: rusqlite::Error) -> Self {
        let text = e.to_string();
        match &e {
            rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
                ErrorCode::ConstraintViolation
                    if matches!(
                        failure.extended_code,
                        rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    ) =>
                {
                    StoreError::Conflict(text)
                }
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::Busy(text),
                // SQLite's unix VFS answers `ENOSPC` on a write as `SQLITE_FULL`; growing the
                // WAL index (`-shm`) on a full disk is `SQLITE_IOERR_SHMSIZE`.
                ErrorCode::DiskFull => StoreError::Full(text),
                ErrorCode::SystemIoFailure if failure.extended_code == rusqlite::ffi::SQLITE_IOERR_SHMSIZE => {
                    StoreError::Full(text)
                }
                ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::ReadOnly
                | ErrorCode::PermissionDenied
                | ErrorCode::NoLargeFileSupport
                | ErrorCode::OutOfMemory => StoreError::Unavailable(text),
                ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => StoreError::Corrupt(text),
                _ => StoreError::Internal(text),
            },
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::Utf8Error(..) => StoreError::Corrupt(text),
            _ => StoreError::Internal(text),
        }
    }
}

// Conversions between ledger values and columns.

pub(super) fn id_blob(id: u128) -> [u8; 16] {
    id.to_be_bytes()
}

/// The `shard` column of an account's row, the first part of the key of `accounts` (migration
/// 0025): every lookup of an account by id names it, so that it is one descent of the key.
pub(super) fn shard_key(id: paycore_ledger::AccountId) -> i64 {
    // Below 16: no truncation.
    #[allow(clippy::cast_possible_wrap)]
    let shard = crate::verify::balance_shard(id) as i64;
    shard
}

pub(super) fn blob_id(row: &Row, column: &str) -> rusqlite::Result<u128> {
    let bytes: [u8; 16] = row.get(column)?;
    Ok(u128::from_be_bytes(bytes))
}

pub(super) fn opt_blob_id(row: &Row, column: &str) -> rusqlite::Result<Option<u128>> {
    let bytes: Option<[u8; 16]> = row.get(column)?;
    Ok(bytes.map(u128::from_be_bytes))
}

/// Amounts and counters are at most `i64::MAX`, so they fit SQLite's integers exactly.
pub(super) fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(super) fn uint(row: &Row, column: &str) -> rusqlite::Result<u64> {
    let value: i64 = row.get(column)?;
    u64::try_from(value).map_err(|_| corrupt(column, "a negative amount or time"))
}

pub(super) fn opt_uint(row: &Row, column: &str) -> rusqlite::Result<Option<u64>> {
    let value: Option<i64> = row.get(column)?;
    value.map(|v| u64::try_from(v).map_err(|_| corrupt(column, "a negative amount or time"))).transpose()
}

pub(super) fn corrupt(column: &str, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("column {column} holds {what}").into(),
    )
}

pub(super) fn parsed<T>(row: &Row, column: &str, parse: impl Fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let text: String = row.get(column)?;
    parse(&text).ok_or_else(|| corrupt(column, &format!("unknown value {text:?}")))
}

pub(super) fn currency(row: &Row) -> rusqlite::Result<Currency> {
    parsed(row, "currency", Currency::from_code)
}

pub(super) fn account_from(row: &Row) -> rusqlite::Result<Account> {
    Ok(Account {
        id: AccountId(blob_id(row, "id")?),
        tenant: TenantId(blob_id(row, "tenant")?),
        currency: currency(row)?,
        overdraft: match opt_uint(row, "overdraft_limit")? {
            Some(limit) => Overdraft::Limit(limit),
            None => Overdraft::Unlimited,
        },
        reference: row.get("reference")?,
        metadata: row.get("metadata")?,
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

pub(super) fn transfer_from(row: &Row) -> rusqlite::Result<Transfer> {
    Ok(Transfer {
        id: TransferId(blob_id(row, "id")?),
        tenant: TenantId(blob_id(row, "tenant")?),
        debit_account: AccountId(blob_id(row, "debit_account")?),
        credit_account: AccountId(blob_id(row, "credit_account")?),
        amount: uint(row, "amount")?,
        currency: currency(row)?,
        kind: parsed(row, "kind", TransferKind::parse)?,
        pending_id: opt_blob_id(row, "pending_id")?.map(TransferId),
        expires_at: opt_uint(row, "expires_at")?,
        timestamp: uint(row, "timestamp")?,
    })
}

// Columns by position: naming a column scans the statement's column names for every value,
// which costs more than the value for rows read by the thousand (replay, batch items).

pub(super) fn uint_at(row: &Row, i: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(i)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(i, value))
}

pub(super) fn id_at(row: &Row, i: usize) -> rusqlite::Result<Option<u128>> {
    let bytes: Option<[u8; 16]> = row.get(i)?;
    Ok(bytes.map(u128::from_be_bytes))
}

pub(super) fn currency_at(row: &Row, i: usize) -> rusqlite::Result<Option<Currency>> {
    Ok(match row.get_ref(i)? {
        rusqlite::types::ValueRef::Text(code) => std::str::from_utf8(code).ok().and_then(Currency::from_code),
        _ => None,
    })
}

/// The columns [`transfer_at`] decodes, in its order.
pub(super) const TRANSFER_SELECT: &str =
    "id, tenant, debit_account, credit_account, amount, currency, kind, pending_id, expires_at, timestamp";

/// A transfer selected as [`TRANSFER_SELECT`], read by position.
pub(super) fn transfer_at(row: &Row) -> rusqlite::Result<Transfer> {
    let unknown = |i: usize, what: &str| corrupt(TRANSFER_SELECT.split(", ").nth(i).unwrap_or("?"), what);
    let id = |i: usize| id_at(row, i)?.ok_or_else(|| unknown(i, "NULL"));
    let kind = row.get_ref(6)?.as_str()?;
    let expires_at: Option<i64> = row.get(8)?;
    Ok(Transfer {
        id: TransferId(id(0)?),
        tenant: TenantId(id(1)?),
        debit_account: AccountId(id(2)?),
        credit_account: AccountId(id(3)?),
        amount: uint_at(row, 4)?,
        currency: currency_at(row, 5)?.ok_or_else(|| unknown(5, "an unknown currency"))?,
        kind: TransferKind::parse(kind).ok_or_else(|| unknown(6, "an unknown kind"))?,
        pending_id: id_at(row, 7)?.map(TransferId),
        expires_at: expires_at.map(|v| u64::try_from(v).map_err(|_| unknown(8, "a negative time"))).transpose()?,
        timestamp: uint_at(row, 9)?,
    })
}

pub(super) fn hold_from(row: &Row) -> rusqlite::Result<HoldRecord> {
    Ok(HoldRecord {
        transfer: transfer_from(row)?,
        status: parsed(row, "status", HoldStatus::parse)?,
        payment: opt_blob_id(row, "payment")?.map(PaymentId),
    })
}

pub(super) fn payment_from(row: &Row) -> rusqlite::Result<Payment> {
    let failure: Option<String> = row.get("failure_code")?;
    Ok(Payment {
        id: PaymentId(blob_id(row, "id")?),
        tenant: TenantId(blob_id(row, "tenant")?),
        payer: opt_blob_id(row, "payer")?.map(AccountId),
        payee: AccountId(blob_id(row, "payee")?),
        amount: uint(row, "amount")?,
        currency: currency(row)?,
        capture_method: parsed(row, "capture_method", CaptureMethod::parse)?,
        status: parsed(row, "status", PaymentStatus::parse)?,
        description: row.get("description")?,
        failure_code: failure.map(|f| ResultCode::parse(&f).ok_or_else(|| corrupt("failure_code", &f))).transpose()?,
        amount_captured: uint(row, "amount_captured")?,
        amount_refunded: uint(row, "amount_refunded")?,
        expires_at: uint(row, "expires_at")?,
        created_at: uint(row, "created_at")?,
        updated_at: uint(row, "updated_at")?,
        transfer: opt_blob_id(row, "transfer")?.map(TransferId),
        fx: payment_fx_from(row)?,
        merchant: merchant_from(row)?,
    })
}

/// The merchant a payment's QR code names: all four columns, or none.
fn merchant_from(row: &Row) -> rusqlite::Result<Option<Merchant>> {
    let Some(name) = row.get::<_, Option<String>>("qr_merchant_name")? else { return Ok(None) };
    Ok(Some(Merchant {
        name,
        city: row.get("qr_merchant_city")?,
        country: row.get("qr_country")?,
        category_code: row.get("qr_category_code")?,
    }))
}

/// A cross-currency payment's quoted side: all five columns, or none.
fn payment_fx_from(row: &Row) -> rusqlite::Result<Option<PaymentFx>> {
    let Some(quote) = opt_blob_id(row, "fx_quote")? else { return Ok(None) };
    let rate: String = row.get("fx_rate")?;
    Ok(Some(PaymentFx {
        quote: QuoteId(quote),
        rate: Rate::parse(&rate).map_err(|_| corrupt("fx_rate", &format!("the rate {rate:?}")))?,
        target_currency: parsed(row, "fx_currency", Currency::from_code)?,
        target_amount: uint(row, "fx_amount")?,
        fee: uint(row, "fx_fee")?,
    }))
}

pub(super) fn quote_from(row: &Row) -> rusqlite::Result<Quote> {
    let rate: String = row.get("rate")?;
    Ok(Quote {
        id: QuoteId(blob_id(row, "id")?),
        tenant: TenantId(blob_id(row, "tenant")?),
        from: parsed(row, "from_currency", Currency::from_code)?,
        to: parsed(row, "to_currency", Currency::from_code)?,
        rate: Rate::parse(&rate).map_err(|_| corrupt("rate", &format!("the rate {rate:?}")))?,
        source_amount: uint(row, "source_amount")?,
        target_amount: uint(row, "target_amount")?,
        fee: uint(row, "fee")?,
        created_at: uint(row, "created_at")?,
        expires_at: uint(row, "expires_at")?,
        used_by: opt_blob_id(row, "used_by")?.map(PaymentId),
    })
}

pub(super) fn refund_from(row: &Row) -> rusqlite::Result<Refund> {
    let failure: Option<String> = row.get("failure_code")?;
    Ok(Refund {
        id: RefundId(blob_id(row, "id")?),
        tenant: TenantId(blob_id(row, "tenant")?),
        payment: PaymentId(blob_id(row, "payment")?),
        amount: uint(row, "amount")?,
        currency: currency(row)?,
        status: parsed(row, "status", RefundStatus::parse)?,
        failure_code: failure.map(|f| ResultCode::parse(&f).ok_or_else(|| corrupt("failure_code", &f))).transpose()?,
        transfer: TransferId(blob_id(row, "transfer")?),
        created_at: uint(row, "created_at")?,
        reason: row.get("reason")?,
    })
}

pub(super) fn idempotency_from(row: &Row) -> rusqlite::Result<IdempotencyRecord> {
    let status: i64 = row.get("status")?;
    Ok(IdempotencyRecord {
        tenant: TenantId(blob_id(row, "tenant")?),
        key: row.get("key")?,
        fingerprint: row.get("fingerprint")?,
        status: u16::try_from(status).map_err(|_| corrupt("status", "an invalid HTTP status"))?,
        body: row.get("body")?,
        created_at: uint(row, "created_at")?,
    })
}

/// Rows per `INSERT` statement for the bulk inserts (transfers, batch items): one statement
/// per row cost more in statement set-up and tear-down than in the B-tree work itself.
pub(super) const ROWS_PER_INSERT: usize = 64;

/// Inserts `rows` with `head` (`INSERT INTO t (…) VALUES `) and [`ROWS_PER_INSERT`] rows of
/// `columns` parameters per statement; `bind` binds one row's values after an offset.
pub(super) fn insert_rows<T>(
    conn: &Connection,
    head: &str,
    columns: usize,
    rows: &[T],
    mut bind: impl FnMut(&mut rusqlite::Statement<'_>, usize, &T) -> rusqlite::Result<()>,
) -> Result<()> {
    let row = format!("({})", vec!["?"; columns].join(", "));
    let many = format!("{head}{}", vec![row.as_str(); ROWS_PER_INSERT].join(", "));
    let mut chunks = rows.chunks_exact(ROWS_PER_INSERT);
    let mut stmt = conn.prepare_cached(&many)?;
    for chunk in &mut chunks {
        for (i, value) in chunk.iter().enumerate() {
            bind(&mut stmt, i * columns, value)?;
        }
        stmt.raw_execute()?;
    }
    let mut stmt = conn.prepare_cached(&format!("{head}{row}"))?;
    for value in chunks.remainder() {
        bind(&mut stmt, 0, value)?;
        stmt.raw_execute()?;
    }
    Ok(())
}
