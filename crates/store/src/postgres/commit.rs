//! The engine's side of the PostgreSQL store: recover, load, and the commit of each batch in
//! one transaction of set-based writes.

use super::balances::{write_balances, IdleCheckpoints, Shared};
use super::batches::commit_batch_changes;
use super::codec::{
    account_from, all, hold_from, id_bytes, idempotency_from, int, payment_from, quote_from, transfer_from, HOLD_SELECT,
};
use super::copy::{copy_transfers, COPY_FROM};
use super::history::Indexer;
use super::open::OUTBOX_LOCK;
use super::partitions::{Lead, FENCE};
use super::prepared::{lookup, Prepared};
use crate::{IdempotencyRecord, Loaded, Recovered, Result, Store, StoreError};
use paycore_ledger::{
    Account, AccountId, Balances, ChangeSet, HoldRecord, Overdraft, Payment, PaymentId, Prefetch, QuoteId, Refund,
    ResultCode, TenantId, Transfer, TransferId,
};
use postgres::types::{ToSql, Type};
use postgres::{Client, Transaction};
use std::sync::OnceLock;

/// The engine's connection, which leads some partitions of the cluster (all of them when the
/// whole store was opened): it recovers only their tenants, and every commit checks their
/// fencing epochs first, in its own transaction (see `partitions`).
///
/// A commit writes its transfers, not the balances they moved: those wait in [`Pending`] and
/// about once a second a commit's transaction writes them all, with one `UPDATE … FROM
/// UNNEST(…)`, and moves the partitions' `balances_through` (see `balances`). Whoever reads
/// a balance from the rows — an API node in another process, the standby that takes over —
/// replays the transfers after the checkpoint on it, in the same snapshot.
pub(super) struct PostgresStore {
    client: EngineClient,
    lead: Lead,
    /// The statements of `commit`, prepared once (see `prepared`; reads are not).
    prepared: Prepared,
    /// The history of the partitions led, built off the commit; stops with the store.
    _indexer: Indexer,
    /// The balances committed since the last checkpoint.
    pending: Shared,
    /// Writes them when no commit does; stops with the store.
    _idle: IdleCheckpoints,
}

/// The engine's connection, closed on a thread of its own when the store is dropped: closing
/// a blocking client runs the client's own runtime, which panics on a thread that drives async
/// tasks, where a cluster node may give a lead up (`Connections` of the reader pool does the
/// same). The leader locks go with the connection. Always `Some` until it is dropped.
struct EngineClient(Option<Client>);

impl std::ops::Deref for EngineClient {
    type Target = Client;

    #[allow(clippy::expect_used)] // Taken only by `drop`.
    fn deref(&self) -> &Client {
        self.0.as_ref().expect("the engine's connection is there until the store is dropped")
    }
}

impl std::ops::DerefMut for EngineClient {
    #[allow(clippy::expect_used)] // Taken only by `drop`.
    fn deref_mut(&mut self) -> &mut Client {
        self.0.as_mut().expect("the engine's connection is there until the store is dropped")
    }
}

impl Drop for EngineClient {
    fn drop(&mut self) {
        let Some(client) = self.0.take() else { return };
        if let Ok(closing) = std::thread::Builder::new().name("pg-close".into()).spawn(move || drop(client)) {
            let _ = closing.join();
        }
    }
}

impl PostgresStore {
    pub(super) fn new(client: Client, lead: Lead, url: &str) -> PostgresStore {
        let indexer = Indexer::start(url.to_owned(), lead.ids().to_vec());
        let pending = Shared::default();
        let (ids, epochs) = lead.fence_params();
        let idle = IdleCheckpoints::start(url.to_owned(), ids.clone(), epochs.clone(), pending.clone());
        PostgresStore {
            client: EngineClient(Some(client)),
            lead,
            prepared: Prepared::default(),
            _indexer: indexer,
            pending,
            _idle: idle,
        }
    }

    /// How many statements the engine's connection has prepared on the server; for tests.
    #[cfg(test)]
    pub(super) fn prepared_on_server(&mut self) -> i64 {
        self.client.query_one("SELECT count(*) FROM pg_prepared_statements", &[]).map_or(-1, |row| row.get(0))
    }

