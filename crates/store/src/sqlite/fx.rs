//! FX rates, fees and quotes in SQLite (see [`crate::fx`]).

use super::codec::{blob_id, id_blob, int, parsed, quote_from, uint};
use super::reader::SqliteReader;
use crate::fx::{FxStore, RateRecord};
use crate::{IdempotencyRecord, Result};
use paycore_ledger::fx::{Quote, Rate};
use paycore_ledger::{BatchId, Currency, ItemFx, QuoteId, TenantId};
use rusqlite::{params, OptionalExtension, Row};

fn rate_from(row: &Row) -> rusqlite::Result<RateRecord> {
    Ok(RateRecord {
        tenant: TenantId(blob_id(row, "tenant")?),
        base: parsed(row, "base", Currency::from_code)?,
        quote: parsed(row, "quote", Currency::from_code)?,
        rate: parsed(row, "rate", |text| Rate::parse(text).ok())?,
        updated_at: uint(row, "updated_at")?,
    })
}

impl FxStore for SqliteReader {
    fn set_rate(&self, r: &RateRecord) -> Result<()> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO fx_rates (tenant, base, quote, rate, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant, base, quote) DO UPDATE SET rate = excluded.rate, updated_at = excluded.updated_at",
                params![id_blob(r.tenant.0), r.base.code(), r.quote.code(), r.rate.to_string(), int(r.updated_at)],
            )?;
            Ok(())
        })
    }

    fn rates(&self, tenant: TenantId) -> Result<Vec<RateRecord>> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT * FROM fx_rates WHERE tenant = ?1 ORDER BY base, quote")?
                .query_map([id_blob(tenant.0)], rate_from)?
                .collect::<rusqlite::Result<_>>()?)
        })
    }

    fn rate(&self, tenant: TenantId, base: Currency, quote: Currency) -> Result<Option<RateRecord>> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT * FROM fx_rates WHERE tenant = ?1 AND base = ?2 AND quote = ?3")?
                .query_row(params![id_blob(tenant.0), base.code(), quote.code()], rate_from)
                .optional()?)
        })
    }

    fn fee_bps(&self, tenant: TenantId) -> Result<u32> {
        self.with(|conn| {
            let bps: Option<i64> = conn
                .prepare_cached("SELECT fee_bps FROM fx_settings WHERE tenant = ?1")?
                .query_row([id_blob(tenant.0)], |row| row.get(0))
                .optional()?;
            Ok(bps.and_then(|b| u32::try_from(b).ok()).unwrap_or(0))
        })
    }

    fn set_fee_bps(&self, tenant: TenantId, fee_bps: u32, now: u64) -> Result<()> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO fx_settings (tenant, fee_bps, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant) DO UPDATE SET fee_bps = excluded.fee_bps, updated_at = excluded.updated_at",
                params![id_blob(tenant.0), i64::from(fee_bps), int(now)],
            )?;
            Ok(())
        })
    }

    fn insert_quote(&self, q: &Quote, saved: Option<&IdempotencyRecord>) -> Result<()> {
        self.with(|conn| {
            let tx = conn.unchecked_transaction()?;
            tx.execute(
                "INSERT INTO fx_quotes (id, tenant, from_currency, to_currency, rate, source_amount, target_amount,
                     fee, created_at, expires_at, used_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    id_blob(q.id.0),
                    id_blob(q.tenant.0),
                    q.from.code(),
                    q.to.code(),
                    q.rate.to_string(),
                    int(q.source_amount),
                    int(q.target_amount),
                    int(q.fee),
                    int(q.created_at),
                    int(q.expires_at),
                    q.used_by.map(|p| id_blob(p.0)),
                ],
            )?;
            if let Some(r) = saved {
                tx.execute(
                    "INSERT INTO idempotency (tenant, key, fingerprint, status, body, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![id_blob(r.tenant.0), r.key, r.fingerprint, r.status, r.body, int(r.created_at)],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn quote(&self, tenant: TenantId, id: QuoteId) -> Result<Option<Quote>> {
        self.with(|conn| {
            Ok(conn
                .prepare_cached("SELECT * FROM fx_quotes WHERE id = ?1 AND tenant = ?2")?
                .query_row(params![id_blob(id.0), id_blob(tenant.0)], quote_from)
                .optional()?)
        })
    }

    fn insert_batch_fx(&self, batch: BatchId, quotes: &[Quote], items: &[(u64, ItemFx)]) -> Result<()> {
        self.with(|conn| {
            let tx = conn.unchecked_transaction()?;
            let blob = id_blob(batch.0);
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO fx_quotes (id, tenant, from_currency, to_currency, rate, source_amount, target_amount,
                         fee, created_at, expires_at, used_by, batch)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, ?11)",
                )?;
                for q in quotes {
                    insert.execute(params![
                        id_blob(q.id.0),
                        id_blob(q.tenant.0),
                        q.from.code(),
                        q.to.code(),
                        q.rate.to_string(),
                        int(q.source_amount),
                        int(q.target_amount),
                        int(q.fee),
                        int(q.created_at),
                        int(q.expires_at),
                        blob,
                    ])?;
                }
                let mut insert = tx.prepare_cached(
                    "INSERT INTO batch_item_fx (batch, idx, quote, source_amount, fee) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for (index, fx) in items {
                    insert.execute(params![
                        blob,
                        int(*index),
                        id_blob(fx.quote.0),
                        int(fx.source_amount),
                        int(fx.fee)
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn clear_batch_fx(&self, batch: BatchId) -> Result<()> {
        self.with(|conn| {
            let tx = conn.unchecked_transaction()?;
            tx.execute("DELETE FROM batch_item_fx WHERE batch = ?1", [id_blob(batch.0)])?;
            tx.execute("DELETE FROM fx_quotes WHERE batch = ?1", [id_blob(batch.0)])?;
            tx.commit()?;
            Ok(())
        })
    }

    fn batch_quotes(&self, batch: BatchId) -> Result<Vec<Quote>> {
        self.with(|conn| batch_quotes(conn, batch))
    }

    fn batch_item_fx(&self, batch: BatchId, first: u64, last: u64) -> Result<Vec<(u64, ItemFx)>> {
        self.with(|conn| batch_item_fx(conn, batch, first, last))
    }
}

/// The quotes of `batch`, by source then target currency code.
pub(super) fn batch_quotes(conn: &rusqlite::Connection, batch: BatchId) -> Result<Vec<Quote>> {
    let mut stmt =
        conn.prepare_cached("SELECT * FROM fx_quotes WHERE batch = ?1 ORDER BY from_currency, to_currency")?;
    let quotes = stmt.query_map([id_blob(batch.0)], quote_from)?.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(quotes)
}

/// The payer sides of `batch`'s cross-currency items with indexes in `first..=last`, by index.
pub(super) fn batch_item_fx(
    conn: &rusqlite::Connection,
    batch: BatchId,
    first: u64,
    last: u64,
) -> Result<Vec<(u64, ItemFx)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT idx, quote, source_amount, fee FROM batch_item_fx WHERE batch = ?1 AND idx BETWEEN ?2 AND ?3 ORDER BY idx",
    )?;
    let rows = stmt
        .query_map(params![id_blob(batch.0), int(first), int(last)], |row| {
            Ok((
                uint(row, "idx")?,
                ItemFx {
                    quote: QuoteId(blob_id(row, "quote")?),
                    source_amount: uint(row, "source_amount")?,
                    fee: uint(row, "fee")?,
                },
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}
