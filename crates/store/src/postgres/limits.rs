//! Account status and limits in PostgreSQL: the engine's commit writes changed settings and
//! their audit rows; `load` reads the recent debits the limits need; the readers list the
//! audit.

use super::codec::{all, get, id, id_bytes, int, transfer_from, uint};
use crate::Result;
use paycore_ledger::{Account, AccountId, AuditRecord, Prefetch, TenantId, Transfer};
use postgres::{Client, Row, Transaction};

/// Writes the status and limits of the accounts a batch updated (in order: the last wins).
pub(super) fn update_accounts(tx: &mut Transaction<'_>, accounts: &[Account]) -> Result<()> {
    if accounts.is_empty() {
        return Ok(());
    }
    let stmt = tx.prepare(
        "UPDATE accounts SET status = $2, max_payment = $3, daily_outflow = $4, velocity_count = $5,
             velocity_window_seconds = $6
         WHERE id = $1",
    )?;
    for a in accounts {
        let velocity = a.limits.velocity;
        tx.execute(
            &stmt,
            &[
                &id_bytes(a.id.0),
                &a.status.as_str(),
                &a.limits.max_payment.map(int),
                &a.limits.daily_outflow.map(int),
                &velocity.map(|v| i64::from(v.count)),
                &velocity.map(|v| int(v.window_seconds)),
            ],
        )?;
    }
    Ok(())
}

pub(super) fn insert_audit(tx: &mut Transaction<'_>, audit: &[AuditRecord]) -> Result<()> {
    if audit.is_empty() {
        return Ok(());
    }
    let stmt = tx.prepare(
        "INSERT INTO account_audit (account, at, tenant, actor, before, after) VALUES ($1, $2, $3, $4, $5, $6)",
    )?;
    for r in audit {
        tx.execute(&stmt, &[&id_bytes(r.account.0), &int(r.at), &id_bytes(r.tenant.0), &r.actor, &r.before, &r.after])?;
    }
    Ok(())
}

/// The transfers debited from `wanted.debits_of` (accounts of the partitions `led`) since
/// `wanted.debits_since`: from their history's runs up to the partitions' least watermark, and
/// from the tail after it (see `history`).
pub(super) fn load_debits(client: &mut Client, wanted: &Prefetch, led: &[i32]) -> Result<Vec<Transfer>> {
    if wanted.debits_of.is_empty() {
        return Ok(Vec::new());
    }
    let split = super::history::split_of_partitions(client, led)?;
    let accounts: Vec<[u8; 16]> = wanted.debits_of.iter().map(|a| id_bytes(a.0)).collect();
    let rows = client.query(
        &format!(
            "SELECT * FROM transfers WHERE timestamp > $3 AND timestamp >= $2 AND debit_account = ANY($1)
                 AND kind IN ('single', 'pending')
             UNION ALL
             SELECT t.* FROM ({}) i JOIN transfers t ON t.id = i.id
             WHERE t.debit_account = i.account AND t.kind IN ('single', 'pending')",
            super::history::indexed_since("$1", "$2", "$3")
        ),
        &[&accounts, &int(wanted.debits_since), &split],
    )?;
    all(&rows, transfer_from)
}

fn audit_from(row: &Row) -> Result<AuditRecord> {
    Ok(AuditRecord {
        tenant: TenantId(id(row, "tenant")?),
        account: AccountId(id(row, "account")?),
        actor: get(row, "actor")?,
        at: uint(row, "at")?,
        before: get(row, "before")?,
        after: get(row, "after")?,
    })
}

/// An account's audit, newest first, strictly before `before` if given.
pub(super) fn account_audit(
    client: &mut Client,
    tenant: TenantId,
    account: AccountId,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<AuditRecord>> {
    let rows = client.query(
        "SELECT * FROM account_audit WHERE account = $1 AND tenant = $2 AND at < $3 ORDER BY at DESC LIMIT $4",
        &[
            &id_bytes(account.0),
            &id_bytes(tenant.0),
            &before.map_or(i64::MAX, int),
            &i64::try_from(limit).unwrap_or(i64::MAX),
        ],
    )?;
    all(&rows, audit_from)
}

/// Every audit row (for `verify`).
pub(super) fn all_audit(client: &mut impl postgres::GenericClient) -> Result<Vec<AuditRecord>> {
    let rows = client.query("SELECT * FROM account_audit ORDER BY account, at", &[])?;
    all(&rows, audit_from)
}