    /// Makes the next commit write the balances' checkpoint; for tests.
    #[cfg(test)]
    pub(super) fn checkpoint_at_next_commit(&mut self) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.due_now();
        }
    }

    /// Checkpoints the balances every `every`, by a commit or when idle; for tests.
    #[cfg(test)]
    pub(super) fn checkpoint_every(&mut self, every: std::time::Duration) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.set_every(every);
        }
    }

    /// The engine's connection; for tests that look at its session.
    #[cfg(test)]
    pub(super) fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// `error`, unless the connection it came from is gone: then so is the leader lock that
    /// lived with it, another leader may be writing, and this writer is fenced for good.
    fn or_fenced(&self, error: StoreError) -> StoreError {
        if self.client.is_closed() && !matches!(error, StoreError::Fenced(_)) {
            StoreError::Fenced(format!("the connection that held the leader lock is gone ({error})"))
        } else {
            error
        }
    }
}

/// Ids as the array parameter of an `= ANY($1)` or an `UNNEST`.
fn id_array<T>(items: &[T], id: impl Fn(&T) -> u128) -> Vec<[u8; 16]> {
    items.iter().map(|item| id_bytes(id(item))).collect()
}

impl Store for PostgresStore {
    fn recover(&mut self) -> Result<Recovered> {
        self.recover_led().map_err(|e| self.or_fenced(e))
    }

    fn load(&mut self, wanted: &Prefetch) -> Result<Loaded> {
        self.load_led(wanted).map_err(|e| self.or_fenced(e))
    }

    fn idempotency(&mut self, keys: &[(TenantId, &str)]) -> Result<Vec<IdempotencyRecord>> {
        self.idempotency_led(keys).map_err(|e| self.or_fenced(e))
    }

    fn commit(&mut self, changes: &ChangeSet, idempotency: &[IdempotencyRecord]) -> Result<()> {
        self.commit_led(changes, idempotency).map_err(|e| self.or_fenced(e))
    }
}

impl PostgresStore {
    fn load_led(&mut self, wanted: &Prefetch) -> Result<Loaded> {
        let client: &mut Client = &mut self.client;
        let transfers = id_array(&wanted.transfers, |id| id.0);
        let holds = id_array(&wanted.holds, |id| id.0);
        let payments = id_array(&wanted.payments, |id| id.0);
        // Most batches want nothing of some kinds (server-made ids above the highest stored are
        // never asked for): no round trip for those.
        let mut loaded = Loaded::default();
        if !transfers.is_empty() {
            loaded.transfers = all(
                &lookup(client, "SELECT * FROM transfers WHERE id = ANY($1)", &[(&transfers, Type::BYTEA_ARRAY)])?,
                transfer_from,
            )?;
        }
        if !holds.is_empty() {
            loaded.holds = all(
                &lookup(client, &format!("{HOLD_SELECT} WHERE h.id = ANY($1)"), &[(&holds, Type::BYTEA_ARRAY)])?,
                hold_from,
            )?;
        }
        if !payments.is_empty() {
            loaded.payments = all(
                &lookup(client, "SELECT * FROM payments WHERE id = ANY($1)", &[(&payments, Type::BYTEA_ARRAY)])?,
                payment_from,
            )?;
        }
        if !wanted.quotes.is_empty() {
            let quotes = id_array(&wanted.quotes, |id| id.0);
            loaded.quotes = all(
                &lookup(client, "SELECT * FROM fx_quotes WHERE id = ANY($1)", &[(&quotes, Type::BYTEA_ARRAY)])?,
                quote_from,
            )?;
        }
        loaded.debits = super::limits::load_debits(client, wanted, self.lead.ids())?;
        if !wanted.clearing.is_empty() {
            (loaded.open_windows, loaded.window_ids) = super::clearing::load(client, &wanted.clearing)?;
        }
        Ok(loaded)
    }

    fn idempotency_led(&mut self, keys: &[(TenantId, &str)]) -> Result<Vec<IdempotencyRecord>> {
        let tenants: Vec<[u8; 16]> = keys.iter().map(|(tenant, _)| id_bytes(tenant.0)).collect();
        let names: Vec<&str> = keys.iter().map(|(_, key)| *key).collect();
        let rows = lookup(
            &mut *self.client,
            "SELECT i.* FROM idempotency i
             JOIN UNNEST($1::bytea[], $2::text[]) AS k (tenant, key) ON i.tenant = k.tenant AND i.key = k.key",
            &[(&tenants, Type::BYTEA_ARRAY), (&names, Type::TEXT_ARRAY)],
        )?;
        all(&rows, idempotency_from)
    }

