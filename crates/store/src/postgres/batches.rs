//! Batches in PostgreSQL (see [`crate::batches`] for the records and the rules): batch rows,
//! item rows, result runs, and the item listing that derives each item's status from them with
//! the backend-neutral [`WindowResults`] and [`unsent`], as the SQLite store does.

use super::codec::{account_from, all, get, id, id_bytes, int, opt_hash, opt_id, opt_uint, parsed, uint};
use super::open::OUTBOX_LOCK;
use super::reader::PostgresReader;
use crate::batches::{
    end_status, result_runs, result_status, BatchItemRow, BatchRecord, BatchStore, BatchTotal, Claim, Counters,
    ItemReference, NewRun, ResultRun, Validated,
};
use crate::{Page, Result, StoreError};
use paycore_ledger::{
    Account, AccountId, BatchFormat, BatchId, BatchItem, BatchMode, BatchStatus, ChangeSet, Currency, EventKind,
    ItemStatus, OnInvalid, TenantId,
};
use postgres::{GenericClient, IsolationLevel, Row, Transaction};
use std::collections::{HashMap, HashSet};

pub(super) fn batch_from(row: &Row) -> Result<BatchRecord> {
    Ok(BatchRecord {
        id: BatchId(id(row, "id")?),
        tenant: TenantId(id(row, "tenant")?),
        status: parsed(row, "status", BatchStatus::parse)?,
        format: parsed(row, "format", BatchFormat::parse)?,
        mode: parsed(row, "mode", BatchMode::parse)?,
        on_invalid: parsed(row, "on_invalid", OnInvalid::parse)?,
        payer: get(row, "payer")?,
        currency: get(row, "currency")?,
        expected_count: opt_uint(row, "expected_count")?,
        expected_total: get(row, "expected_total")?,
        file: get(row, "file")?,
        variant: get(row, "variant")?,
        message_id: get(row, "message_id")?,
        total: uint(row, "total")?,
        invalid: uint(row, "invalid")?,
        succeeded: uint(row, "succeeded")?,
        failed: uint(row, "failed")?,
        held: uint(row, "held")?,
        cancel_requested: get(row, "cancel_requested")?,
        rejection: get(row, "rejection")?,
        created_at: uint(row, "created_at")?,
        validated_at: opt_uint(row, "validated_at")?,
        completed_at: opt_uint(row, "completed_at")?,
        idempotency_key: get(row, "idempotency_key")?,
        fingerprint: opt_hash(row, "fingerprint")?,
    })
}

/// An item row with its stored validation status: `invalid` or `pending`.
fn item_from(row: &Row) -> Result<BatchItemRow> {
    let currency: Option<&str> = get(row, "currency")?;
    Ok(BatchItemRow {
        index: uint(row, "idx")?,
        line: uint(row, "line")?,
        location: get(row, "location")?,
        reference: get(row, "reference")?,
        instruction_id: get(row, "instruction_id")?,
        payment_information_id: get(row, "payment_information_id")?,
        payer_text: get(row, "payer_text")?,
        payee_text: get(row, "payee_text")?,
        payer: opt_id(row, "payer")?.map(AccountId),
        payee: opt_id(row, "payee")?.map(AccountId),
        amount: opt_uint(row, "amount")?,
        currency: currency.and_then(Currency::from_code),
        status: parsed(row, "status", ItemStatus::parse)?,
        failure_code: get(row, "failure_code")?,
        message: get(row, "message")?,
        remittance: get(row, "remittance")?,
    })
}

