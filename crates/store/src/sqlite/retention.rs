//! Pruning in SQLite (see [`crate::retention`]): each kind is one `DELETE` of at most `limit`
//! rows in an `IMMEDIATE` transaction on a pooled connection, found through an index on
//! `created_at` (migration `0018_retention.sql`), so the write lock is held for one short
//! statement and the engine's commits wait at most that long (its busy handler retries every
//! 50 µs).

use super::codec::int;
use super::reader::SqliteReader;
use crate::retention::{cutoff, PruneCounts, Retention, RetentionStore};
use crate::Result;
use rusqlite::{params, Connection, Transaction, TransactionBehavior};

fn limit_sql(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Runs one pruning statement in its own `IMMEDIATE` transaction; the rows it deleted.
fn delete(conn: &Connection, sql: &str, before: u64, limit: usize) -> Result<usize> {
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let n = tx.execute(sql, params![int(before), limit_sql(limit)])?;
    tx.commit()?;
    Ok(n)
}

impl RetentionStore for SqliteReader {
    fn prune(&self, now: u64, retention: &Retention, limit: usize) -> Result<PruneCounts> {
        let idempotency = self.with(|conn| {
            delete(
                conn,
                "DELETE FROM idempotency WHERE (tenant, key) IN
                     (SELECT tenant, key FROM idempotency WHERE created_at < ?1 LIMIT ?2)",
                cutoff(now, retention.idempotency),
                limit,
            )
        })?;
        let deliveries = self.with(|conn| {
            delete(
                conn,
                "DELETE FROM webhook_deliveries WHERE id IN
                     (SELECT id FROM webhook_deliveries
                      WHERE created_at < ?1 AND next_attempt_at IS NULL AND claimed_until IS NULL LIMIT ?2)",
                cutoff(now, retention.deliveries),
                limit,
            )
        })?;
        // An event goes once it was fanned out (at or below the cursor) and no delivery of it
        // is left: `GET …/deliveries` and a replay render a delivery from its event.
        let outbox = self.with(|conn| {
            delete(
                conn,
                "DELETE FROM outbox WHERE seq IN
                     (SELECT o.seq FROM outbox o
                      WHERE o.created_at < ?1
                        AND o.seq <= (SELECT value FROM meta WHERE key = 'webhook_outbox_seq')
                        AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.seq = o.seq)
                      LIMIT ?2)",
                cutoff(now, retention.deliveries),
                limit,
            )
        })?;
        let files = self.prune_files(cutoff(now, retention.files), limit)?;
        let console_sessions = self.with(|conn| {
            delete(
                conn,
                "DELETE FROM console_sessions_ended WHERE id IN
                     (SELECT id FROM console_sessions_ended WHERE expires_at < ?1 LIMIT ?2)",
                now,
                limit,
            )
        })?;
        Ok(PruneCounts { idempotency, deliveries, outbox, files, console_sessions })
    }
}

impl SqliteReader {
    /// The files of up to `limit` ended batches uploaded before `before`: each file removed
    /// first (a removed file is no error), then the batches' `file` cleared in one
    /// transaction. A crash in between leaves rows naming absent files, which the next round
    /// clears; never a file that no row names.
    fn prune_files(&self, before: u64, limit: usize) -> Result<usize> {
        let ended = self.with(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT id, file FROM batches
                     WHERE file IS NOT NULL AND created_at < ?1 AND status IN ('completed', 'rejected', 'cancelled')
                     LIMIT ?2",
                )?
                .query_map(params![int(before), limit_sql(limit)], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        if ended.is_empty() {
            return Ok(0);
        }
        for (_, file) in &ended {
            super::files::remove(self.folder(), file)?;
        }
        self.with(|conn| {
            let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
            let mut cleared = 0;
            {
                let mut clear = tx.prepare_cached("UPDATE batches SET file = NULL WHERE id = ?1 AND file = ?2")?;
                for (id, file) in &ended {
                    cleared += clear.execute(params![id, file])?;
                }
            }
            tx.commit()?;
            Ok(cleared)
        })
    }
}
