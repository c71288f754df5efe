//! Batch leases and delivery claims in PostgreSQL (see [`crate::batches::Claim`] and
//! [`crate::admin::AdminStore::due_deliveries`]), the way job queues on PostgreSQL claim work:
//! one statement finds the rows with `FOR UPDATE SKIP LOCKED` (rows another claim has locked
//! are passed over, not waited for; a row another claim has just committed is checked again
//! on its new version, so its lease excludes it) and writes the claim on them.

use super::admin::delivery_from;
use super::batches::batch_from;
use super::codec::{all, id_bytes, int};
use crate::admin::Delivery;
use crate::batches::{BatchRecord, Claim};
use crate::Result;
use paycore_ledger::{BatchId, WebhookEndpointId};
use postgres::Client;

pub(super) fn claim_next_batch(client: &mut Client, claim: &Claim<'_>) -> Result<Option<BatchRecord>> {
    client
        .query_opt(
            "UPDATE batches SET lease_owner = $1, lease_until = $3
             WHERE id = (SELECT id FROM batches
                         WHERE status IN ('validating', 'processing')
                           AND (lease_until IS NULL OR lease_until <= $2)
                         ORDER BY created_at, id LIMIT 1
                         FOR UPDATE SKIP LOCKED)
             RETURNING *",
            &[&claim.owner, &int(claim.now), &int(claim.until)],
        )?
        .map(|row| batch_from(&row))
        .transpose()
}

pub(super) fn claim_batch(client: &mut Client, batch: BatchId, claim: &Claim<'_>) -> Result<Option<BatchRecord>> {
    client
        .query_opt(
            "UPDATE batches SET lease_owner = $2, lease_until = $4
             WHERE id = (SELECT id FROM batches
                         WHERE id = $1 AND status IN ('validating', 'processing')
                           AND (lease_until IS NULL OR lease_until <= $3)
                         FOR UPDATE SKIP LOCKED)
             RETURNING *",
            &[&id_bytes(batch.0), &claim.owner, &int(claim.now), &int(claim.until)],
        )?
        .map(|row| batch_from(&row))
        .transpose()
}

pub(super) fn renew_batch_lease(client: &mut Client, batch: BatchId, owner: &str, until: u64) -> Result<bool> {
    let n = client.execute(
        "UPDATE batches SET lease_until = $3 WHERE id = $1 AND lease_owner = $2",
        &[&id_bytes(batch.0), &owner, &int(until)],
    )?;
    Ok(n == 1)
}

pub(super) fn release_batch_lease(client: &mut Client, batch: BatchId, owner: &str) -> Result<bool> {
    let n = client.execute(
        "UPDATE batches SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2",
        &[&id_bytes(batch.0), &owner],
    )?;
    Ok(n == 1)
}

pub(super) fn due_deliveries(
    client: &mut Client,
    now: u64,
    claimed_until: u64,
    limit: usize,
    skip: &[WebhookEndpointId],
) -> Result<Vec<Delivery>> {
    let skip: Vec<[u8; 16]> = skip.iter().map(|endpoint| id_bytes(endpoint.0)).collect();
    let skip: Vec<&[u8]> = skip.iter().map(|bytes| &bytes[..]).collect();
    let rows = client.query(
        "UPDATE webhook_deliveries d SET claimed_until = $2
         FROM (SELECT id FROM webhook_deliveries
               WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= $1
                 AND (claimed_until IS NULL OR claimed_until <= $1)
                 AND NOT (endpoint = ANY($4))
               ORDER BY seq, id LIMIT $3
               FOR UPDATE SKIP LOCKED) due
         WHERE d.id = due.id
         RETURNING d.*",
        &[&int(now), &int(claimed_until), &i64::try_from(limit).unwrap_or(i64::MAX), &skip],
    )?;
    let mut claimed = all(&rows, delivery_from)?;
    // RETURNING gives the rows in no promised order.
    claimed.sort_by_key(|d| (d.seq, d.id));
    Ok(claimed)
}
