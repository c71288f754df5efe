//! The engine's side of the SQLite store: recover, load, and the commit of each batch in one
//! transaction, with the balances it publishes to the readers and checkpoints to `accounts`.

use super::batches::commit_batch_changes;
use super::checkpoint::Checkpointer;
use super::codec::{
    account_from, hold_from, id_blob, idempotency_from, insert_rows, int, payment_from, quote_from, shard_key,
    transfer_at, transfer_from, ROWS_PER_INSERT, TRANSFER_SELECT,
};
use super::fresh::{poisoned, Fresh};
use super::history::Indexer;
use super::raw::{Bind, StaticStatement};
use crate::verify::{balance_shard, Through, BALANCE_SHARDS};
use crate::{IdempotencyRecord, Loaded, Recovered, Result, Store, StoreError};
use paycore_ledger::{
    Account, AccountId, Balances, ChangeSet, HoldRecord, Overdraft, Payment, PaymentId, Prefetch, QuoteId, Refund,
    ResultCode, Side, TenantId, Transfer, TransferId,
};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::collections::HashMap;
use std::fs::File;
use std::time::{Duration, Instant};

const HOLD_COLUMNS: &str = "SELECT t.*, h.status, h.payment FROM holds h JOIN transfers t ON t.id = h.id";

/// The most accounts whose balances wait for a checkpoint (bounds the memory of `Fresh`).
const FRESH_MAX: usize = 200_000;
/// The longest balances wait for a checkpoint while batches keep committing; a restart replays
/// the transfers since the last one. The accounts are checkpointed a shard at a time
/// ([`BALANCE_SHARDS`]), one shard every `CHECKPOINT_EVERY / BALANCE_SHARDS`.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The meta keys of the shards' checkpoints: `balances_through/0` … `/15`.
const SHARD_KEY: &str = "balances_through/";

/// The engine's connection.
///
/// A commit appends transfers but does not rewrite the balances of the accounts they touch:
/// rewriting ~8 000 account rows per 8 189-transfer batch was half of the commit's statements.
/// Committed balances wait in memory (`fresh`, which readers consult first) and are written to
/// `accounts` by a checkpoint inside a commit, which also records the timestamp they are valid
/// at. Balances are a function of the transfers, so nothing acknowledged depends on the
/// checkpoint: after a crash, `recover` replays the transfers after it and checkpoints at once.
///
/// A checkpoint writes one shard of the accounts ([`balance_shard`]; `meta.balances_through/N`),
/// the shards in turn, so that each account's row is written at least every
/// [`CHECKPOINT_EVERY`]: writing every account touched in the last second in one commit
/// (~10 000 rows at 40 000 transfers a second) held up that commit, and with it every request
/// in flight, by 15–50 ms once a second. A full checkpoint (every shard, `meta.balances_through`)
/// is written when too many balances wait, on recovery and at shutdown.
pub(super) struct SqliteStore {
    /// The inserts of chunks of alike transfers (see [`insert_transfers`]), once prepared.
    /// Declared before `conn`: they must be finalized before the connection closes.
    alike_inserts: AlikeInserts,
    conn: Connection,
    /// Keeps `history.db` up with `transfers`; stops with the store.
    indexer: Indexer,
    /// Copies the WAL into the database file beside the commits; stops with the store.
    _checkpointer: Checkpointer,
    fresh: Fresh,
    /// The next shard to checkpoint, and when the last checkpoint was.
    next_shard: usize,
    checkpointed_at: Instant,
    /// Held for as long as the store lives.
    _lock: File,
}

impl Store for SqliteStore {
    fn recover(&mut self) -> Result<Recovered> {
        self.replay_balances()?;
        let conn = &self.conn;
        let mut accounts = conn
            .prepare("SELECT * FROM accounts")?
            .query_map([], account_from)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        // Balances the replay could not write (a full disk) are newer than their rows.
        let fresh = self.fresh.read().map_err(|_| poisoned())?;
        if !fresh.is_empty() {
            for account in &mut accounts {
                if let Some(balances) = fresh.get(&account.id) {
                    account.balances = *balances;
                }
            }
        }
        drop(fresh);
        let open_holds = conn
            .prepare(&format!("{HOLD_COLUMNS} WHERE h.status = 'pending'"))?
            .query_map([], hold_from)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let open_payments = conn
            .prepare("SELECT * FROM payments WHERE status IN ('requires_confirmation', 'requires_capture')")?
            .query_map([], payment_from)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let last = last_timestamp(conn)?;
        // The id index's last entry: one B-tree descent.
        let max_transfer_id: Option<[u8; 16]> = conn.query_row("SELECT max(id) FROM transfers", [], |r| r.get(0))?;
        let max_payment_id: Option<[u8; 16]> = conn.query_row("SELECT max(id) FROM payments", [], |r| r.get(0))?;
        Ok(Recovered {
            accounts,
            open_holds,
            open_payments,
            last_timestamp: last,
            max_transfer_id: max_transfer_id.map(|b| TransferId(u128::from_be_bytes(b))),
            max_payment_id: max_payment_id.map(|b| PaymentId(u128::from_be_bytes(b))),
        })
    }

