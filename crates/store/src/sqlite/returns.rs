//! NACHA returns and notifications of change in SQLite (see [`crate::returns`]).

use super::blocks::{self, text_of, Block};
use super::codec::{blob_id, id_blob, int, parsed, uint, uint_at};
use super::reader::SqliteReader;
use crate::batches::result_runs;
use crate::returns::{ItemLink, LinkKind, ReturnStore, RETURNED_PHASE};
use crate::Result;
use paycore_ledger::{BatchId, BatchItemState, ChangeSet, Currency, EventKind, ItemStatus, TenantId, TransferId};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

const LINK_COLUMNS: &str =
    "batch, idx, tenant, kind, original_batch, original_idx, code, detail, amount, currency, active, created_at";

fn link_from(row: &Row) -> rusqlite::Result<ItemLink> {
    let active: i64 = row.get("active")?;
    Ok(ItemLink {
        batch: BatchId(blob_id(row, "batch")?),
        index: uint(row, "idx")?,
        tenant: TenantId(blob_id(row, "tenant")?),
        kind: parsed(row, "kind", LinkKind::parse)?,
        original_batch: BatchId(blob_id(row, "original_batch")?),
        original_index: uint(row, "original_idx")?,
        code: row.get("code")?,
        detail: row.get("detail")?,
        amount: uint(row, "amount")?,
        currency: parsed(row, "currency", Currency::from_code)?,
        active: active != 0,
        created_at: uint(row, "created_at")?,
    })
}