    /// What the engine keeps in memory, of the tenants of the partitions led: their accounts,
    /// open holds and open payments.
    fn recover_led(&mut self) -> Result<Recovered> {
        // Held throughout: no idle checkpoint runs between the rows read and the tail read.
        let shared = self.pending.clone();
        let mut pending = super::balances::lock(&shared)?;
        let client: &mut Client = &mut self.client;
        let (mut accounts, open_holds, open_payments) = match self.lead.tenants(client)? {
            None => (
                all(&client.query("SELECT * FROM accounts", &[])?, account_from)?,
                all(&client.query(&format!("{HOLD_SELECT} WHERE h.status = 'pending'"), &[])?, hold_from)?,
                all(
                    &client.query(
                        "SELECT * FROM payments WHERE status IN ('requires_confirmation', 'requires_capture')",
                        &[],
                    )?,
                    payment_from,
                )?,
            ),
            Some(tenants) => (
                all(&client.query("SELECT * FROM accounts WHERE tenant = ANY($1)", &[&tenants])?, account_from)?,
                all(
                    &client.query(
                        &format!("{HOLD_SELECT} WHERE h.status = 'pending' AND t.tenant = ANY($1)"),
                        &[&tenants],
                    )?,
                    hold_from,
                )?,
                all(
                    &client.query(
                        "SELECT * FROM payments
                         WHERE status IN ('requires_confirmation', 'requires_capture') AND tenant = ANY($1)",
                        &[&tenants],
                    )?,
                    payment_from,
                )?,
            ),
        };
        // The rows hold the balances of the last checkpoint: the transfers since are replayed
        // on them, and written by the next commit.
        let replaying = std::time::Instant::now();
        let replayed = super::balances::bring_up_to_date(client, &mut accounts)?;
        if !replayed.is_empty() {
            tracing::info!(
                accounts = replayed.len(),
                ms = replaying.elapsed().as_millis(),
                "balances replayed from the transfers after the last checkpoint"
            );
        }
        pending.recovered(replayed);
        let last_timestamp = self.lead.last_timestamp(client)?;
        if self.lead.shared() {
            // Other partitions' leaders insert transfers and payments meanwhile, so no highest
            // stored id is final: the highest possible one makes the engine ask the store
            // about every id (`State::set_stored_transfer_id_max`), and a client's id that
            // another partition used is answered as the state machine answers a stored one.
            return Ok(Recovered {
                accounts,
                open_holds,
                open_payments,
                last_timestamp,
                max_transfer_id: Some(TransferId(u128::MAX)),
                max_payment_id: Some(PaymentId(u128::MAX)),
            });
        }
        // The primary keys' last entries (BYTEA has no `max`): one index descent each.
        let row = client.query_one(
            "SELECT (SELECT id FROM transfers ORDER BY id DESC LIMIT 1),
                    (SELECT id FROM payments ORDER BY id DESC LIMIT 1)",
            &[],
        )?;
        let max_id = |i: usize| -> Result<Option<u128>> {
            let bytes: Option<&[u8]> = row.try_get(i)?;
            bytes
                .map(|b| {
                    <[u8; 16]>::try_from(b)
                        .map(u128::from_be_bytes)
                        .map_err(|_| StoreError::Corrupt("an id of wrong length".into()))
                })
                .transpose()
        };
        Ok(Recovered {
            accounts,
            open_holds,
            open_payments,
            last_timestamp,
            max_transfer_id: max_id(0)?.map(TransferId),
            max_payment_id: max_id(1)?.map(PaymentId),
        })
    }

    /// One batch in one transaction, which first checks that this writer still leads.
    fn commit_led(&mut self, changes: &ChangeSet, idempotency: &[IdempotencyRecord]) -> Result<()> {
        // Held for the whole commit: an idle checkpoint waits for it (see `balances`).
        let shared = self.pending.clone();
        let mut pending = super::balances::lock(&shared)?;
        let checkpoint = pending.due(&changes.balances).then(|| pending.with(&changes.balances));
        let committed = if checkpoint.is_none() && fits_one_statement(changes) {
            commit_in_one_statement(&mut self.client, &mut self.prepared, &self.lead, changes, idempotency)
        } else {
            self.commit_in_statements(changes, idempotency, checkpoint.as_deref())
        };
        match &committed {
            Ok(()) => pending.committed(&changes.balances, checkpoint.is_some()),
            // Perhaps committed after all (a connection lost after `COMMIT` was sent): no
            // checkpoint until recovery has read what is there.
            Err(_) => pending.failed(),
        }
        committed
    }