    fn load(&mut self, wanted: &Prefetch) -> Result<Loaded> {
        let mut loaded = Loaded::default();
        let mut ids: Vec<u128> = wanted.transfers.iter().map(|id| id.0).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut point = self.conn.prepare_cached("SELECT * FROM transfers WHERE id = ?1")?;
        let mut range = self.conn.prepare_cached("SELECT * FROM transfers WHERE id BETWEEN ?1 AND ?2")?;
        // Close ids (a batch's items: the batch id with the item's index in the low bits) are
        // read with one range scan instead of a lookup each.
        for run in ids.chunk_by(|a, b| b - a <= RUN_GAP_MAX) {
            if let [id] = run {
                if let Some(t) = point.query_row([id_blob(*id)], transfer_from).optional()? {
                    loaded.transfers.push(t);
                }
                continue;
            }
            let (first, last) = (run[0], run[run.len() - 1]);
            let mut rows = range.query([id_blob(first), id_blob(last)])?;
            while let Some(row) = rows.next()? {
                let t = transfer_from(row)?;
                if run.binary_search(&t.id.0).is_ok() {
                    loaded.transfers.push(t);
                }
            }
        }
        let mut stmt = self.conn.prepare_cached(&format!("{HOLD_COLUMNS} WHERE h.id = ?1"))?;
        for id in &wanted.holds {
            if let Some(h) = stmt.query_row([id_blob(id.0)], hold_from).optional()? {
                loaded.holds.push(h);
            }
        }
        let mut stmt = self.conn.prepare_cached("SELECT * FROM payments WHERE id = ?1")?;
        for id in &wanted.payments {
            if let Some(p) = stmt.query_row([id_blob(id.0)], payment_from).optional()? {
                loaded.payments.push(p);
            }
        }
        if !wanted.quotes.is_empty() {
            let mut stmt = self.conn.prepare_cached("SELECT * FROM fx_quotes WHERE id = ?1")?;
            for id in &wanted.quotes {
                if let Some(q) = stmt.query_row([id_blob(id.0)], quote_from).optional()? {
                    loaded.quotes.push(q);
                }
            }
        }
        loaded.debits = super::limits::load_debits(&self.conn, wanted)?;
        if !wanted.clearing.is_empty() {
            (loaded.open_windows, loaded.window_ids) = super::clearing::load(&self.conn, &wanted.clearing)?;
        }
        Ok(loaded)
    }

    fn idempotency(&mut self, keys: &[(TenantId, &str)]) -> Result<Vec<IdempotencyRecord>> {
        let mut stmt = self.conn.prepare_cached("SELECT * FROM idempotency WHERE tenant = ?1 AND key = ?2")?;
        let mut found = Vec::new();
        for (tenant, key) in keys {
            if let Some(r) = stmt.query_row(params![id_blob(tenant.0), key], idempotency_from).optional()? {
                found.push(r);
            }
        }
        Ok(found)
    }