/// The result runs that cover an index in `lo..=hi`: phase 0, then phase 1 (which overrides
/// it), each in index order. Runs of one phase never overlap, so the only run that starts
/// before `lo` and reaches into the window is the last one of its phase that starts before it.
fn runs_in(client: &mut impl GenericClient, batch: &[u8; 16], lo: u64, hi: u64) -> Result<Vec<ResultRun>> {
    let rows = client.query(
        "SELECT first, last, status, code FROM (
             (SELECT * FROM batch_results WHERE batch = $1 AND phase = 0 AND first < $2 ORDER BY first DESC LIMIT 1)
             UNION ALL
             (SELECT * FROM batch_results WHERE batch = $1 AND phase = 1 AND first < $2 ORDER BY first DESC LIMIT 1)
             UNION ALL
             (SELECT * FROM batch_results WHERE batch = $1 AND first BETWEEN $2 AND $3)
         ) r WHERE last >= $2 ORDER BY phase, first",
        &[batch, &int(lo), &int(hi)],
    )?;
    rows.iter()
        .map(|row| {
            let status: &str = get(row, "status")?;
            Ok(ResultRun {
                first: uint(row, "first")?,
                last: uint(row, "last")?,
                status: result_status(status)?,
                code: get(row, "code")?,
            })
        })
        .collect()
}

/// Items of a batch in index order after `after`, with their derived status: all of them, or
/// those whose status is one of `statuses`, at most `limit`. Reads with the caller's client
/// (inside its transaction, so that rows and results are one snapshot).
pub(super) fn list_items(
    client: &mut impl GenericClient,
    batch: BatchId,
    statuses: &[ItemStatus],
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<BatchItemRow>> {
    let key = id_bytes(batch.0);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let Some(row) = client.query_opt("SELECT status FROM batches WHERE id = $1", &[&key])? else {
        return Ok(Vec::new());
    };
    let ended = parsed(&row, "status", BatchStatus::parse)?;
    let after_sql = after.map_or(-1, int);
    let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
    if statuses == [ItemStatus::Invalid] {
        let rows = client.query(
            "SELECT * FROM batch_items WHERE batch = $1 AND status = 'invalid' AND idx > $2 ORDER BY idx LIMIT $3",
            &[&key, &after_sql, &limit_sql],
        )?;
        return all(&rows, item_from);
    }
    let max: Option<i64> =
        client.query_one("SELECT max(idx) FROM batch_items WHERE batch = $1", &[&key])?.try_get(0)?;
    let Some(max) = max.and_then(|m| u64::try_from(m).ok()) else { return Ok(Vec::new()) };
    crate::batches::list_items(&mut Rows { client, key }, ended, statuses, after, max, limit)
}

/// One batch's item rows and result runs, as [`crate::batches::list_items`] reads them.
struct Rows<'a, C> {
    client: &'a mut C,
    key: [u8; 16],
}

impl<C: GenericClient> crate::batches::ItemRows<BatchItemRow> for Rows<'_, C> {
    fn runs(&mut self, lo: u64, hi: u64) -> Result<Vec<ResultRun>> {
        runs_in(self.client, &self.key, lo, hi)
    }

    fn rows(&mut self, first: u64, last: u64, limit: usize) -> Result<Vec<BatchItemRow>> {
        let rows = self.client.query(
            "SELECT * FROM batch_items WHERE batch = $1 AND idx BETWEEN $2 AND $3 ORDER BY idx LIMIT $4",
            &[&self.key, &int(first), &int(last), &i64::try_from(limit).unwrap_or(i64::MAX)],
        )?;
        all(&rows, item_from)
    }
}