    /// A batch in a transaction of separate statements; with `checkpoint`, the balances to
    /// write and the partitions' `balances_through` moved to this commit's clock.
    fn commit_in_statements(
        &mut self,
        changes: &ChangeSet,
        idempotency: &[IdempotencyRecord],
        checkpoint: Option<&[(AccountId, Balances)]>,
    ) -> Result<()> {
        let prepared = &mut self.prepared;
        let mut tx = self.client.transaction()?;
        let returned = super::returns::reversed(&mut tx, changes)?;
        if !changes.events.is_empty() || !changes.batch_ends.is_empty() || !returned.is_empty() {
            // First, before any row lock: every writer of the outbox takes this lock before
            // its row locks, so that no two wait for each other.
            prepared.execute(&mut tx, "SELECT pg_advisory_xact_lock($1)", &[&OUTBOX_LOCK])?;
        }
        // Then the fencing check: a stale leader writes nothing (dropping `tx` rolls back).
        self.lead.check(&mut tx, prepared, changes.last_timestamp, checkpoint.is_some())?;
        insert_accounts(&mut tx, prepared, &changes.new_accounts)?;
        super::limits::update_accounts(&mut tx, &changes.updated_accounts)?;
        super::limits::insert_audit(&mut tx, &changes.audit)?;
        insert_transfers(&mut tx, prepared, &changes.transfers)?;
        upsert_holds(&mut tx, prepared, &changes.holds)?;
        upsert_payments(&mut tx, prepared, &changes.payments)?;
        mark_quotes_used(&mut tx, prepared, &changes.quotes_used)?;
        insert_refunds(&mut tx, prepared, &changes.refunds)?;
        insert_idempotency(&mut tx, prepared, idempotency)?;
        insert_events(&mut tx, prepared, changes)?;
        commit_batch_changes(&mut tx, changes)?;
        super::returns::mark_returned(&mut tx, &returned, changes.last_timestamp)?;
        super::clearing::insert(&mut tx, &changes.clearing_windows)?;
        if let Some(balances) = checkpoint {
            write_balances(&mut tx, prepared, balances)?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// Whether a batch's changes are only transfers (too few for `COPY`), holds, saved responses
/// and balances (not written: see `balances`): the real-time flow's batches, which
/// [`commit_in_one_statement`] writes. Every field is named, so that a new kind of change has
/// to be placed on one side or the other.
fn fits_one_statement(changes: &ChangeSet) -> bool {
    let ChangeSet {
        transfers,
        new_accounts,
        balances: _,
        holds: _,
        payments,
        refunds,
        batch_items,
        batch_ends,
        events,
        last_timestamp: _,
        quotes_used,
        updated_accounts,
        audit,
        clearing_windows,
    } = changes;
    // New accounts: the balances' `UPDATE` would not see the rows the same statement inserts.
    // Payments, quotes: their writes are checked by count. Events: the outbox's lock comes
    // first. Batch items: their returns are read first. Refunds, account updates and their
    // audit, clearing windows: rare, and written by the transaction that has them all.
    transfers.len() < COPY_FROM
        && new_accounts.is_empty()
        && payments.is_empty()
        && refunds.is_empty()
        && batch_items.is_empty()
        && batch_ends.is_empty()
        && events.is_empty()
        && quotes_used.is_empty()
        && updated_accounts.is_empty()
        && audit.is_empty()
        && clearing_windows.is_empty()
}

/// The statement of [`commit_in_one_statement`]: the fencing update and the batch's writes as
/// the parts of one `WITH`, then the checks that the separate statements' callers make on
/// their counts, made by `paycore_require` (migration 0021), which fails the statement with
/// SQLSTATE `PCF01` (fenced) or `PCC01` (corrupt) and so rolls every part back.
fn one_statement() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        // The fence takes $1–$3; each part's parameters follow the one before's.
        let transfers = renumbered(INSERT_TRANSFERS, 3);
        let holds = renumbered(UPSERT_HOLDS, 13);
        let idempotency = renumbered(INSERT_IDEMPOTENCY, 16);
        format!(
            "WITH fence AS ({FENCE} RETURNING 1),
                 transfers AS ({transfers}),
                 holds AS ({holds}),
                 idempotency AS ({idempotency})
             SELECT paycore_require((SELECT count(*) FROM fence) = $23::bigint, 'PCF01',
                        'a newer leader took the partition')"
        )
    })
}

