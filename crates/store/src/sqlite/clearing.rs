//! Clearing windows in SQLite: what a close loads, what its commit writes, and the reads.

use super::codec::{blob_id, currency, id_blob, int, uint};
use crate::clearing::{open_window, ClearingSummary, POSTED_KINDS};
use crate::{Page, Result};
use paycore_ledger::{AccountId, ClearingPosition, ClearingWindow, ClearingWindowId, Currency, OpenWindow, TenantId};
use rusqlite::{params, Connection, OptionalExtension, Row};

/// The open window of each (tenant, currency) a batch closes, and the window ids already taken.
pub(super) fn load(
    conn: &Connection,
    wanted: &[(TenantId, Currency, ClearingWindowId)],
) -> Result<(Vec<OpenWindow>, Vec<ClearingWindowId>)> {
    let mut open: Vec<OpenWindow> = Vec::new();
    let mut taken = Vec::new();
    let mut exists = conn.prepare_cached("SELECT 1 FROM clearing_windows WHERE id = ?1")?;
    let mut last = conn.prepare_cached(
        "SELECT sequence, closed_at FROM clearing_windows WHERE tenant = ?1 AND currency = ?2
         ORDER BY sequence DESC LIMIT 1",
    )?;
    // A range of the table's key (the timestamp).
    let mut posted = conn.prepare_cached(
        "SELECT debit_account, credit_account, amount FROM transfers
         WHERE timestamp > ?1 AND tenant = ?2 AND currency = ?3 AND kind IN (?4, ?5)",
    )?;
    for &(tenant, currency, id) in wanted {
        if exists.query_row([id_blob(id.0)], |_| Ok(())).optional()?.is_some() {
            taken.push(id);
        }
        if open.iter().any(|w| w.tenant == tenant && w.currency == currency) {
            continue;
        }
        let previous = last
            .query_row(params![id_blob(tenant.0), currency.code()], |r| {
                Ok((uint(r, "sequence")?, uint(r, "closed_at")?))
            })
            .optional()?;
        let since = int(previous.map_or(0, |(_, closed_at)| closed_at));
        let rows = posted
            .query_map(
                params![since, id_blob(tenant.0), currency.code(), POSTED_KINDS[0].as_str(), POSTED_KINDS[1].as_str()],
                |r| {
                    Ok((
                        AccountId(blob_id(r, "debit_account")?),
                        AccountId(blob_id(r, "credit_account")?),
                        uint(r, "amount")?,
                    ))
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        open.push(open_window(tenant, currency, previous, rows));
    }
    Ok((open, taken))
}

/// The closed windows of a batch and their positions.
pub(super) fn insert(conn: &Connection, windows: &[ClearingWindow]) -> Result<()> {
    if windows.is_empty() {
        return Ok(());
    }
    let mut window_row = conn.prepare_cached(
        "INSERT INTO clearing_windows (id, tenant, currency, sequence, opened_at, closed_at, gross_volume, accounts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let mut position_row = conn.prepare_cached(
        "INSERT INTO clearing_positions (window_id, account, opening, debits, credits, net, closing)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for w in windows {
        window_row.execute(params![
            id_blob(w.id.0),
            id_blob(w.tenant.0),
            w.currency.code(),
            int(w.sequence),
            int(w.opened_at),
            int(w.closed_at),
            int(w.gross_volume),
            int(u64::try_from(w.positions.len()).unwrap_or(u64::MAX)),
        ])?;
        for p in &w.positions {
            position_row.execute(params![
                id_blob(w.id.0),
                id_blob(p.account.0),
                p.opening,
                int(p.debits),
                int(p.credits),
                p.net,
                p.closing
            ])?;
        }
    }
    Ok(())
}

fn window_from(row: &Row) -> rusqlite::Result<ClearingSummary> {
    Ok(ClearingSummary {
        window: ClearingWindow {
            id: ClearingWindowId(blob_id(row, "id")?),
            tenant: TenantId(blob_id(row, "tenant")?),
            currency: currency(row)?,
            sequence: uint(row, "sequence")?,
            opened_at: uint(row, "opened_at")?,
            closed_at: uint(row, "closed_at")?,
            gross_volume: uint(row, "gross_volume")?,
            positions: Vec::new(),
        },
        accounts: uint(row, "accounts")?,
    })
}

fn position_from(row: &Row) -> rusqlite::Result<ClearingPosition> {
    Ok(ClearingPosition {
        account: AccountId(blob_id(row, "account")?),
        opening: row.get("opening")?,
        debits: uint(row, "debits")?,
        credits: uint(row, "credits")?,
        net: row.get("net")?,
        closing: row.get("closing")?,
    })
}

/// A window's positions, in account order.
pub(super) fn positions(conn: &Connection, id: ClearingWindowId) -> Result<Vec<ClearingPosition>> {
    Ok(conn
        .prepare_cached("SELECT * FROM clearing_positions WHERE window_id = ?1 ORDER BY account")?
        .query_map([id_blob(id.0)], position_from)?
        .collect::<rusqlite::Result<Vec<_>>>()?)
}

/// A window of the tenant with its positions.
pub(super) fn window(conn: &Connection, tenant: TenantId, id: ClearingWindowId) -> Result<Option<ClearingWindow>> {
    let found = conn
        .prepare_cached("SELECT * FROM clearing_windows WHERE id = ?1 AND tenant = ?2")?
        .query_row(params![id_blob(id.0), id_blob(tenant.0)], window_from)
        .optional()?;
    let Some(mut summary) = found else { return Ok(None) };
    summary.window.positions = positions(conn, id)?;
    Ok(Some(summary.window))
}

/// The tenant's windows, last closed first, after the cursor.
pub(super) fn windows(
    conn: &Connection,
    tenant: TenantId,
    currency: Option<Currency>,
    page: Page<ClearingWindowId>,
) -> Result<Vec<ClearingSummary>> {
    let before = match page.after {
        None => i64::MAX,
        Some(cursor) => {
            let found: Option<i64> = conn
                .prepare_cached("SELECT closed_at FROM clearing_windows WHERE id = ?1 AND tenant = ?2")?
                .query_row(params![id_blob(cursor.0), id_blob(tenant.0)], |r| r.get(0))
                .optional()?;
            match found {
                Some(closed_at) => closed_at,
                None => return Ok(Vec::new()),
            }
        }
    };
    let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
    Ok(conn
        .prepare_cached(
            "SELECT * FROM clearing_windows
             WHERE tenant = ?1 AND closed_at < ?2 AND (?3 IS NULL OR currency = ?3)
             ORDER BY closed_at DESC LIMIT ?4",
        )?
        .query_map(params![id_blob(tenant.0), before, currency.map(Currency::code), limit], window_from)?
        .collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Every window with its positions, by tenant, currency and sequence (for `verify`).
pub(super) fn every(conn: &Connection, each: &mut dyn FnMut(ClearingWindow)) -> Result<()> {
    let summaries = conn
        .prepare("SELECT * FROM clearing_windows ORDER BY tenant, currency, sequence")?
        .query_map([], window_from)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for mut summary in summaries {
        summary.window.positions = positions(conn, summary.window.id)?;
        each(summary.window);
    }
    Ok(())
}