fn links(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<ItemLink>> {
    Ok(conn.prepare_cached(sql)?.query_map(params, link_from)?.collect::<rusqlite::Result<_>>()?)
}

impl ReturnStore for SqliteReader {
    fn index_traces(&self, tenant: TenantId, batch: BatchId) -> Result<()> {
        self.with(|conn| {
            let mut tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
            tx.set_drop_behavior(rusqlite::DropBehavior::Rollback);
            {
                let mut blocks = tx.prepare_cached("SELECT first, data FROM batch_item_blocks WHERE batch = ?1")?;
                let mut index = tx.prepare_cached(
                    "INSERT INTO nacha_traces (tenant, trace, batch, idx) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                )?;
                let mut found = blocks.query([id_blob(batch.0)])?;
                while let Some(row) = found.next()? {
                    for entry in Block::new(uint_at(row, 0)?, blocks::blob_at(row, 1)?) {
                        let entry = entry?;
                        if entry.status != ItemStatus::Pending {
                            continue;
                        }
                        if let Some(trace) = text_of(entry.fields()?.reference)? {
                            index.execute(params![id_blob(tenant.0), trace, id_blob(batch.0), int(entry.index)])?;
                        }
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn items_by_trace(&self, tenant: TenantId, trace: &str) -> Result<Vec<(BatchId, u64)>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT batch, idx FROM nacha_traces WHERE tenant = ?1 AND trace = ?2 ORDER BY batch DESC, idx",
            )?;
            let rows = stmt.query_map(params![id_blob(tenant.0), trace], |row| {
                Ok((BatchId(blob_id(row, "batch")?), uint(row, "idx")?))
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn active_return(&self, batch: BatchId, index: u64) -> Result<Option<ItemLink>> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {LINK_COLUMNS} FROM batch_item_links
                     WHERE original_batch = ?1 AND original_idx = ?2 AND kind = 'return' AND active = 1"
                ))?
                .query_row(params![id_blob(batch.0), int(index)], link_from)
                .optional()?)
        })
    }

    fn record_links(&self, batch: BatchId, new: &[ItemLink], released: &[(BatchId, u64)]) -> Result<()> {
        self.with(|conn| {
            let mut tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
            tx.set_drop_behavior(rusqlite::DropBehavior::Rollback);
            tx.execute("DELETE FROM batch_item_links WHERE batch = ?1", [id_blob(batch.0)])?;
            {
                let mut release =
                    tx.prepare_cached("UPDATE batch_item_links SET active = 0 WHERE batch = ?1 AND idx = ?2")?;
                for (batch, index) in released {
                    release.execute(params![id_blob(batch.0), int(*index)])?;
                }
                let mut insert = tx.prepare_cached(&format!(
                    "INSERT INTO batch_item_links ({LINK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                ))?;
                for l in new {
                    insert.execute(params![
                        id_blob(l.batch.0),
                        int(l.index),
                        id_blob(l.tenant.0),
                        l.kind.as_str(),
                        id_blob(l.original_batch.0),
                        int(l.original_index),
                        l.code,
                        l.detail,
                        int(l.amount),
                        l.currency.code(),
                        i64::from(l.active),
                        int(l.created_at),
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn item_links(&self, batch: BatchId, first: u64, last: u64) -> Result<Vec<ItemLink>> {
        self.with(|conn| {
            let blob = id_blob(batch.0);
            let mut found = links(
                conn,
                &format!("SELECT {LINK_COLUMNS} FROM batch_item_links WHERE batch = ?1 AND idx BETWEEN ?2 AND ?3"),
                params![blob, int(first), int(last)],
            )?;
            found.extend(links(
                conn,
                &format!(
                    "SELECT {LINK_COLUMNS} FROM batch_item_links WHERE original_batch = ?1 AND original_idx BETWEEN ?2 AND ?3
                     ORDER BY original_idx, created_at, batch, idx"
                ),
                params![blob, int(first), int(last)],
            )?);
            Ok(found)
        })
    }

    fn return_link(&self, tenant: TenantId, reversal: TransferId) -> Result<Option<ItemLink>> {
        let Some((range, index)) = BatchId::item_of(reversal) else { return Ok(None) };
        self.with(|conn| {
            let found = links(
                conn,
                &format!(
                    "SELECT {LINK_COLUMNS} FROM batch_item_links
                     WHERE batch BETWEEN ?1 AND ?2 AND idx = ?3 AND tenant = ?4 AND kind = 'return'"
                ),
                params![id_blob(range.start().0), id_blob(range.end().0), int(index), id_blob(tenant.0)],
            )?;
            Ok(found.into_iter().find(|l| l.reversal() == reversal))
        })
    }
}

/// Inside the engine's commit: for every item whose reversal of an original succeeded in this
/// commit, the original's `returned` result (phase 2, with the R-code) and a
/// `batch_item.returned` event. An original already marked is not marked again.
pub(super) fn mark_returned(tx: &Transaction<'_>, changes: &ChangeSet) -> Result<()> {
    let mut find = None;
    for run in result_runs(&changes.batch_items).filter(|r| r.state == BatchItemState::Succeeded) {
        let find = match &mut find {
            Some(find) => find,
            None => find.insert(tx.prepare_cached(&format!(
                "SELECT {LINK_COLUMNS} FROM batch_item_links
                 WHERE batch = ?1 AND idx BETWEEN ?2 AND ?3 AND kind = 'return' AND active = 1"
            ))?),
        };
        let returns: Vec<ItemLink> = find
            .query_map(params![id_blob(run.batch.0), int(run.first), int(run.last)], link_from)?
            .collect::<rusqlite::Result<_>>()?;
        for link in returns {
            let marked = tx.execute(
                "INSERT INTO batch_results (batch, phase, first, last, status, code) VALUES (?1, ?2, ?3, ?3, ?4, ?5)
                 ON CONFLICT DO NOTHING",
                params![
                    id_blob(link.original_batch.0),
                    RETURNED_PHASE,
                    int(link.original_index),
                    ItemStatus::Returned.as_str(),
                    link.code
                ],
            )?;
            if marked > 0 {
                tx.execute(
                    "INSERT INTO outbox (tenant, type, object, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![
                        id_blob(link.tenant.0),
                        EventKind::BatchItemReturned.as_str(),
                        id_blob(link.reversal().0),
                        int(changes.last_timestamp)
                    ],
                )?;
            }
        }
    }
    Ok(())
}