/// `sql` with each parameter `$n` made `$(n + by)`.
fn renumbered(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if let Ok(n) = rest[..digits].parse::<usize>() {
            out.push_str(&(n + by).to_string());
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// A batch that [`fits_one_statement`], written by one statement in PostgreSQL's implicit
/// transaction: one round trip, where `BEGIN`, the fencing update, the transfers, the
/// balances and `COMMIT` took five (and a real-time batch's commit was most of the engine's
/// cycle). The parts see the same snapshot, which is why a batch whose parts read each other's
/// rows (new accounts) does not fit. The reply is read up to `ReadyForQuery`, which the server
/// sends after the implicit transaction's commit is flushed (`synchronous_commit`): an `Ok`
/// here is as durable as `COMMIT`'s.
fn commit_in_one_statement(
    client: &mut Client,
    prepared: &mut Prepared,
    lead: &Lead,
    changes: &ChangeSet,
    idempotency: &[IdempotencyRecord],
) -> Result<()> {
    let (partitions, epochs) = lead.fence_params();
    let last_timestamp = int(changes.last_timestamp);
    let transfers = TransferColumns::of(&changes.transfers);
    let holds = HoldColumns::of(&changes.holds);
    let saved = IdempotencyColumns::of(idempotency);
    let led = partitions.len() as i64;
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&last_timestamp, partitions, epochs];
    params.extend(transfers.params());
    params.extend(holds.params());
    params.extend(saved.params());
    params.push(&led);
    match prepared.execute(client, one_statement(), &params) {
        Err(StoreError::Fenced(_)) => Err(lead.fenced()),
        other => other.map(|_| ()),
    }
}

/// The batch's new accounts, with zero balances (their balances come with the transfers).
fn insert_accounts(tx: &mut Transaction<'_>, prepared: &mut Prepared, accounts: &[Account]) -> Result<()> {
    if accounts.is_empty() {
        return Ok(());
    }
    let limits: Vec<Option<i64>> = accounts
        .iter()
        .map(|a| match a.overdraft {
            Overdraft::Limit(limit) => Some(int(limit)),
            Overdraft::Unlimited => None,
        })
        .collect();
    prepared.execute(
        tx,
        "INSERT INTO accounts (id, tenant, currency, overdraft_limit, reference, metadata,
             debits_posted, credits_posted, debits_pending, credits_pending, created_at)
         SELECT id, tenant, currency, overdraft_limit, reference, metadata, 0, 0, 0, 0, created_at
         FROM UNNEST($1::bytea[], $2::bytea[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::bigint[])
             AS a (id, tenant, currency, overdraft_limit, reference, metadata, created_at)",
        &[
            &id_array(accounts, |a| a.id.0),
            &id_array(accounts, |a| a.tenant.0),
            &accounts.iter().map(|a| a.currency.code()).collect::<Vec<_>>(),
            &limits,
            &accounts.iter().map(|a| a.reference.as_deref()).collect::<Vec<_>>(),
            &accounts.iter().map(|a| a.metadata.as_deref()).collect::<Vec<_>>(),
            &accounts.iter().map(|a| int(a.created_at)).collect::<Vec<_>>(),
        ],
    )?;
    Ok(())
}

/// The batch's transfers, in one statement whatever their number: a bulk batch's by binary
/// `COPY` (see `copy`), a small one's by one prepared `INSERT … UNNEST` (one round trip).
fn insert_transfers(tx: &mut Transaction<'_>, prepared: &mut Prepared, transfers: &[Transfer]) -> Result<()> {
    if transfers.is_empty() {
        return Ok(());
    }
    if transfers.len() >= COPY_FROM {
        return copy_transfers(tx, transfers);
    }
    prepared.execute(tx, INSERT_TRANSFERS, &TransferColumns::of(transfers).params())?;
    Ok(())
}

/// The `INSERT` of transfers from the ten arrays of [`TransferColumns`].
const INSERT_TRANSFERS: &str = "INSERT INTO transfers (id, tenant, debit_account, credit_account, amount, currency,
         kind, pending_id, expires_at, timestamp)
     SELECT * FROM UNNEST($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[], $5::bigint[], $6::text[],
         $7::text[], $8::bytea[], $9::bigint[], $10::bigint[])";

