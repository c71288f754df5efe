//! NACHA returns and notifications of change in PostgreSQL (see [`crate::returns`]).

use super::codec::{all, get, id, id_bytes, int, parsed, uint};
use super::reader::PostgresReader;
use crate::batches::result_runs;
use crate::returns::{ItemLink, LinkKind, ReturnStore, RETURNED_PHASE};
use crate::Result;
use paycore_ledger::{BatchId, BatchItemState, ChangeSet, Currency, EventKind, ItemStatus, TenantId, TransferId};
use postgres::{Row, Transaction};

const LINK_COLUMNS: &str =
    "batch, idx, tenant, kind, original_batch, original_idx, code, detail, amount, currency, active, created_at";

fn link_from(row: &Row) -> Result<ItemLink> {
    Ok(ItemLink {
        batch: BatchId(id(row, "batch")?),
        index: uint(row, "idx")?,
        tenant: TenantId(id(row, "tenant")?),
        kind: parsed(row, "kind", LinkKind::parse)?,
        original_batch: BatchId(id(row, "original_batch")?),
        original_index: uint(row, "original_idx")?,
        code: get(row, "code")?,
        detail: get(row, "detail")?,
        amount: uint(row, "amount")?,
        currency: parsed(row, "currency", Currency::from_code)?,
        active: get(row, "active")?,
        created_at: uint(row, "created_at")?,
    })
}

impl ReturnStore for PostgresReader {
    fn index_traces(&self, tenant: TenantId, batch: BatchId) -> Result<()> {
        self.with(|client| {
            client.execute(
                "INSERT INTO nacha_traces (tenant, trace, batch, idx)
                 SELECT $1, reference, batch, idx FROM batch_items
                 WHERE batch = $2 AND status = 'pending' AND reference IS NOT NULL
                 ON CONFLICT DO NOTHING",
                &[&id_bytes(tenant.0).as_slice(), &id_bytes(batch.0).as_slice()],
            )?;
            Ok(())
        })
    }

    fn items_by_trace(&self, tenant: TenantId, trace: &str) -> Result<Vec<(BatchId, u64)>> {
        self.with(|client| {
            let rows = client.query(
                "SELECT batch, idx FROM nacha_traces WHERE tenant = $1 AND trace = $2 ORDER BY batch DESC, idx",
                &[&id_bytes(tenant.0).as_slice(), &trace],
            )?;
            all(&rows, |row| Ok((BatchId(id(row, "batch")?), uint(row, "idx")?)))
        })
    }

    fn active_return(&self, batch: BatchId, index: u64) -> Result<Option<ItemLink>> {
        self.with(|client| {
            let row = client.query_opt(
                &format!(
                    "SELECT {LINK_COLUMNS} FROM batch_item_links
                     WHERE original_batch = $1 AND original_idx = $2 AND kind = 'return' AND active"
                ),
                &[&id_bytes(batch.0).as_slice(), &int(index)],
            )?;
            row.as_ref().map(link_from).transpose()
        })
    }