/// Writes the engine's batch results inside its commit: a row per run of consecutive items
/// with the same result, the batches' counters, and the end of batches. A run already stored
/// (a chunk committed before a crash, sent again) is not inserted again and counts once.
pub(super) fn commit_batch_changes(tx: &mut Transaction<'_>, changes: &ChangeSet) -> Result<()> {
    let runs: Vec<NewRun> = result_runs(&changes.batch_items).collect();
    if !runs.is_empty() {
        let inserted = tx.query(
            "INSERT INTO batch_results (batch, phase, first, last, status, code)
             SELECT * FROM UNNEST($1::bytea[], $2::smallint[], $3::bigint[], $4::bigint[], $5::text[], $6::text[])
             ON CONFLICT DO NOTHING RETURNING batch, phase, first",
            &[
                &runs.iter().map(|r| id_bytes(r.batch.0)).collect::<Vec<_>>(),
                &runs.iter().map(|r| i16::from(r.phase)).collect::<Vec<_>>(),
                &runs.iter().map(|r| int(r.first)).collect::<Vec<_>>(),
                &runs.iter().map(|r| int(r.last)).collect::<Vec<_>>(),
                &runs.iter().map(|r| ItemStatus::from(r.state).as_str()).collect::<Vec<_>>(),
                &runs.iter().map(|r| r.code).collect::<Vec<_>>(),
            ],
        )?;
        let mut stored: HashSet<(u128, i16, u64)> = HashSet::new();
        for row in &inserted {
            stored.insert((id(row, "batch")?, get(row, "phase")?, uint(row, "first")?));
        }
        let mut counters: HashMap<BatchId, Counters> = HashMap::new();
        for run in runs.iter().filter(|r| stored.contains(&(r.batch.0, i16::from(r.phase), r.first))) {
            counters.entry(run.batch).or_default().add(run.counters());
        }
        let counters: Vec<(BatchId, Counters)> = counters.into_iter().collect();
        tx.execute(
            "UPDATE batches SET succeeded = batches.succeeded + c.succeeded, failed = batches.failed + c.failed,
                 held = batches.held + c.held
             FROM UNNEST($1::bytea[], $2::bigint[], $3::bigint[], $4::bigint[]) AS c (id, succeeded, failed, held)
             WHERE batches.id = c.id",
            &[
                &counters.iter().map(|(b, _)| id_bytes(b.0)).collect::<Vec<_>>(),
                &counters.iter().map(|(_, c)| c.succeeded).collect::<Vec<_>>(),
                &counters.iter().map(|(_, c)| c.failed).collect::<Vec<_>>(),
                &counters.iter().map(|(_, c)| c.held).collect::<Vec<_>>(),
            ],
        )?;
    }
    // One statement per batch that ends: a handful per commit at most. The outbox's lock is
    // held (see `PostgresStore::commit`).
    for (batch, end) in &changes.batch_ends {
        let status = end_status(*end);
        let key = id_bytes(batch.0);
        // Items never sent to the ledger (cancelled, or left when an atomic batch failed)
        // count as failed: every valid item is then succeeded or failed.
        tx.execute(
            "UPDATE batches SET status = $2, completed_at = $3,
                 failed = failed + greatest(0, total - invalid - succeeded - failed - held)
             WHERE id = $1",
            &[&key, &status.as_str(), &int(changes.last_timestamp)],
        )?;
        tx.execute(
            "INSERT INTO outbox (tenant, type, object, created_at)
             SELECT tenant, $2::text, id, $3::bigint FROM batches WHERE id = $1",
            &[&key, &EventKind::of_batch(status).map(EventKind::as_str), &int(changes.last_timestamp)],
        )?;
    }
    Ok(())
}