    fn commit(&mut self, changes: &ChangeSet, idempotency: &[IdempotencyRecord]) -> Result<()> {
        let checkpoint = self.checkpoint_due(changes.balances.len());
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        insert_accounts(&tx, &changes.new_accounts)?;
        super::limits::update_accounts(&tx, &changes.updated_accounts)?;
        super::limits::insert_audit(&tx, &changes.audit)?;
        insert_transfers(&tx, &mut self.alike_inserts, &changes.transfers)?;
        upsert_holds(&tx, &changes.holds)?;
        upsert_payments(&tx, &changes.payments)?;
        mark_quotes_used(&tx, &changes.quotes_used)?;
        insert_refunds(&tx, &changes.refunds)?;
        insert_idempotency(&tx, idempotency)?;
        insert_events(&tx, changes)?;
        commit_batch_changes(&tx, changes)?;
        super::returns::mark_returned(&tx, changes)?;
        super::clearing::insert(&tx, &changes.clearing_windows)?;
        // The batch's last timestamp is its last transfer's, the table's last key, unless
        // something else (an account, a payment, a clearing window) took a later one: only then
        // is it written apart (see [`last_timestamp`]). One page fewer in most commits.
        if changes.transfers.iter().map(|t| t.timestamp).max() < Some(changes.last_timestamp) {
            tx.prepare_cached(
                "INSERT INTO meta (key, value) VALUES ('last_timestamp', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute([int(changes.last_timestamp)])?;
        }
        if let Some(checkpoint) = checkpoint {
            let in_shard = |id: &AccountId| checkpoint.covers(*id);
            let mut due: HashMap<AccountId, Balances> = self
                .fresh
                .read()
                .map_err(|_| poisoned())?
                .iter()
                .filter(|(id, _)| in_shard(id))
                .map(|(id, b)| (*id, *b))
                .collect();
            due.extend(changes.balances.iter().copied().filter(|(id, _)| in_shard(id)));
            write_balances(&tx, due.into_iter(), changes.last_timestamp, checkpoint)?;
        }
        // The commit becomes visible to readers with its balances (see [`Fresh`]).
        let mut fresh = self.fresh.write().map_err(|_| poisoned())?;
        tx.commit()?;
        match checkpoint {
            None => fresh.extend(changes.balances.iter().copied()),
            Some(Checkpoint::All) => fresh.clear(),
            Some(Checkpoint::Shard(shard)) => {
                fresh.retain(|id, _| balance_shard(*id) != shard);
                fresh.extend(changes.balances.iter().copied().filter(|(id, _)| balance_shard(*id) != shard));
            }
        }
        drop(fresh);
        if let Some(checkpoint) = checkpoint {
            self.checkpointed_at = Instant::now();
            if let Checkpoint::Shard(shard) = checkpoint {
                self.next_shard = (shard + 1) % BALANCE_SHARDS;
            }
        }
        self.indexer.committed(changes.transfers.len());
        Ok(())
    }
}

/// The batch's new accounts, with zero balances (their balances come with the transfers).
fn insert_accounts(conn: &Connection, accounts: &[Account]) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO accounts (shard, id, tenant, currency, overdraft_limit, reference, metadata,
             debits_posted, credits_posted, debits_pending, credits_pending, created_at)
         VALUES (?8, ?1, ?2, ?3, ?4, ?5, ?6, 0, 0, 0, 0, ?7)",
    )?;
    for account in accounts {
        let limit = match account.overdraft {
            Overdraft::Limit(limit) => Some(int(limit)),
            Overdraft::Unlimited => None,
        };
        stmt.execute(params![
            id_blob(account.id.0),
            id_blob(account.tenant.0),
            account.currency.code(),
            limit,
            account.reference,
            account.metadata,
            int(account.created_at),
            shard_key(account.id),
        ])?;
    }
    Ok(())
}

/// New holds, and the new status of those the batch resolved.
fn upsert_holds(conn: &Connection, holds: &[HoldRecord]) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO holds (id, status, payment) VALUES (?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET status = excluded.status",
    )?;
    for h in holds {
        stmt.execute(params![id_blob(h.transfer.id.0), h.status.as_str(), h.payment.map(|p| id_blob(p.0))])?;
    }
    Ok(())
}