    fn record_links(&self, batch: BatchId, new: &[ItemLink], released: &[(BatchId, u64)]) -> Result<()> {
        self.with(|client| {
            let mut tx = client.transaction()?;
            tx.execute("DELETE FROM batch_item_links WHERE batch = $1", &[&id_bytes(batch.0).as_slice()])?;
            for (batch, index) in released {
                tx.execute(
                    "UPDATE batch_item_links SET active = FALSE WHERE batch = $1 AND idx = $2",
                    &[&id_bytes(batch.0).as_slice(), &int(*index)],
                )?;
            }
            for l in new {
                tx.execute(
                    &format!(
                        "INSERT INTO batch_item_links ({LINK_COLUMNS})
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                    ),
                    &[
                        &id_bytes(l.batch.0).as_slice(),
                        &int(l.index),
                        &id_bytes(l.tenant.0).as_slice(),
                        &l.kind.as_str(),
                        &id_bytes(l.original_batch.0).as_slice(),
                        &int(l.original_index),
                        &l.code,
                        &l.detail,
                        &int(l.amount),
                        &l.currency.code(),
                        &l.active,
                        &int(l.created_at),
                    ],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn item_links(&self, batch: BatchId, first: u64, last: u64) -> Result<Vec<ItemLink>> {
        self.with(|client| {
            let key = id_bytes(batch.0);
            let mut found = all(
                &client.query(
                    &format!("SELECT {LINK_COLUMNS} FROM batch_item_links WHERE batch = $1 AND idx BETWEEN $2 AND $3"),
                    &[&key.as_slice(), &int(first), &int(last)],
                )?,
                link_from,
            )?;
            found.extend(all(
                &client.query(
                    &format!(
                        "SELECT {LINK_COLUMNS} FROM batch_item_links
                         WHERE original_batch = $1 AND original_idx BETWEEN $2 AND $3
                         ORDER BY original_idx, created_at, batch, idx"
                    ),
                    &[&key.as_slice(), &int(first), &int(last)],
                )?,
                link_from,
            )?);
            Ok(found)
        })
    }

    fn return_link(&self, tenant: TenantId, reversal: TransferId) -> Result<Option<ItemLink>> {
        let Some((range, index)) = BatchId::item_of(reversal) else { return Ok(None) };
        self.with(|client| {
            let rows = client.query(
                &format!(
                    "SELECT {LINK_COLUMNS} FROM batch_item_links
                     WHERE batch BETWEEN $1 AND $2 AND idx = $3 AND tenant = $4 AND kind = 'return'"
                ),
                &[
                    &id_bytes(range.start().0).as_slice(),
                    &id_bytes(range.end().0).as_slice(),
                    &int(index),
                    &id_bytes(tenant.0).as_slice(),
                ],
            )?;
            Ok(all(&rows, link_from)?.into_iter().find(|l| l.reversal() == reversal))
        })
    }
}

/// The active returns whose reversal succeeded in this commit (read first in the commit's
/// transaction, before any lock: a commit that finds some takes the outbox's lock).
pub(super) fn reversed(tx: &mut Transaction<'_>, changes: &ChangeSet) -> Result<Vec<ItemLink>> {
    let runs: Vec<_> = result_runs(&changes.batch_items).filter(|r| r.state == BatchItemState::Succeeded).collect();
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let rows = tx.query(
        &format!(
            "SELECT {} FROM batch_item_links l
             JOIN UNNEST($1::bytea[], $2::bigint[], $3::bigint[]) AS r (batch, first, last)
               ON l.batch = r.batch AND l.idx BETWEEN r.first AND r.last
             WHERE l.kind = 'return' AND l.active",
            LINK_COLUMNS.split(", ").map(|c| format!("l.{c}")).collect::<Vec<_>>().join(", ")
        ),
        &[
            &runs.iter().map(|r| id_bytes(r.batch.0).to_vec()).collect::<Vec<_>>(),
            &runs.iter().map(|r| int(r.first)).collect::<Vec<_>>(),
            &runs.iter().map(|r| int(r.last)).collect::<Vec<_>>(),
        ],
    )?;
    all(&rows, link_from)
}

/// For each return of [`reversed`], the original's `returned` result (phase 2, with the
/// R-code) and a `batch_item.returned` event. An original already marked is not marked again.
pub(super) fn mark_returned(tx: &mut Transaction<'_>, returns: &[ItemLink], now: u64) -> Result<()> {
    for link in returns {
        let marked = tx.execute(
            "INSERT INTO batch_results (batch, phase, first, last, status, code) VALUES ($1, $2, $3, $3, $4, $5)
             ON CONFLICT DO NOTHING",
            &[
                &id_bytes(link.original_batch.0).as_slice(),
                &i16::from(RETURNED_PHASE),
                &int(link.original_index),
                &ItemStatus::Returned.as_str(),
                &link.code,
            ],
        )?;
        if marked > 0 {
            tx.execute(
                "INSERT INTO outbox (tenant, type, object, created_at) VALUES ($1, $2, $3, $4)",
                &[
                    &id_bytes(link.tenant.0).as_slice(),
                    &EventKind::BatchItemReturned.as_str(),
                    &id_bytes(link.reversal().0).as_slice(),
                    &int(now),
                ],
            )?;
        }
    }
    Ok(())
}
