//! Clearing windows in PostgreSQL: what a close loads, what its commit writes, and the reads.

use super::codec::{all, currency, get, id, id_bytes, int, uint};
use crate::clearing::{open_window, ClearingSummary, POSTED_KINDS};
use crate::{Page, Result};
use paycore_ledger::{AccountId, ClearingPosition, ClearingWindow, ClearingWindowId, Currency, OpenWindow, TenantId};
use postgres::{GenericClient, Row};

/// The open window of each (tenant, currency) a batch closes, and the window ids already taken.
pub(super) fn load(
    client: &mut impl GenericClient,
    wanted: &[(TenantId, Currency, ClearingWindowId)],
) -> Result<(Vec<OpenWindow>, Vec<ClearingWindowId>)> {
    let ids: Vec<[u8; 16]> = wanted.iter().map(|(_, _, id)| id_bytes(id.0)).collect();
    let taken = client
        .query("SELECT id FROM clearing_windows WHERE id = ANY($1)", &[&ids])?
        .iter()
        .map(|row| id(row, "id").map(ClearingWindowId))
        .collect::<Result<Vec<_>>>()?;
    let kinds: Vec<&str> = POSTED_KINDS.iter().map(|k| k.as_str()).collect();
    let mut open: Vec<OpenWindow> = Vec::new();
    for &(tenant, currency, _) in wanted {
        if open.iter().any(|w| w.tenant == tenant && w.currency == currency) {
            continue;
        }
        let previous = client
            .query_opt(
                "SELECT sequence, closed_at FROM clearing_windows WHERE tenant = $1 AND currency = $2
                 ORDER BY sequence DESC LIMIT 1",
                &[&id_bytes(tenant.0), &currency.code()],
            )?
            .map(|r| Ok::<_, crate::StoreError>((uint(&r, "sequence")?, uint(&r, "closed_at")?)))
            .transpose()?;
        let since = int(previous.map_or(0, |(_, closed_at)| closed_at));
        // The timestamp index gives the range; the row gives tenant, currency, kind and amount.
        let rows = client.query(
            "SELECT debit_account, credit_account, amount FROM transfers
             WHERE timestamp > $1 AND tenant = $2 AND currency = $3 AND kind = ANY($4)",
            &[&since, &id_bytes(tenant.0), &currency.code(), &kinds],
        )?;
        let posted = rows
            .iter()
            .map(|r| Ok((AccountId(id(r, "debit_account")?), AccountId(id(r, "credit_account")?), uint(r, "amount")?)))
            .collect::<Result<Vec<_>>>()?;
        open.push(open_window(tenant, currency, previous, posted));
    }
    Ok((open, taken))
}

/// The closed windows of a batch and their positions: one statement for each window, one for
/// all its positions.
pub(super) fn insert(client: &mut impl GenericClient, windows: &[ClearingWindow]) -> Result<()> {
    for w in windows {
        client.execute(
            "INSERT INTO clearing_windows (id, tenant, currency, sequence, opened_at, closed_at, gross_volume, accounts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &id_bytes(w.id.0),
                &id_bytes(w.tenant.0),
                &w.currency.code(),
                &int(w.sequence),
                &int(w.opened_at),
                &int(w.closed_at),
                &int(w.gross_volume),
                &int(u64::try_from(w.positions.len()).unwrap_or(u64::MAX)),
            ],
        )?;
        let p = &w.positions;
        client.execute(
            "INSERT INTO clearing_positions (window_id, account, opening, debits, credits, net, closing)
             SELECT $1, account, opening, debits, credits, net, closing
             FROM UNNEST($2::bytea[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])
                 AS p (account, opening, debits, credits, net, closing)",
            &[
                &id_bytes(w.id.0),
                &p.iter().map(|p| id_bytes(p.account.0)).collect::<Vec<_>>(),
                &p.iter().map(|p| p.opening).collect::<Vec<_>>(),
                &p.iter().map(|p| int(p.debits)).collect::<Vec<_>>(),
                &p.iter().map(|p| int(p.credits)).collect::<Vec<_>>(),
                &p.iter().map(|p| p.net).collect::<Vec<_>>(),
                &p.iter().map(|p| p.closing).collect::<Vec<_>>(),
            ],
        )?;
    }
    Ok(())
}

fn window_from(row: &Row) -> Result<ClearingSummary> {
    Ok(ClearingSummary {
        window: ClearingWindow {
            id: ClearingWindowId(id(row, "id")?),
            tenant: TenantId(id(row, "tenant")?),
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

fn position_from(row: &Row) -> Result<ClearingPosition> {
    Ok(ClearingPosition {
        account: AccountId(id(row, "account")?),
        opening: get(row, "opening")?,
        debits: uint(row, "debits")?,
        credits: uint(row, "credits")?,
        net: get(row, "net")?,
        closing: get(row, "closing")?,
    })
}

/// A window's positions, in account order.
fn positions(client: &mut impl GenericClient, window: ClearingWindowId) -> Result<Vec<ClearingPosition>> {
    let rows = client
        .query("SELECT * FROM clearing_positions WHERE window_id = $1 ORDER BY account", &[&id_bytes(window.0)])?;
    all(&rows, position_from)
}

/// A window of the tenant with its positions (the caller gives one snapshot for both reads).
pub(super) fn window(
    client: &mut impl GenericClient,
    tenant: TenantId,
    window: ClearingWindowId,
) -> Result<Option<ClearingWindow>> {
    let found = client.query_opt(
        "SELECT * FROM clearing_windows WHERE id = $1 AND tenant = $2",
        &[&id_bytes(window.0), &id_bytes(tenant.0)],
    )?;
    let Some(row) = found else { return Ok(None) };
    let mut summary = window_from(&row)?;
    summary.window.positions = positions(client, window)?;
    Ok(Some(summary.window))
}

/// The tenant's windows, last closed first, after the cursor.
pub(super) fn windows(
    client: &mut impl GenericClient,
    tenant: TenantId,
    currency: Option<Currency>,
    page: Page<ClearingWindowId>,
) -> Result<Vec<ClearingSummary>> {
    let before = match page.after {
        None => i64::MAX,
        Some(cursor) => {
            let found = client.query_opt(
                "SELECT closed_at FROM clearing_windows WHERE id = $1 AND tenant = $2",
                &[&id_bytes(cursor.0), &id_bytes(tenant.0)],
            )?;
            match found {
                Some(row) => get(&row, "closed_at")?,
                None => return Ok(Vec::new()),
            }
        }
    };
    let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
    let rows = client.query(
        "SELECT * FROM clearing_windows
         WHERE tenant = $1 AND closed_at < $2 AND ($3::text IS NULL OR currency = $3)
         ORDER BY closed_at DESC LIMIT $4",
        &[&id_bytes(tenant.0), &before, &currency.map(Currency::code), &limit],
    )?;
    all(&rows, window_from)
}

/// Every window with its positions, by tenant, currency and sequence (for `verify`).
pub(super) fn every(client: &mut impl GenericClient, each: &mut dyn FnMut(ClearingWindow)) -> Result<()> {
    let rows = client.query("SELECT * FROM clearing_windows ORDER BY tenant, currency, sequence", &[])?;
    for row in &rows {
        let mut summary = window_from(row)?;
        summary.window.positions = positions(client, summary.window.id)?;
        each(summary.window);
    }
    Ok(())
}
