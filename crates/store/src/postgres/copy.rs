//! A bulk commit's transfers as one binary `COPY … FROM STDIN`.
//!
//! `INSERT … SELECT * FROM UNNEST(…)` inserts its rows one by one, a WAL record each; `COPY`
//! fills a heap page at a time (`heap_multi_insert`, one WAL record per page) and skips the
//! executor's projection of ten arrays. Priced in psql on a batch of 8 189 transfers (the
//! primary key and the BRIN index only): 33–50 ms by `UNNEST`, 16–21 ms by `COPY`
//! (`crates/bench/NOTES.md`, "PostgreSQL bulk commit"). It costs a round trip more than one
//! prepared statement, so small batches (real time) keep `UNNEST`.
//!
//! The rows are encoded here, in one buffer, in PostgreSQL's binary copy format: the
//! `postgres` crate's `BinaryCopyInWriter` enters the client's runtime once per row.

use super::codec::{id_bytes, int};
use crate::{Result, StoreError};
use paycore_ledger::Transfer;
use postgres::Transaction;
use std::io::Write;

/// From this many transfers a commit sends them by `COPY` rather than `UNNEST`.
pub(super) const COPY_FROM: usize = 256;

/// The statement the rows of [`encode_transfers`] are sent to: the columns in its order.
const COPY_TRANSFERS: &str = "COPY transfers (id, tenant, debit_account, credit_account, amount, currency, kind, \
                              pending_id, expires_at, timestamp) FROM STDIN (FORMAT binary)";

/// The binary copy format's signature, flags (none) and header extension length (none).
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The field count of a row of [`COPY_TRANSFERS`].
const TRANSFER_FIELDS: i16 = 10;

/// One row's field: its length (big-endian `i32`), then its bytes.
fn field(buffer: &mut Vec<u8>, bytes: &[u8]) {
    // A field here is at most 16 bytes (an id) or a currency code or a kind's name.
    buffer.extend_from_slice(&i32::try_from(bytes.len()).unwrap_or(i32::MAX).to_be_bytes());
    buffer.extend_from_slice(bytes);
}

/// A field that may be NULL: length -1 and no bytes.
fn nullable(buffer: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => field(buffer, bytes),
        None => buffer.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

/// `transfers` in the binary copy format of [`COPY_TRANSFERS`]: BYTEA as its bytes, BIGINT
/// as 8 big-endian bytes, TEXT as UTF-8.
pub(super) fn encode_transfers(transfers: &[Transfer]) -> Vec<u8> {
    // 10 fields of 4 bytes of length, 4 ids of 16, 2 integers of 8, a timestamp, texts.
    let mut buffer = Vec::with_capacity(HEADER.len() + transfers.len() * 150 + 2);
    buffer.extend_from_slice(HEADER);
    for t in transfers {
        buffer.extend_from_slice(&TRANSFER_FIELDS.to_be_bytes());
        field(&mut buffer, &id_bytes(t.id.0));
        field(&mut buffer, &id_bytes(t.tenant.0));
        field(&mut buffer, &id_bytes(t.debit_account.0));
        field(&mut buffer, &id_bytes(t.credit_account.0));
        field(&mut buffer, &int(t.amount).to_be_bytes());
        field(&mut buffer, t.currency.code().as_bytes());
        field(&mut buffer, t.kind.as_str().as_bytes());
        nullable(&mut buffer, t.pending_id.map(|p| id_bytes(p.0)).as_ref().map(|p| p.as_slice()));
        nullable(&mut buffer, t.expires_at.map(|e| int(e).to_be_bytes()).as_ref().map(|e| e.as_slice()));
        field(&mut buffer, &int(t.timestamp).to_be_bytes());
    }
    // The trailer: a row of -1 fields.
    buffer.extend_from_slice(&(-1i16).to_be_bytes());
    buffer
}

/// Inserts `transfers` with one `COPY`, inside the commit's transaction; every row or none.
pub(super) fn copy_transfers(tx: &mut Transaction<'_>, transfers: &[Transfer]) -> Result<()> {
    let data = encode_transfers(transfers);
    let mut writer = tx.copy_in(COPY_TRANSFERS)?;
    // The writer's errors are the client's, wrapped in `io::Error`: unwrap them to classify.
    writer.write_all(&data).map_err(|e| match e.into_inner().map(|inner| inner.downcast::<postgres::Error>()) {
        Some(Ok(postgres)) => StoreError::from(*postgres),
        Some(Err(other)) => StoreError::Unavailable(format!("copying the transfers: {other}")),
        None => StoreError::Unavailable("copying the transfers failed".into()),
    })?;
    let copied = writer.finish()?;
    if copied != transfers.len() as u64 {
        return Err(StoreError::Internal(format!("{copied} of {} transfers copied", transfers.len())));
    }
    Ok(())
}