/// New payments, and the new state of those the batch moved on.
fn upsert_payments(conn: &Connection, payments: &[Payment]) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO payments (id, tenant, payer, payee, amount, currency, capture_method,
             status, description, failure_code, amount_captured, amount_refunded,
             expires_at, created_at, updated_at, transfer,
             fx_quote, fx_rate, fx_currency, fx_amount, fx_fee,
             qr_merchant_name, qr_merchant_city, qr_country, qr_category_code)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
             ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)
         ON CONFLICT (id) DO UPDATE SET status = excluded.status,
             failure_code = excluded.failure_code, amount_captured = excluded.amount_captured,
             amount_refunded = excluded.amount_refunded, updated_at = excluded.updated_at,
             transfer = excluded.transfer, payer = excluded.payer",
    )?;
    for p in payments {
        stmt.execute(params![
            id_blob(p.id.0),
            id_blob(p.tenant.0),
            p.payer.map(|a| id_blob(a.0)),
            id_blob(p.payee.0),
            int(p.amount),
            p.currency.code(),
            p.capture_method.as_str(),
            p.status.as_str(),
            p.description,
            p.failure_code.map(ResultCode::as_str),
            int(p.amount_captured),
            int(p.amount_refunded),
            int(p.expires_at),
            int(p.created_at),
            int(p.updated_at),
            p.transfer.map(|t| id_blob(t.0)),
            p.fx.as_ref().map(|fx| id_blob(fx.quote.0)),
            p.fx.as_ref().map(|fx| fx.rate.to_string()),
            p.fx.as_ref().map(|fx| fx.target_currency.code()),
            p.fx.as_ref().map(|fx| int(fx.target_amount)),
            p.fx.as_ref().map(|fx| int(fx.fee)),
            p.merchant.as_ref().map(|m| m.name.as_str()),
            p.merchant.as_ref().map(|m| m.city.as_str()),
            p.merchant.as_ref().map(|m| m.country.as_str()),
            p.merchant.as_ref().map(|m| m.category_code.as_str()),
        ])?;
    }
    Ok(())
}

/// The quotes the batch's payments used. The engine checked each was unused; the condition
/// makes a second use a failed commit rather than a silent overwrite.
fn mark_quotes_used(conn: &Connection, used: &[(QuoteId, PaymentId)]) -> Result<()> {
    let mut stmt = conn.prepare_cached("UPDATE fx_quotes SET used_by = ?2 WHERE id = ?1 AND used_by IS NULL")?;
    for (quote, payment) in used {
        if stmt.execute(params![id_blob(quote.0), id_blob(payment.0)])? != 1 {
            return Err(StoreError::Conflict(format!("quote {quote} is used already or missing")));
        }
    }
    Ok(())
}

/// The batch's refunds, succeeded or failed.
fn insert_refunds(conn: &Connection, refunds: &[Refund]) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO refunds (id, tenant, payment, amount, currency, status, failure_code,
             transfer, created_at, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for r in refunds {
        stmt.execute(params![
            id_blob(r.id.0),
            id_blob(r.tenant.0),
            id_blob(r.payment.0),
            int(r.amount),
            r.currency.code(),
            r.status.as_str(),
            r.failure_code.map(ResultCode::as_str),
            id_blob(r.transfer.0),
            int(r.created_at),
            r.reason.as_deref(),
        ])?;
    }
    Ok(())
}

/// The responses saved for the batch's idempotency keys.
fn insert_idempotency(conn: &Connection, records: &[IdempotencyRecord]) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO idempotency (tenant, key, fingerprint, status, body, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for r in records {
        stmt.execute(params![id_blob(r.tenant.0), r.key, r.fingerprint, r.status, r.body, int(r.created_at)])?;
    }
    Ok(())
}

/// The batch's webhook events, into the outbox: one exists if and only if its change does.
fn insert_events(conn: &Connection, changes: &ChangeSet) -> Result<()> {
    let mut stmt =
        conn.prepare_cached("INSERT INTO outbox (tenant, type, object, created_at) VALUES (?1, ?2, ?3, ?4)")?;
    for (tenant, kind, object) in &changes.events {
        stmt.execute(params![id_blob(tenant.0), kind.as_str(), id_blob(*object), int(changes.last_timestamp)])?;
    }
    Ok(())
}

const TRANSFER_COLUMNS: usize = 10;
const TRANSFER_HEAD: &str = "INSERT INTO transfers (id, tenant, debit_account, credit_account, amount, currency, kind,
    pending_id, expires_at, timestamp) VALUES ";