impl BatchStore for PostgresReader {
    fn create_batch(&self, b: &BatchRecord) -> Result<()> {
        self.with(|client| {
            client.execute(
                "INSERT INTO batches (id, tenant, status, format, mode, on_invalid, payer, currency,
                     expected_count, expected_total, file, created_at, idempotency_key, fingerprint)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                &[
                    &id_bytes(b.id.0),
                    &id_bytes(b.tenant.0),
                    &b.status.as_str(),
                    &b.format.as_str(),
                    &b.mode.as_str(),
                    &b.on_invalid.as_str(),
                    &b.payer,
                    &b.currency,
                    &b.expected_count.map(int),
                    &b.expected_total,
                    &b.file,
                    &int(b.created_at),
                    &b.idempotency_key,
                    &b.fingerprint,
                ],
            )?;
            Ok(())
        })
    }

    fn clear_batch_items(&self, batch: BatchId) -> Result<()> {
        self.with(|client| {
            let mut tx = client.transaction()?;
            tx.execute("DELETE FROM batch_items WHERE batch = $1", &[&id_bytes(batch.0)])?;
            tx.execute("DELETE FROM batch_totals WHERE batch = $1", &[&id_bytes(batch.0)])?;
            tx.commit()?;
            Ok(())
        })
    }

    fn insert_batch_items(&self, batch: BatchId, items: &[BatchItemRow]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let texts = |f: fn(&BatchItemRow) -> Option<&str>| items.iter().map(f).collect::<Vec<_>>();
        let accounts = |f: fn(&BatchItemRow) -> Option<AccountId>| {
            items.iter().map(|i| f(i).map(|a| id_bytes(a.0))).collect::<Vec<_>>()
        };
        self.with(|client| {
            client.execute(
                "INSERT INTO batch_items (batch, idx, line, location, reference, instruction_id,
                     payment_information_id, payer_text, payee_text, payer, payee, amount, currency, status,
                     failure_code, message, remittance)
                 SELECT $1::bytea, * FROM UNNEST($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::text[], $9::text[], $10::bytea[], $11::bytea[], $12::bigint[], $13::text[], $14::text[],
                     $15::text[], $16::text[], $17::text[])",
                &[
                    &id_bytes(batch.0),
                    &items.iter().map(|i| int(i.index)).collect::<Vec<_>>(),
                    &items.iter().map(|i| int(i.line)).collect::<Vec<_>>(),
                    &items.iter().map(|i| i.location.as_str()).collect::<Vec<_>>(),
                    &texts(|i| i.reference.as_deref()),
                    &texts(|i| i.instruction_id.as_deref()),
                    &texts(|i| i.payment_information_id.as_deref()),
                    &texts(|i| i.payer_text.as_deref()),
                    &texts(|i| i.payee_text.as_deref()),
                    &accounts(|i| i.payer),
                    &accounts(|i| i.payee),
                    &items.iter().map(|i| i.amount.map(int)).collect::<Vec<_>>(),
                    &items.iter().map(|i| i.currency.map(Currency::code)).collect::<Vec<_>>(),
                    &items.iter().map(|i| i.status.as_str()).collect::<Vec<_>>(),
                    &texts(|i| i.failure_code.as_deref()),
                    &texts(|i| i.message.as_deref()),
                    &texts(|i| i.remittance.as_deref()),
                ],
            )?;
            Ok(())
        })
    }

    fn finish_validation(&self, batch: BatchId, v: &Validated<'_>) -> Result<()> {
        self.with(|client| {
            let mut tx = client.transaction()?;
            let key = id_bytes(batch.0);
            if v.status == BatchStatus::Rejected {
                // Before the batch's row lock, as every writer of the outbox does.
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&OUTBOX_LOCK])?;
            }
            tx.execute(
                "INSERT INTO batch_totals (batch, currency, count, sum)
                 SELECT $1::bytea, * FROM UNNEST($2::text[], $3::bigint[], $4::text[])",
                &[
                    &key,
                    &v.totals.iter().map(|t| t.currency.code()).collect::<Vec<_>>(),
                    &v.totals.iter().map(|t| int(t.count)).collect::<Vec<_>>(),
                    &v.totals.iter().map(|t| t.sum.to_string()).collect::<Vec<_>>(),
                ],
            )?;
            tx.execute(
                "UPDATE batches SET status = $2, total = $3, invalid = $4, variant = $5, message_id = $6,
                     rejection = $7, validated_at = $8, completed_at = CASE WHEN $2::text = 'rejected' THEN $8::bigint END
                 WHERE id = $1",
                &[&key, &v.status.as_str(), &int(v.total), &int(v.invalid), &v.variant, &v.message_id, &v.rejection, &int(v.now)],
            )?;
            if v.status == BatchStatus::Rejected {
                tx.execute(
                    "INSERT INTO outbox (tenant, type, object, created_at)
                     SELECT tenant, $3::text, id, $2::bigint FROM batches WHERE id = $1",
                    &[&key, &int(v.now), &EventKind::BatchRejected.as_str()],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn request_cancel(&self, tenant: TenantId, batch: BatchId) -> Result<bool> {
        self.with(|client| {
            let n = client.execute(
                "UPDATE batches SET cancel_requested = true WHERE id = $1 AND tenant = $2",
                &[&id_bytes(batch.0), &id_bytes(tenant.0)],
            )?;
            Ok(n == 1)
        })
    }

    fn batch(&self, tenant: TenantId, id: BatchId) -> Result<Option<BatchRecord>> {
        self.with(|client| {
            client
                .query_opt(
                    "SELECT * FROM batches WHERE id = $1 AND tenant = $2",
                    &[&id_bytes(id.0), &id_bytes(tenant.0)],
                )?
                .map(|row| batch_from(&row))
                .transpose()
        })
    }

    fn batches(&self, tenant: TenantId, status: Option<BatchStatus>, page: Page<BatchId>) -> Result<Vec<BatchRecord>> {
        let before = id_bytes(page.after.map_or(u128::MAX, |id| id.0));
        let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
        self.with(|client| {
            let rows = client.query(
                "SELECT * FROM batches WHERE tenant = $1 AND ($2::text IS NULL OR status = $2) AND id < $3
                 ORDER BY id DESC LIMIT $4",
                &[&id_bytes(tenant.0), &status.map(BatchStatus::as_str), &before, &limit],
            )?;
            rows.iter().map(batch_from).collect()
        })
    }

    fn batch_totals(&self, batch: BatchId) -> Result<Vec<BatchTotal>> {
        self.with(|client| {
            let rows = client.query(
                "SELECT currency, count, sum FROM batch_totals WHERE batch = $1 ORDER BY currency",
                &[&id_bytes(batch.0)],
            )?;
            rows.iter()
                .map(|row| {
                    let sum: &str = get(row, "sum")?;
                    Ok(BatchTotal {
                        currency: parsed(row, "currency", Currency::from_code)?,
                        count: uint(row, "count")?,
                        sum: sum.parse().map_err(|_| StoreError::Corrupt(format!("batch total {sum:?}")))?,
                    })
                })
                .collect()
        })
    }

    fn batch_items(
        &self,
        batch: BatchId,
        statuses: &[ItemStatus],
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<BatchItemRow>> {
        self.with(|client| {
            let mut tx = snapshot(client)?;
            let items = list_items(&mut tx, batch, statuses, after, limit)?;
            tx.commit()?;
            Ok(items)
        })
    }

    fn item_references(
        &self,
        tenant: TenantId,
        transfers: &[paycore_ledger::Transfer],
    ) -> Result<Vec<Option<ItemReference>>> {
        self.with(|client| {
            let stmt = client.prepare(
                "SELECT i.reference, i.remittance FROM batches b JOIN batch_items i ON i.batch = b.id AND i.idx = $3
                 WHERE b.id BETWEEN $1 AND $2 AND b.tenant = $4
                   AND i.payer = $5 AND i.payee = $6 AND i.amount = $7",
            )?;
            let mut references = Vec::with_capacity(transfers.len());
            for transfer in transfers {
                let Some((batches, index)) = BatchId::item_of(transfer.id) else {
                    references.push(None);
                    continue;
                };
                let index = i64::try_from(index).unwrap_or(i64::MAX);
                let amount = i64::try_from(transfer.amount).unwrap_or(i64::MAX);
                let found = client.query_opt(
                    &stmt,
                    &[
                        &id_bytes(batches.start().0),
                        &id_bytes(batches.end().0),
                        &index,
                        &id_bytes(tenant.0),
                        &id_bytes(transfer.debit_account.0),
                        &id_bytes(transfer.credit_account.0),
                        &amount,
                    ],
                )?;
                references.push(match found {
                    Some(row) => {
                        Some(ItemReference { reference: get(&row, "reference")?, remittance: get(&row, "remittance")? })
                    }
                    None => None,
                });
            }
            Ok(references)
        })
    }

    fn batch_work(
        &self,
        batch: BatchId,
        status: ItemStatus,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<BatchItem>> {
        let items = self.batch_items(batch, &[status], after, limit)?;
        Ok(items
            .into_iter()
            .filter_map(|i| match (i.payer, i.payee, i.amount, i.currency) {
                (Some(payer), Some(payee), Some(amount), Some(currency)) => {
                    Some(BatchItem { index: i.index, payer, payee, amount, currency, fx: None, refund: None })
                }
                _ => None,
            })
            .collect())
    }

    fn batch_by_key(&self, tenant: TenantId, key: &str) -> Result<Option<BatchRecord>> {
        self.with(|client| {
            client
                .query_opt(
                    "SELECT * FROM batches WHERE tenant = $1 AND idempotency_key = $2",
                    &[&id_bytes(tenant.0), &key],
                )?
                .map(|row| batch_from(&row))
                .transpose()
        })
    }

    fn active_batches(&self) -> Result<Vec<BatchRecord>> {
        self.with(|client| {
            let rows = client.query(
                "SELECT * FROM batches WHERE status IN ($1, $2) ORDER BY created_at",
                &[&BatchStatus::Validating.as_str(), &BatchStatus::Processing.as_str()],
            )?;
            all(&rows, batch_from)
        })
    }

    fn claim_next_batch(&self, claim: &Claim<'_>) -> Result<Option<BatchRecord>> {
        self.with(|client| super::leases::claim_next_batch(client, claim))
    }

    fn claim_batch(&self, batch: BatchId, claim: &Claim<'_>) -> Result<Option<BatchRecord>> {
        self.with(|client| super::leases::claim_batch(client, batch, claim))
    }

    fn renew_batch_lease(&self, batch: BatchId, owner: &str, until: u64) -> Result<bool> {
        self.with(|client| super::leases::renew_batch_lease(client, batch, owner, until))
    }

    fn release_batch_lease(&self, batch: BatchId, owner: &str) -> Result<bool> {
        self.with(|client| super::leases::release_batch_lease(client, batch, owner))
    }

    fn batch_payment(
        &self,
        tenant: TenantId,
        payment: paycore_ledger::PaymentId,
    ) -> Result<Option<paycore_ledger::Payment>> {
        crate::Reader::payment(self, tenant, payment)
    }

    fn find_account(&self, tenant: TenantId, text: &str, currency: Option<Currency>) -> Result<Option<Account>> {
        self.with(|client| {
            // One snapshot: the row, its checkpoint and the transfers since (see `balances`).
            let mut tx = snapshot(client)?;
            let row = match text.parse::<AccountId>() {
                Ok(id) => tx.query_opt(
                    "SELECT * FROM accounts WHERE id = $1 AND tenant = $2",
                    &[&id_bytes(id.0), &id_bytes(tenant.0)],
                )?,
                Err(_) => tx.query_opt(
                    "SELECT * FROM accounts WHERE tenant = $1 AND reference = $2
                     ORDER BY currency = $3::text DESC NULLS LAST, created_at LIMIT 1",
                    &[&id_bytes(tenant.0), &text, &currency.map(Currency::code)],
                )?,
            };
            let mut account = row.map(|row| account_from(&row)).transpose()?.into_iter().collect::<Vec<_>>();
            super::balances::bring_up_to_date(&mut tx, &mut account)?;
            tx.commit()?;
            Ok(account.pop())
        })
    }

    fn file_writer(&self, file: &str) -> Result<Box<dyn crate::FileSink>> {
        super::files::writer(self.connections(), file)
    }

    fn open_file(&self, file: &str) -> Result<Option<Box<dyn std::io::Read + Send>>> {
        super::files::open(self.connections(), file)
    }

    fn remove_file(&self, file: &str) -> Result<()> {
        super::files::remove(&self.connections(), file)
    }
}

/// A read-only transaction that sees one snapshot of the database throughout.
pub(super) fn snapshot(client: &mut postgres::Client) -> Result<Transaction<'_>> {
    Ok(client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start()?)
}
