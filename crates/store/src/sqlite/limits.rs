//! Account status and limits in SQLite: the engine's commit writes changed settings and their
//! audit rows; `load` reads the recent debits the limits need; the readers list the audit.

use super::codec::{blob_id, id_at, id_blob, int, shard_key, transfer_at, uint, TRANSFER_SELECT};
use crate::Result;
use paycore_ledger::{Account, AccountId, AuditRecord, Prefetch, TenantId, Transfer};
use rusqlite::{params, Connection, Row};
use std::collections::HashSet;

/// Writes the status and limits of the accounts a batch updated (in order: the last wins).
pub(super) fn update_accounts(conn: &Connection, accounts: &[Account]) -> Result<()> {
    if accounts.is_empty() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(
        "UPDATE accounts SET status = ?2, max_payment = ?3, daily_outflow = ?4, velocity_count = ?5,
             velocity_window_seconds = ?6
         WHERE shard = ?7 AND id = ?1",
    )?;
    for a in accounts {
        let velocity = a.limits.velocity;
        stmt.execute(params![
            id_blob(a.id.0),
            a.status.as_str(),
            a.limits.max_payment.map(int),
            a.limits.daily_outflow.map(int),
            velocity.map(|v| i64::from(v.count)),
            velocity.map(|v| int(v.window_seconds)),
            shard_key(a.id),
        ])?;
    }
    Ok(())
}

pub(super) fn insert_audit(conn: &Connection, audit: &[AuditRecord]) -> Result<()> {
    if audit.is_empty() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(
        "INSERT INTO account_audit (account, at, tenant, actor, before, after) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for r in audit {
        stmt.execute(params![id_blob(r.account.0), int(r.at), id_blob(r.tenant.0), r.actor, r.before, r.after])?;
    }
    Ok(())
}

/// The transfers debited from `wanted.debits_of` since `wanted.debits_since`: one scan of a
/// range of the table's key (the timestamp). A day of a busy ledger is a long scan: this runs
/// at recovery and when a batch changes an account's limits, never per payment.
pub(super) fn load_debits(conn: &Connection, wanted: &Prefetch) -> Result<Vec<Transfer>> {
    if wanted.debits_of.is_empty() {
        return Ok(Vec::new());
    }
    let accounts: HashSet<AccountId> = wanted.debits_of.iter().copied().collect();
    let mut scan = conn.prepare_cached(&format!("SELECT {TRANSFER_SELECT} FROM transfers WHERE timestamp >= ?1"))?;
    let mut debits = Vec::new();
    let mut rows = scan.query([int(wanted.debits_since)])?;
    while let Some(row) = rows.next()? {
        let debit = id_at(row, 2)?.map(AccountId);
        if debit.is_some_and(|d| accounts.contains(&d)) {
            debits.push(transfer_at(row)?);
        }
    }
    Ok(debits)
}

fn audit_from(row: &Row) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        tenant: TenantId(blob_id(row, "tenant")?),
        account: AccountId(blob_id(row, "account")?),
        actor: row.get("actor")?,
        at: uint(row, "at")?,
        before: row.get("before")?,
        after: row.get("after")?,
    })
}

/// An account's audit, newest first, strictly before `before` if given.
pub(super) fn account_audit(
    conn: &Connection,
    tenant: TenantId,
    account: AccountId,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<AuditRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT * FROM account_audit WHERE account = ?1 AND tenant = ?2 AND at < ?3 ORDER BY at DESC LIMIT ?4",
    )?;
    let rows = stmt.query_map(
        params![
            id_blob(account.0),
            id_blob(tenant.0),
            before.map_or(i64::MAX, int),
            i64::try_from(limit).unwrap_or(i64::MAX)
        ],
        audit_from,
    )?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Every audit row (for `verify`).
pub(super) fn all_audit(conn: &Connection) -> Result<Vec<AuditRecord>> {
    let mut stmt = conn.prepare("SELECT * FROM account_audit ORDER BY account, at")?;
    let rows = stmt.query_map([], audit_from)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