/// Inserts the batch's transfers, [`ROWS_PER_INSERT`] rows per statement. A chunk whose rows
/// share their tenant, currency and kind and have no pending id or expiry (a bulk request's)
/// binds those once per statement, through one of [`AlikeInserts`]' statements, bound without
/// copies ([`StaticStatement`]): binding a blob or text through rusqlite copies it into memory
/// SQLite allocates and frees (crates/bench/NOTES.md). Other chunks, and the rows after the
/// last full chunk, bind every column.
fn insert_transfers(tx: &Connection, alike_inserts: &mut AlikeInserts, transfers: &[Transfer]) -> Result<()> {
    let mut chunks = transfers.chunks_exact(ROWS_PER_INSERT);
    for chunk in &mut chunks {
        let first = &chunk[0];
        let alike = |t: &Transfer| {
            t.tenant == first.tenant
                && t.currency == first.currency
                && t.kind == first.kind
                && t.pending_id.is_none()
                && t.expires_at.is_none()
        };
        if !chunk.iter().all(alike) {
            insert_rows(tx, TRANSFER_HEAD, TRANSFER_COLUMNS, chunk, bind_transfer)?;
            continue;
        }
        let consecutive = chunk.iter().zip(first.timestamp..).all(|(t, timestamp)| t.timestamp == timestamp);
        let layout = if consecutive { Layout::Appended } else { Layout::Keyed };
        let stmt = alike_inserts.statement(tx, layout)?;
        // The ids as big-endian blobs: id, debit account, credit account a row, then the tenant.
        let mut ids = [[0u8; 16]; 3 * ROWS_PER_INSERT + 1];
        for (i, t) in chunk.iter().enumerate() {
            ids[3 * i] = id_blob(t.id.0);
            ids[3 * i + 1] = id_blob(t.debit_account.0);
            ids[3 * i + 2] = id_blob(t.credit_account.0);
        }
        ids[3 * ROWS_PER_INSERT] = id_blob(first.tenant.0);
        let mut values = [Bind::Null; KEYED_PARAMETERS];
        let values = &mut values[..layout.parameters()];
        let (shared, own) = values.split_at_mut(layout.shared_columns());
        shared[0] = Bind::Blob(&ids[3 * ROWS_PER_INSERT]);
        shared[1] = Bind::Text(first.currency.code());
        shared[2] = Bind::Text(first.kind.as_str());
        if layout == Layout::Appended {
            shared[3] = Bind::Int(int(first.timestamp));
        }
        for (i, (t, row)) in chunk.iter().zip(own.chunks_exact_mut(layout.own_columns())).enumerate() {
            row[0] = Bind::Blob(&ids[3 * i]);
            row[1] = Bind::Blob(&ids[3 * i + 1]);
            row[2] = Bind::Blob(&ids[3 * i + 2]);
            row[3] = Bind::Int(int(t.amount));
            if layout == Layout::Keyed {
                row[4] = Bind::Int(int(t.timestamp));
            }
        }
        stmt.execute(values)?;
        if layout == Layout::Appended {
            // SQLite gave rows 2.. the table's last key + 1 each: the chunk's own timestamps
            // only if the first row became the table's last key. Otherwise (a stored transfer
            // later than this batch, which the ledger's clock never makes) the rows have keys
            // they were not given, and the commit must not stand.
            let last = chunk[ROWS_PER_INSERT - 1].timestamp;
            if tx.last_insert_rowid() != int(last) {
                return Err(StoreError::Corrupt(format!(
                    "transfers holds a timestamp after {}, the first of a chunk of this commit",
                    first.timestamp
                )));
            }
        }
    }
    insert_rows(tx, TRANSFER_HEAD, TRANSFER_COLUMNS, chunks.remainder(), bind_transfer)
}

/// How a statement of alike transfers gives each row its timestamp, the table's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// Every row binds its own timestamp. SQLite checks each such key is new with a B-tree
    /// descent from the root (`OP_NotExists`): ~2.1k instructions a row (NOTES.md).
    Keyed,
    /// For rows of consecutive timestamps (a bulk request's, which the ledger ticks one by
    /// one): the first row binds its timestamp, the others insert `NULL`, which SQLite turns
    /// into the table's last key + 1 from the cursor it left on the last row: its append path,
    /// no descent. [`insert_transfers`] checks the last row's key is what it should be.
    Appended,
}

impl Layout {
    /// Parameters bound once per statement: tenant, currency, kind (and for
    /// [`Layout::Appended`], the first row's timestamp).
    fn shared_columns(self) -> usize {
        match self {
            Layout::Keyed => 3,
            Layout::Appended => 4,
        }
    }

    /// Parameters bound per row: id, debit account, credit account, amount (and for
    /// [`Layout::Keyed`], the timestamp).
    fn own_columns(self) -> usize {
        match self {
            Layout::Keyed => 5,
            Layout::Appended => 4,
        }
    }

    fn parameters(self) -> usize {
        self.shared_columns() + self.own_columns() * ROWS_PER_INSERT
    }

