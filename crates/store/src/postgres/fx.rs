//! FX rates, fees and quotes in PostgreSQL (see [`crate::fx`]).

use super::codec::{all, id, id_bytes, int, parsed, quote_from, uint};
use super::reader::PostgresReader;
use crate::fx::{FxStore, RateRecord};
use crate::{IdempotencyRecord, Result};
use paycore_ledger::fx::{Quote, Rate};
use paycore_ledger::{BatchId, Currency, ItemFx, QuoteId, TenantId};
use postgres::{GenericClient, Row};

fn rate_from(row: &Row) -> Result<RateRecord> {
    Ok(RateRecord {
        tenant: TenantId(id(row, "tenant")?),
        base: parsed(row, "base", Currency::from_code)?,
        quote: parsed(row, "quote", Currency::from_code)?,
        rate: parsed(row, "rate", |text| Rate::parse(text).ok())?,
        updated_at: uint(row, "updated_at")?,
    })
}

impl FxStore for PostgresReader {
    fn set_rate(&self, r: &RateRecord) -> Result<()> {
        self.with(|client| {
            client.execute(
                "INSERT INTO fx_rates (tenant, base, quote, rate, updated_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (tenant, base, quote) DO UPDATE SET rate = excluded.rate, updated_at = excluded.updated_at",
                &[&id_bytes(r.tenant.0), &r.base.code(), &r.quote.code(), &r.rate.to_string(), &int(r.updated_at)],
            )?;
            Ok(())
        })
    }

    fn rates(&self, tenant: TenantId) -> Result<Vec<RateRecord>> {
        self.with(|client| {
            let rows = client
                .query("SELECT * FROM fx_rates WHERE tenant = $1 ORDER BY base, quote", &[&id_bytes(tenant.0)])?;
            all(&rows, rate_from)
        })
    }

    fn rate(&self, tenant: TenantId, base: Currency, quote: Currency) -> Result<Option<RateRecord>> {
        self.with(|client| {
            let rows = client.query(
                "SELECT * FROM fx_rates WHERE tenant = $1 AND base = $2 AND quote = $3",
                &[&id_bytes(tenant.0), &base.code(), &quote.code()],
            )?;
            rows.first().map(rate_from).transpose()
        })
    }

    fn fee_bps(&self, tenant: TenantId) -> Result<u32> {
        self.with(|client| {
            let rows = client.query("SELECT fee_bps FROM fx_settings WHERE tenant = $1", &[&id_bytes(tenant.0)])?;
            Ok(rows
                .first()
                .map(|row| uint(row, "fee_bps"))
                .transpose()?
                .and_then(|b| u32::try_from(b).ok())
                .unwrap_or(0))
        })
    }

    fn set_fee_bps(&self, tenant: TenantId, fee_bps: u32, now: u64) -> Result<()> {
        self.with(|client| {
            client.execute(
                "INSERT INTO fx_settings (tenant, fee_bps, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (tenant) DO UPDATE SET fee_bps = excluded.fee_bps, updated_at = excluded.updated_at",
                &[&id_bytes(tenant.0), &i64::from(fee_bps), &int(now)],
            )?;
            Ok(())
        })
    }

