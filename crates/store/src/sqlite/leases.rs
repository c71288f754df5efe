//! Batch leases and delivery claims in SQLite (see [`crate::batches::Claim`] and
//! [`crate::admin::AdminStore::due_deliveries`]). One process has the folder, so the rule is
//! kept for its own jobs and workers: each claim is one write statement (SQLite takes the write
//! lock before it reads), after a plain read that finds out whether there is anything to claim
//! at all, so that idle claim loops never take the write lock. Opening the folder frees the
//! leases a previous process left (`open::free_leases`).

use super::admin::delivery_from;
use super::batches::batch_from;
use super::codec::{id_blob, int};
use crate::admin::Delivery;
use crate::batches::{BatchRecord, Claim};
use crate::Result;
use paycore_ledger::{BatchId, WebhookEndpointId};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};

/// Active batches whose lease is free or lapsed at `?1`, oldest first. The status is spelled
/// as the partial index `batches_active` spells it, so that SQLite uses it.
pub(super) const CLAIMABLE: &str = "SELECT id FROM batches WHERE status IN ('validating', 'processing')
     AND (lease_until IS NULL OR lease_until <= ?1) ORDER BY created_at, id LIMIT 1";

pub(super) fn claim_next_batch(conn: &Connection, claim: &Claim<'_>) -> Result<Option<BatchRecord>> {
    let candidate: Option<[u8; 16]> =
        conn.prepare_cached(CLAIMABLE)?.query_row([int(claim.now)], |r| r.get(0)).optional()?;
    if candidate.is_none() {
        return Ok(None);
    }
    Ok(conn
        .prepare_cached(&format!(
            "UPDATE batches SET lease_owner = ?2, lease_until = ?3 WHERE id = ({CLAIMABLE}) RETURNING *"
        ))?
        .query_row(params![int(claim.now), claim.owner, int(claim.until)], batch_from)
        .optional()?)
}

pub(super) fn claim_batch(conn: &Connection, batch: BatchId, claim: &Claim<'_>) -> Result<Option<BatchRecord>> {
    Ok(conn
        .prepare_cached(
            "UPDATE batches SET lease_owner = ?2, lease_until = ?3
             WHERE id = ?1 AND status IN ('validating', 'processing')
               AND (lease_until IS NULL OR lease_until <= ?4)
             RETURNING *",
        )?
        .query_row(params![id_blob(batch.0), claim.owner, int(claim.until), int(claim.now)], batch_from)
        .optional()?)
}

pub(super) fn renew_batch_lease(conn: &Connection, batch: BatchId, owner: &str, until: u64) -> Result<bool> {
    let n = conn.execute(
        "UPDATE batches SET lease_until = ?3 WHERE id = ?1 AND lease_owner = ?2",
        params![id_blob(batch.0), owner, int(until)],
    )?;
    Ok(n == 1)
}

pub(super) fn release_batch_lease(conn: &Connection, batch: BatchId, owner: &str) -> Result<bool> {
    let n = conn.execute(
        "UPDATE batches SET lease_owner = NULL, lease_until = NULL WHERE id = ?1 AND lease_owner = ?2",
        params![id_blob(batch.0), owner],
    )?;
    Ok(n == 1)
}

/// Deliveries due at `?1` and not claimed (or whose claim lapsed).
const DUE: &str = "FROM webhook_deliveries WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= ?1
     AND (claimed_until IS NULL OR claimed_until <= ?1)";

pub(super) fn due_deliveries(
    conn: &Connection,
    now: u64,
    claimed_until: u64,
    limit: usize,
    skip: &[WebhookEndpointId],
) -> Result<Vec<Delivery>> {
    let any: bool =
        conn.prepare_cached(&format!("SELECT EXISTS (SELECT 1 {DUE})"))?.query_row([int(now)], |r| r.get(0))?;
    if !any {
        return Ok(Vec::new());
    }
    // `AND endpoint NOT IN (?4, ?5, …)`: one statement per count of skipped endpoints, cached.
    let not_in = match skip.len() {
        0 => String::new(),
        n => format!(" AND endpoint NOT IN ({})", (4..4 + n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")),
    };
    let mut values = vec![
        Value::Integer(int(now)),
        Value::Integer(int(claimed_until)),
        Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)),
    ];
    values.extend(skip.iter().map(|endpoint| Value::Blob(id_blob(endpoint.0).to_vec())));
    let mut claimed = conn
        .prepare_cached(&format!(
            "UPDATE webhook_deliveries SET claimed_until = ?2
             WHERE id IN (SELECT id {DUE}{not_in} ORDER BY seq, id LIMIT ?3) RETURNING *"
        ))?
        .query_map(rusqlite::params_from_iter(values), delivery_from)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // RETURNING gives the rows in no promised order.
    claimed.sort_by_key(|d| (d.seq, d.id));
    Ok(claimed)
}