    /// The insert of [`ROWS_PER_INSERT`] transfers that share their tenant, currency and kind
    /// and have no pending id or expiry. `OR ROLLBACK`: a row that breaks a constraint (a
    /// transfer id stored already) fails the statement and ends the transaction, which the
    /// commit would roll back anyway; so SQLite keeps no statement journal of the pages the
    /// statement changes (which `ABORT`, the default, needs to undo a statement's first rows).
    fn sql(self) -> String {
        let shared = self.shared_columns();
        let own = self.own_columns();
        let rows: Vec<String> = (0..ROWS_PER_INSERT)
            .map(|i| {
                let p = shared + i * own;
                let timestamp = match (self, i) {
                    (Layout::Keyed, _) => format!("?{}", p + 5),
                    (Layout::Appended, 0) => "?4".to_owned(),
                    (Layout::Appended, _) => "NULL".to_owned(),
                };
                format!("(?{}, ?1, ?{}, ?{}, ?{}, ?2, ?3, NULL, NULL, {timestamp})", p + 1, p + 2, p + 3, p + 4)
            })
            .collect();
        format!("INSERT OR ROLLBACK{}{}", &TRANSFER_HEAD["INSERT".len()..], rows.join(", "))
    }
}

/// The most parameters of a statement of [`AlikeInserts`] ([`Layout::Keyed`]'s).
const KEYED_PARAMETERS: usize = 3 + 5 * ROWS_PER_INSERT;

/// The engine connection's statements for chunks of alike transfers, each prepared at its
/// first use and kept.
#[derive(Default)]
struct AlikeInserts {
    keyed: Option<StaticStatement>,
    appended: Option<StaticStatement>,
}

impl AlikeInserts {
    fn statement(&mut self, tx: &Connection, layout: Layout) -> Result<&mut StaticStatement> {
        let slot = match layout {
            Layout::Keyed => &mut self.keyed,
            Layout::Appended => &mut self.appended,
        };
        Ok(match slot {
            Some(stmt) => stmt,
            // SAFETY: the statement is kept in `SqliteStore.alike_inserts`, declared before
            // the connection it is prepared on (so finalized first), and used only inside the
            // store's commits on that connection: on the engine's thread or, for a batch the
            // engine hands over, on its committer thread, never on both at once (the store
            // moves with the job).
            #[allow(unsafe_code)]
            None => slot.insert(unsafe { StaticStatement::prepare(tx, &layout.sql())? }),
        })
    }
}

/// Binds one transfer's columns, in `TRANSFER_HEAD`'s order, after `offset` parameters.
fn bind_transfer(stmt: &mut rusqlite::Statement<'_>, offset: usize, t: &Transfer) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(offset + 1, id_blob(t.id.0))?;
    stmt.raw_bind_parameter(offset + 2, id_blob(t.tenant.0))?;
    stmt.raw_bind_parameter(offset + 3, id_blob(t.debit_account.0))?;
    stmt.raw_bind_parameter(offset + 4, id_blob(t.credit_account.0))?;
    stmt.raw_bind_parameter(offset + 5, int(t.amount))?;
    stmt.raw_bind_parameter(offset + 6, t.currency.code())?;
    stmt.raw_bind_parameter(offset + 7, t.kind.as_str())?;
    stmt.raw_bind_parameter(offset + 8, t.pending_id.map(|p| id_blob(p.0)))?;
    stmt.raw_bind_parameter(offset + 9, t.expires_at.map(int))?;
    stmt.raw_bind_parameter(offset + 10, int(t.timestamp))
}

/// Ids closer than this are read with one range scan in [`SqliteStore::load`].
const RUN_GAP_MAX: u128 = 1 << 16;

/// What a checkpoint writes: every account's balances, or those of one shard.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Checkpoint {
    All,
    Shard(usize),
}

impl Checkpoint {
    fn covers(self, id: AccountId) -> bool {
        match self {
            Checkpoint::All => true,
            Checkpoint::Shard(shard) => balance_shard(id) == shard,
        }
    }
}