    fn insert_quote(&self, q: &Quote, saved: Option<&IdempotencyRecord>) -> Result<()> {
        self.with(|client| {
            let mut tx = client.transaction()?;
            tx.execute(
                "INSERT INTO fx_quotes (id, tenant, from_currency, to_currency, rate, source_amount, target_amount,
                     fee, created_at, expires_at, used_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    &id_bytes(q.id.0),
                    &id_bytes(q.tenant.0),
                    &q.from.code(),
                    &q.to.code(),
                    &q.rate.to_string(),
                    &int(q.source_amount),
                    &int(q.target_amount),
                    &int(q.fee),
                    &int(q.created_at),
                    &int(q.expires_at),
                    &q.used_by.map(|p| id_bytes(p.0)),
                ],
            )?;
            if let Some(r) = saved {
                tx.execute(
                    "INSERT INTO idempotency (tenant, key, fingerprint, status, body, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        &id_bytes(r.tenant.0),
                        &r.key,
                        &r.fingerprint.as_slice(),
                        &i32::from(r.status),
                        &r.body,
                        &int(r.created_at),
                    ],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn quote(&self, tenant: TenantId, quote: QuoteId) -> Result<Option<Quote>> {
        self.with(|client| {
            let rows = client.query(
                "SELECT * FROM fx_quotes WHERE id = $1 AND tenant = $2",
                &[&id_bytes(quote.0), &id_bytes(tenant.0)],
            )?;
            rows.first().map(quote_from).transpose()
        })
    }

    fn insert_batch_fx(&self, batch: BatchId, quotes: &[Quote], items: &[(u64, ItemFx)]) -> Result<()> {
        self.with(|client| {
            let mut tx = client.transaction()?;
            let id = id_bytes(batch.0);
            for q in quotes {
                tx.execute(
                    "INSERT INTO fx_quotes (id, tenant, from_currency, to_currency, rate, source_amount, target_amount,
                         fee, created_at, expires_at, used_by, batch)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, $11)",
                    &[
                        &id_bytes(q.id.0),
                        &id_bytes(q.tenant.0),
                        &q.from.code(),
                        &q.to.code(),
                        &q.rate.to_string(),
                        &int(q.source_amount),
                        &int(q.target_amount),
                        &int(q.fee),
                        &int(q.created_at),
                        &int(q.expires_at),
                        &id.as_slice(),
                    ],
                )?;
            }
            // One statement per 10 000 items, as arrays.
            for chunk in items.chunks(10_000) {
                let indexes: Vec<i64> = chunk.iter().map(|(i, _)| int(*i)).collect();
                let quotes: Vec<Vec<u8>> = chunk.iter().map(|(_, fx)| id_bytes(fx.quote.0).to_vec()).collect();
                let sources: Vec<i64> = chunk.iter().map(|(_, fx)| int(fx.source_amount)).collect();
                let fees: Vec<i64> = chunk.iter().map(|(_, fx)| int(fx.fee)).collect();
                tx.execute(
                    "INSERT INTO batch_item_fx (batch, idx, quote, source_amount, fee)
                     SELECT $1, * FROM UNNEST($2::BIGINT[], $3::BYTEA[], $4::BIGINT[], $5::BIGINT[])",
                    &[&id.as_slice(), &indexes, &quotes, &sources, &fees],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn clear_batch_fx(&self, batch: BatchId) -> Result<()> {
        self.with(|client| {
            let mut tx = client.transaction()?;
            let id = id_bytes(batch.0);
            tx.execute("DELETE FROM batch_item_fx WHERE batch = $1", &[&id.as_slice()])?;
            tx.execute("DELETE FROM fx_quotes WHERE batch = $1", &[&id.as_slice()])?;
            tx.commit()?;
            Ok(())
        })
    }

    fn batch_quotes(&self, batch: BatchId) -> Result<Vec<Quote>> {
        self.with(|client| batch_quotes(client, batch))
    }

    fn batch_item_fx(&self, batch: BatchId, first: u64, last: u64) -> Result<Vec<(u64, ItemFx)>> {
        self.with(|client| batch_item_fx(client, batch, first, last))
    }
}

/// The quotes of `batch`, by source then target currency code.
pub(super) fn batch_quotes(client: &mut impl GenericClient, batch: BatchId) -> Result<Vec<Quote>> {
    let rows = client.query(
        "SELECT * FROM fx_quotes WHERE batch = $1 ORDER BY from_currency, to_currency",
        &[&id_bytes(batch.0).as_slice()],
    )?;
    rows.iter().map(quote_from).collect()
}

/// The payer sides of `batch`'s cross-currency items with indexes in `first..=last`, by index.
pub(super) fn batch_item_fx(
    client: &mut impl GenericClient,
    batch: BatchId,
    first: u64,
    last: u64,
) -> Result<Vec<(u64, ItemFx)>> {
    let rows = client.query(
        "SELECT idx, quote, source_amount, fee FROM batch_item_fx WHERE batch = $1 AND idx BETWEEN $2 AND $3 ORDER BY idx",
        &[&id_bytes(batch.0).as_slice(), &int(first), &int(last)],
    )?;
    rows.iter()
        .map(|row| {
            Ok((
                uint(row, "idx")?,
                ItemFx {
                    quote: QuoteId(id(row, "quote")?),
                    source_amount: uint(row, "source_amount")?,
                    fee: uint(row, "fee")?,
                },
            ))
        })
        .collect()
}