/// Transfers as the column arrays of [`INSERT_TRANSFERS`].
struct TransferColumns {
    ids: Vec<[u8; 16]>,
    tenants: Vec<[u8; 16]>,
    debits: Vec<[u8; 16]>,
    credits: Vec<[u8; 16]>,
    amounts: Vec<i64>,
    currencies: Vec<&'static str>,
    kinds: Vec<&'static str>,
    pending: Vec<Option<[u8; 16]>>,
    expires: Vec<Option<i64>>,
    timestamps: Vec<i64>,
}

impl TransferColumns {
    fn of(transfers: &[Transfer]) -> TransferColumns {
        TransferColumns {
            ids: id_array(transfers, |t| t.id.0),
            tenants: id_array(transfers, |t| t.tenant.0),
            debits: id_array(transfers, |t| t.debit_account.0),
            credits: id_array(transfers, |t| t.credit_account.0),
            amounts: transfers.iter().map(|t| int(t.amount)).collect(),
            currencies: transfers.iter().map(|t| t.currency.code()).collect(),
            kinds: transfers.iter().map(|t| t.kind.as_str()).collect(),
            pending: transfers.iter().map(|t| t.pending_id.map(|p| id_bytes(p.0))).collect(),
            expires: transfers.iter().map(|t| t.expires_at.map(int)).collect(),
            timestamps: transfers.iter().map(|t| int(t.timestamp)).collect(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 10] {
        [
            &self.ids,
            &self.tenants,
            &self.debits,
            &self.credits,
            &self.amounts,
            &self.currencies,
            &self.kinds,
            &self.pending,
            &self.expires,
            &self.timestamps,
        ]
    }
}

/// New holds, and the new status of those the batch resolved (each hold once: the ledger's
/// change set holds every object once).
fn upsert_holds(tx: &mut Transaction<'_>, prepared: &mut Prepared, holds: &[HoldRecord]) -> Result<()> {
    if holds.is_empty() {
        return Ok(());
    }
    prepared.execute(tx, UPSERT_HOLDS, &HoldColumns::of(holds).params())?;
    Ok(())
}

/// The upsert of holds from the three arrays of [`HoldColumns`].
const UPSERT_HOLDS: &str = "INSERT INTO holds (id, status, payment)
     SELECT * FROM UNNEST($1::bytea[], $2::text[], $3::bytea[])
     ON CONFLICT (id) DO UPDATE SET status = excluded.status";

/// Holds as the column arrays of [`UPSERT_HOLDS`].
struct HoldColumns {
    ids: Vec<[u8; 16]>,
    statuses: Vec<&'static str>,
    payments: Vec<Option<[u8; 16]>>,
}

impl HoldColumns {
    fn of(holds: &[HoldRecord]) -> HoldColumns {
        HoldColumns {
            ids: id_array(holds, |h| h.transfer.id.0),
            statuses: holds.iter().map(|h| h.status.as_str()).collect(),
            payments: holds.iter().map(|h| h.payment.map(|p| id_bytes(p.0))).collect(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 3] {
        [&self.ids, &self.statuses, &self.payments]
    }
}

/// The quotes the batch's payments used. The engine checked each was unused; the condition
/// makes a second use a failed commit rather than a silent overwrite.
fn mark_quotes_used(tx: &mut Transaction<'_>, prepared: &mut Prepared, used: &[(QuoteId, PaymentId)]) -> Result<()> {
    if used.is_empty() {
        return Ok(());
    }
    let written = prepared.execute(
        tx,
        "UPDATE fx_quotes q SET used_by = u.payment
         FROM UNNEST($1::bytea[], $2::bytea[]) AS u(id, payment)
         WHERE q.id = u.id AND q.used_by IS NULL",
        &[&id_array(used, |(q, _)| q.0), &id_array(used, |(_, p)| p.0)],
    )?;
    if written != used.len() as u64 {
        return Err(StoreError::Conflict(format!(
            "{written} of {} quotes marked used: one is used or missing",
            used.len()
        )));
    }
    Ok(())
}

/// New payments, and the new state of those the batch moved on.
fn upsert_payments(tx: &mut Transaction<'_>, prepared: &mut Prepared, payments: &[Payment]) -> Result<()> {
    if payments.is_empty() {
        return Ok(());
    }
    let ints = |f: fn(&Payment) -> u64| payments.iter().map(|p| int(f(p))).collect::<Vec<_>>();
    let written = prepared.execute(
        tx,
        "INSERT INTO payments (id, tenant, payer, payee, amount, currency, capture_method,
             status, description, failure_code, amount_captured, amount_refunded,
             expires_at, created_at, updated_at, transfer,
             fx_quote, fx_rate, fx_currency, fx_amount, fx_fee,
             qr_merchant_name, qr_merchant_city, qr_country, qr_category_code)
         SELECT * FROM UNNEST($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[], $5::bigint[], $6::text[],
             $7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[], $12::bigint[], $13::bigint[],
             $14::bigint[], $15::bigint[], $16::bytea[],
             $17::bytea[], $18::text[], $19::text[], $20::bigint[], $21::bigint[],
             $22::text[], $23::text[], $24::text[], $25::text[])
         ON CONFLICT (id) DO UPDATE SET status = excluded.status,
             failure_code = excluded.failure_code, amount_captured = excluded.amount_captured,
             amount_refunded = excluded.amount_refunded, updated_at = excluded.updated_at,
             transfer = excluded.transfer, payer = excluded.payer
         WHERE payments.tenant = excluded.tenant",
        &[
            &id_array(payments, |p| p.id.0),
            &id_array(payments, |p| p.tenant.0),
            &payments.iter().map(|p| p.payer.map(|a| id_bytes(a.0))).collect::<Vec<_>>(),
            &id_array(payments, |p| p.payee.0),
            &ints(|p| p.amount),
            &payments.iter().map(|p| p.currency.code()).collect::<Vec<_>>(),
            &payments.iter().map(|p| p.capture_method.as_str()).collect::<Vec<_>>(),
            &payments.iter().map(|p| p.status.as_str()).collect::<Vec<_>>(),
            &payments.iter().map(|p| p.description.as_deref()).collect::<Vec<_>>(),
            &payments.iter().map(|p| p.failure_code.map(ResultCode::as_str)).collect::<Vec<_>>(),
            &ints(|p| p.amount_captured),
            &ints(|p| p.amount_refunded),
            &ints(|p| p.expires_at),
            &ints(|p| p.created_at),
            &ints(|p| p.updated_at),
            &payments.iter().map(|p| p.transfer.map(|t| id_bytes(t.0))).collect::<Vec<_>>(),
            &payments.iter().map(|p| p.fx.as_ref().map(|fx| id_bytes(fx.quote.0))).collect::<Vec<_>>(),
            &payments.iter().map(|p| p.fx.as_ref().map(|fx| fx.rate.to_string())).collect::<Vec<_>>(),
            &payments.iter().map(|p| p.fx.as_ref().map(|fx| fx.target_currency.code())).collect::<Vec<_>>(),
            &payments.iter().map(|p| p.fx.as_ref().map(|fx| int(fx.target_amount))).collect::<Vec<_>>(),
            &payments.iter().map(|p| p.fx.as_ref().map(|fx| int(fx.fee))).collect::<Vec<_>>(),
            &payments.iter().map(|p| p.merchant.as_ref().map(|m| m.name.as_str())).collect::<Vec<_>>(),
            &payments.iter().map(|p| p.merchant.as_ref().map(|m| m.city.as_str())).collect::<Vec<_>>(),
            &payments.iter().map(|p| p.merchant.as_ref().map(|m| m.country.as_str())).collect::<Vec<_>>(),
            &payments.iter().map(|p| p.merchant.as_ref().map(|m| m.category_code.as_str())).collect::<Vec<_>>(),
        ],
    )?;
    // A payment id another tenant's partition wrote since this batch's load is not taken over.
    if written != payments.len() as u64 {
        return Err(StoreError::Conflict(format!(
            "{} of {} payments written: an id is taken",
            written,
            payments.len()
        )));
    }
    Ok(())
}

/// The batch's refunds, succeeded or failed.
fn insert_refunds(tx: &mut Transaction<'_>, prepared: &mut Prepared, refunds: &[Refund]) -> Result<()> {
    if refunds.is_empty() {
        return Ok(());
    }
    prepared.execute(
        tx,
        "INSERT INTO refunds (id, tenant, payment, amount, currency, status, failure_code, transfer, created_at,
             reason)
         SELECT * FROM UNNEST($1::bytea[], $2::bytea[], $3::bytea[], $4::bigint[], $5::text[], $6::text[],
             $7::text[], $8::bytea[], $9::bigint[], $10::text[])",
        &[
            &id_array(refunds, |r| r.id.0),
            &id_array(refunds, |r| r.tenant.0),
            &id_array(refunds, |r| r.payment.0),
            &refunds.iter().map(|r| int(r.amount)).collect::<Vec<_>>(),
            &refunds.iter().map(|r| r.currency.code()).collect::<Vec<_>>(),
            &refunds.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(),
            &refunds.iter().map(|r| r.failure_code.map(ResultCode::as_str)).collect::<Vec<_>>(),
            &id_array(refunds, |r| r.transfer.0),
            &refunds.iter().map(|r| int(r.created_at)).collect::<Vec<_>>(),
            &refunds.iter().map(|r| r.reason.as_deref()).collect::<Vec<_>>(),
        ],
    )?;
    Ok(())
}

/// The responses saved for the batch's idempotency keys; a key saved twice is a `Conflict`.
fn insert_idempotency(tx: &mut Transaction<'_>, prepared: &mut Prepared, records: &[IdempotencyRecord]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    prepared.execute(tx, INSERT_IDEMPOTENCY, &IdempotencyColumns::of(records).params())?;
    Ok(())
}

/// The `INSERT` of saved responses from the six arrays of [`IdempotencyColumns`].
const INSERT_IDEMPOTENCY: &str = "INSERT INTO idempotency (tenant, key, fingerprint, status, body, created_at)
     SELECT * FROM UNNEST($1::bytea[], $2::text[], $3::bytea[], $4::integer[], $5::bytea[], $6::bigint[])";

/// Saved responses as the column arrays of [`INSERT_IDEMPOTENCY`].
struct IdempotencyColumns<'a> {
    tenants: Vec<[u8; 16]>,
    keys: Vec<&'a str>,
    fingerprints: Vec<[u8; 32]>,
    statuses: Vec<i32>,
    bodies: Vec<&'a [u8]>,
    created: Vec<i64>,
}

impl<'a> IdempotencyColumns<'a> {
    fn of(records: &'a [IdempotencyRecord]) -> IdempotencyColumns<'a> {
        IdempotencyColumns {
            tenants: id_array(records, |r| r.tenant.0),
            keys: records.iter().map(|r| r.key.as_str()).collect(),
            fingerprints: records.iter().map(|r| r.fingerprint).collect(),
            statuses: records.iter().map(|r| i32::from(r.status)).collect(),
            bodies: records.iter().map(|r| r.body.as_slice()).collect(),
            created: records.iter().map(|r| int(r.created_at)).collect(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 6] {
        [&self.tenants, &self.keys, &self.fingerprints, &self.statuses, &self.bodies, &self.created]
    }
}

/// The batch's webhook events, into the outbox: one exists if and only if its change does.
fn insert_events(tx: &mut Transaction<'_>, prepared: &mut Prepared, changes: &ChangeSet) -> Result<()> {
    if changes.events.is_empty() {
        return Ok(());
    }
    // The outbox's lock is held (see `commit`). `WITH ORDINALITY`: the events get their
    // sequence numbers in the order they happened.
    prepared.execute(
        tx,
        "INSERT INTO outbox (tenant, type, object, created_at)
         SELECT tenant, type, object, $4::bigint FROM UNNEST($1::bytea[], $2::text[], $3::bytea[]) WITH ORDINALITY
             AS e (tenant, type, object, n)
         ORDER BY n",
        &[
            &changes.events.iter().map(|(tenant, _, _)| id_bytes(tenant.0)).collect::<Vec<_>>(),
            &changes.events.iter().map(|(_, kind, _)| kind.as_str()).collect::<Vec<_>>(),
            &changes.events.iter().map(|(_, _, object)| id_bytes(*object)).collect::<Vec<_>>(),
            &int(changes.last_timestamp),
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod one_statement_tests {
    use std::collections::BTreeSet;

    /// Every parameter of the one statement, `$1` to `$23`, is named, and none beyond: the
    /// parts' offsets follow one another, and `commit_in_one_statement` binds 23 values.
    #[test]
    fn the_one_statement_names_each_of_its_23_parameters() {
        let sql = super::one_statement();
        let named: BTreeSet<usize> = sql
            .split('$')
            .skip(1)
            .map(|after| after.bytes().take_while(u8::is_ascii_digit).fold(0, |n, d| n * 10 + usize::from(d - b'0')))
            .collect();
        assert_eq!(named, (1..=23).collect::<BTreeSet<_>>(), "{sql}");
    }

    #[test]
    fn renumbered_moves_every_parameter_and_nothing_else() {
        assert_eq!(super::renumbered("f($1, $10::int[]) || '$'", 3), "f($4, $13::int[]) || '$'");
    }
}