/// Writes `balances` to their accounts' rows and records that the rows `checkpoint` covers are
/// valid at `through`.
fn write_balances(
    conn: &Connection,
    balances: impl Iterator<Item = (AccountId, Balances)>,
    through: u64,
    checkpoint: Checkpoint,
) -> Result<()> {
    let mut balances: Vec<(AccountId, Balances)> = balances.collect();
    // In key order (shard, id): each page of `accounts` is visited once, and a shard's rows
    // share few of them (migration 0025).
    balances.sort_unstable_by_key(|(id, _)| (balance_shard(*id), *id));
    let mut stmt = conn.prepare_cached(
        "UPDATE accounts SET debits_posted = ?2, credits_posted = ?3, debits_pending = ?4,
             credits_pending = ?5 WHERE shard = ?6 AND id = ?1",
    )?;
    for (id, b) in &balances {
        let updated = stmt.execute(params![
            id_blob(id.0),
            int(b.debits_posted),
            int(b.credits_posted),
            int(b.debits_pending),
            int(b.credits_pending),
            shard_key(*id),
        ])?;
        if updated != 1 {
            return Err(StoreError::Corrupt(format!("balance update for missing account {id}")));
        }
    }
    let key = match checkpoint {
        Checkpoint::Shard(shard) => format!("{SHARD_KEY}{shard}"),
        Checkpoint::All => {
            // Every shard at once: the shards' own keys would be older.
            conn.prepare_cached("DELETE FROM meta WHERE key >= ?1 AND key < ?2")?
                .execute([SHARD_KEY, "balances_through0"])?;
            "balances_through".to_owned()
        }
    };
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, int(through)])?;
    Ok(())
}

/// The last timestamp the ledger gave out: the last transfer's (`transfers` is keyed by its
/// timestamp, so one B-tree descent), or `meta.last_timestamp`, which a commit writes only
/// when something other than a transfer took its last timestamp, whichever is later.
fn last_timestamp(conn: &Connection) -> Result<u64> {
    let meta: Option<i64> =
        conn.query_row("SELECT value FROM meta WHERE key = 'last_timestamp'", [], |r| r.get(0)).optional()?;
    let transfer: Option<i64> = conn.query_row("SELECT max(timestamp) FROM transfers", [], |r| r.get(0))?;
    Ok(u64::try_from(meta.max(transfer).unwrap_or(0)).unwrap_or(0))
}

