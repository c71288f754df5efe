//! Pruning in PostgreSQL (see [`crate::retention`]): each kind is one `DELETE` of at most
//! `limit` rows, its own transaction, found through an index on `created_at` (migration
//! `0015_retention.sql`). The outer `WHERE` repeats what may change under it (a delivery made
//! due again by a replay), which `READ COMMITTED` checks again on the row it deletes.

use super::codec::{get, int};
use super::reader::PostgresReader;
use crate::retention::{cutoff, PruneCounts, Retention, RetentionStore};
use crate::Result;

fn limit_sql(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl RetentionStore for PostgresReader {
    fn prune(&self, now: u64, retention: &Retention, limit: usize) -> Result<PruneCounts> {
        let idempotency = self.with(|client| {
            Ok(client.execute(
                "DELETE FROM idempotency WHERE (tenant, key) IN
                     (SELECT tenant, key FROM idempotency WHERE created_at < $1 LIMIT $2)",
                &[&int(cutoff(now, retention.idempotency)), &limit_sql(limit)],
            )?)
        })?;
        let deliveries = self.with(|client| {
            Ok(client.execute(
                "DELETE FROM webhook_deliveries WHERE id IN
                     (SELECT id FROM webhook_deliveries
                      WHERE created_at < $1 AND next_attempt_at IS NULL AND claimed_until IS NULL LIMIT $2)
                   AND next_attempt_at IS NULL",
                &[&int(cutoff(now, retention.deliveries)), &limit_sql(limit)],
            )?)
        })?;
        // An event goes once it was fanned out (the cursor is committed with the event's
        // deliveries) and no delivery of it is left.
        let outbox = self.with(|client| {
            Ok(client.execute(
                "DELETE FROM outbox WHERE seq IN
                     (SELECT o.seq FROM outbox o
                      WHERE o.created_at < $1
                        AND o.seq <= (SELECT value FROM meta WHERE key = 'webhook_outbox_seq')
                        AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.seq = o.seq)
                      LIMIT $2)",
                &[&int(cutoff(now, retention.deliveries)), &limit_sql(limit)],
            )?)
        })?;
        let files = self.with(|client| {
            let mut tx = client.transaction()?;
            let ended = tx.query(
                "SELECT id, file FROM batches
                 WHERE file IS NOT NULL AND created_at < $1 AND status IN ('completed', 'rejected', 'cancelled')
                 LIMIT $2 FOR UPDATE SKIP LOCKED",
                &[&int(cutoff(now, retention.files)), &limit_sql(limit)],
            )?;
            for row in &ended {
                let (id, file): (&[u8], &str) = (get(row, "id")?, get(row, "file")?);
                tx.execute("DELETE FROM batch_files WHERE name = $1", &[&file])?;
                tx.execute("UPDATE batches SET file = NULL WHERE id = $1", &[&id])?;
            }
            tx.commit()?;
            Ok(ended.len())
        })?;
        let console_sessions = self.with(|client| {
            Ok(client.execute(
                "DELETE FROM console_sessions_ended WHERE id IN
                     (SELECT id FROM console_sessions_ended WHERE expires_at < $1 LIMIT $2)",
                &[&int(now), &limit_sql(limit)],
            )?)
        })?;
        Ok(PruneCounts {
            console_sessions: usize::try_from(console_sessions).unwrap_or(usize::MAX),
            idempotency: usize::try_from(idempotency).unwrap_or(usize::MAX),
            deliveries: usize::try_from(deliveries).unwrap_or(usize::MAX),
            outbox: usize::try_from(outbox).unwrap_or(usize::MAX),
            files,
        })
    }
}