/// The timestamp the balances in `accounts` are valid at: every transfer after it is replayed
/// on them to get the balances now.
pub(super) fn balances_through(conn: &Connection) -> Result<Through> {
    let all: i64 = conn
        .query_row("SELECT value FROM meta WHERE key = 'balances_through'", [], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    let mut shards = [u64::try_from(all).unwrap_or(0); BALANCE_SHARDS];
    let mut stmt = conn.prepare("SELECT key, value FROM meta WHERE key >= ?1 AND key < ?2")?;
    let mut rows = stmt.query([SHARD_KEY, "balances_through0"])?;
    while let Some(row) = rows.next()? {
        let key: String = row.get(0)?;
        let value: i64 = row.get(1)?;
        let shard = key[SHARD_KEY.len()..]
            .parse::<usize>()
            .ok()
            .filter(|s| *s < BALANCE_SHARDS)
            .ok_or_else(|| StoreError::Corrupt(format!("meta key {key:?} names no shard of the balances")))?;
        shards[shard] = u64::try_from(value).unwrap_or(0);
    }
    Ok(Through::shards(shards))
}

impl Drop for SqliteStore {
    /// A last checkpoint, so that the next start has nothing to replay (best effort: `recover`
    /// replays whatever is missing).
    fn drop(&mut self) {
        let result = (|| -> Result<()> {
            let balances: Vec<(AccountId, Balances)> =
                self.fresh.read().map_err(|_| poisoned())?.iter().map(|(id, b)| (*id, *b)).collect();
            if balances.is_empty() {
                return Ok(());
            }
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let last = last_timestamp(&tx)?;
            write_balances(&tx, balances.into_iter(), last, Checkpoint::All)?;
            let mut fresh = self.fresh.write().map_err(|_| poisoned())?;
            tx.commit()?;
            fresh.clear();
            Ok(())
        })();
        if let Err(error) = result {
            tracing::warn!(%error, "no checkpoint of the balances at shutdown; the next start replays them");
        }
    }
}

impl SqliteStore {
    pub(super) fn new(
        conn: Connection,
        indexer: Indexer,
        checkpointer: Checkpointer,
        fresh: Fresh,
        lock: File,
    ) -> SqliteStore {
        SqliteStore {
            alike_inserts: AlikeInserts::default(),
            conn,
            indexer,
            _checkpointer: checkpointer,
            fresh,
            next_shard: 0,
            checkpointed_at: Instant::now(),
            _lock: lock,
        }
    }

    /// Whether this commit, bringing `new` balances, also checkpoints: every shard when too
    /// many wait in memory, the next shard when the last checkpoint is old enough and some
    /// balances wait.
    fn checkpoint_due(&self, new: usize) -> Option<Checkpoint> {
        let fresh_len = self.fresh.read().map_or(FRESH_MAX, |f| f.len());
        if fresh_len + new > FRESH_MAX {
            return Some(Checkpoint::All);
        }
        // The divisor is a small constant.
        #[allow(clippy::cast_possible_truncation)]
        let every = CHECKPOINT_EVERY / BALANCE_SHARDS as u32;
        (self.checkpointed_at.elapsed() >= every && fresh_len + new > 0).then_some(Checkpoint::Shard(self.next_shard))
    }

    /// Brings `accounts` up to date with the transfers (after a crash, the balances of up to
    /// [`CHECKPOINT_EVERY`] of batches were only in memory) and checkpoints them.
    fn replay_balances(&mut self) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let through = balances_through(&tx)?;
        let mut replayed: HashMap<AccountId, Balances> = HashMap::new();
        let mut last = None;
        {
            let mut tail = tx
                .prepare(&format!("SELECT {TRANSFER_SELECT} FROM transfers WHERE timestamp > ?1 ORDER BY timestamp"))?;
            let mut account = tx.prepare_cached("SELECT * FROM accounts WHERE shard = ?2 AND id = ?1")?;
            let mut held = tx.prepare_cached("SELECT amount FROM transfers WHERE id = ?1")?;
            let mut rows = tail.query([int(through.earliest())])?;
            while let Some(row) = rows.next()? {
                let t = transfer_at(row)?;
                let held = match t.pending_id {
                    None => 0,
                    Some(p) => held
                        .query_row([id_blob(p.0)], |r| r.get::<_, i64>(0))
                        .optional()?
                        .and_then(|a| u64::try_from(a).ok())
                        .ok_or_else(|| StoreError::Corrupt(format!("{} resolves a missing hold {p}", t.id)))?,
                };
                // Each side on its account's row, unless the row's shard was written after it.
                for (side, id) in [(Side::Debit, t.debit_account), (Side::Credit, t.credit_account)] {
                    if t.timestamp <= through.of(id) {
                        continue;
                    }
                    let mut now = match replayed.get(&id) {
                        Some(b) => *b,
                        None => {
                            account
                                .query_row(params![id_blob(id.0), shard_key(id)], account_from)
                                .optional()?
                                .ok_or_else(|| {
                                    StoreError::Corrupt(format!("{} moves money of missing account {id}", t.id))
                                })?
                                .balances
                        }
                    };
                    t.replay_side(held, side, &mut now).ok_or_else(|| {
                        StoreError::Corrupt(format!("{} takes a balance out of range on replay", t.id))
                    })?;
                    replayed.insert(id, now);
                }
                last = Some(t.timestamp);
            }
        }
        let Some(last) = last else {
            // Nothing to replay: every committed balance is in `accounts`.
            drop(tx);
            self.fresh.write().map_err(|_| poisoned())?.clear();
            self.checkpointed_at = Instant::now();
            return Ok(());
        };
        tracing::info!(accounts = replayed.len(), "balances replayed from the transfers after the last checkpoint");
        let mut fresh = self.fresh.write().map_err(|_| poisoned())?;
        let written = write_balances(&tx, replayed.iter().map(|(id, b)| (*id, *b)), last, Checkpoint::All)
            .and_then(|()| Ok(tx.commit()?));
        match written {
            Ok(()) => {
                fresh.clear();
                self.checkpointed_at = Instant::now();
            }
            // A full disk (a rebuild after a commit the disk refused): the replayed balances
            // wait in memory like any commit's, for the next checkpoint; recovery needs no write.
            Err(error @ StoreError::Full(_)) => {
                tracing::warn!(%error, "the replayed balances cannot be written yet; they wait in memory");
                fresh.extend(replayed);
            }
            Err(error) => return Err(error),
        }
        Ok(())
    }

    /// Brings `history.db` up to date now rather than when the indexer next runs (for tests;
    /// listings are complete either way).
    #[cfg(test)]
    pub(super) fn index_history(&mut self, data_dir: &std::path::Path) -> Result<()> {
        use super::history::{self, HISTORY_FILE};
        let mut history = history::open_for_writing(&self.conn, &data_dir.join(HISTORY_FILE))?;
        while history::index_pass(&self.conn, &mut history, 65_536)? > 0 {
            if history::merge_due(&history)? {
                history::merge_step(&mut history, &[], usize::MAX)?;
            }
        }
        Ok(())
    }
}
