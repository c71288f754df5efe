//! Balances checkpointed, not written by every commit.
//!
//! A commit writes its transfers; the balances they moved stay in the leader's memory (the
//! engine's state, and [`Pending`] here) and are written to `accounts` about once a second,
//! [`CHECKPOINT_EVERY`], in a commit's own transaction, which also moves the partitions'
//! `balances_through` to that commit's clock (migration 0023). Rewriting every account a
//! batch touched was 25–40 ms of a bulk batch's ~50 ms commit (~8 000 rows), and a quarter of
//! a real-time batch's statement (crates/bench/NOTES.md, "Session 22"); once a second it is a
//! few percent of either.
//!
//! So the row of an account holds its balances as of its partition's `balances_through`, and
//! every reader of a balance — an API node, the standby that takes a partition over, `verify`,
//! interest — replays the transfers committed after it on the row, in the same snapshot
//! ([`bring_up_to_date`]), with the ledger's own [`Transfer::replay_side`]. A partition's
//! commits are serial and each moves its clock in the transaction of its transfers (the
//! fence), so the transfers after the checkpoint in a snapshot are exactly the ones the rows
//! of that snapshot lack. The tail a read replays is at most about a second of commits, found
//! on `transfers_timestamp`.

use super::background::{Background, Stop};
use super::codec::{all, id, id_bytes, int, transfer_from, uint};
use super::partitions::{PerPartition, FENCE_AND_CHECKPOINT};
use super::prepared::Prepared;
use crate::{Result, StoreError};
use paycore_ledger::{Account, AccountId, Balances, Side, Transfer, TransferId, TransferKind};
use postgres::types::ToSql;
use postgres::{Client, GenericClient, Transaction};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a leader keeps the balances it changed before writing them.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// How often [`IdleCheckpoints`] looks for balances that no commit has written.
const IDLE_TICK: Duration = Duration::from_millis(250);

/// Up to this many accounts, a read asks PostgreSQL for their transfers of the tail only;
/// past it (recovery, `verify`), for the whole tail.
const FILTER_MAX: usize = 1_000;

/// The tail after `$1`, oldest first.
const TAIL: &str = "SELECT * FROM transfers WHERE timestamp > $1 ORDER BY timestamp";
/// [`TAIL`], of the accounts `$2` only.
const TAIL_OF: &str = "SELECT * FROM transfers
     WHERE timestamp > $1 AND (debit_account = ANY($2) OR credit_account = ANY($2)) ORDER BY timestamp";

/// The balances a leader changed since its last checkpoint, newest of each account. Shared by
/// the engine's commits and [`IdleCheckpoints`], each of which holds it for the whole of its
/// transaction: a checkpoint then writes every balance up to the clock it records.
pub(super) type Shared = Arc<Mutex<Pending>>;

/// The balances waiting, locked; a poisoned lock (a panic mid-commit) is the store's error.
pub(super) fn lock(pending: &Shared) -> Result<MutexGuard<'_, Pending>> {
    pending.lock().map_err(|_| StoreError::Internal("the balances waiting for a checkpoint are poisoned".into()))
}

pub(super) struct Pending {
    balances: HashMap<AccountId, Balances>,
    /// When the last checkpoint was written; `None`: at the next commit (after recovery).
    written_at: Option<Instant>,
    /// [`CHECKPOINT_EVERY`], or another interval for a test.
    every: Duration,
    /// A commit failed since the last recovery. It may have committed all the same (a
    /// connection lost after its `COMMIT` was sent), and these balances would then miss its
    /// effects while a checkpoint recorded the clock that includes them: no checkpoint until
    /// recovery reads what is there.
    unsure: bool,
}

impl Default for Pending {
    fn default() -> Pending {
        Pending { balances: HashMap::new(), written_at: None, every: CHECKPOINT_EVERY, unsure: false }
    }
}

impl Pending {
    /// Whether the commit bringing `changed` also writes the checkpoint.
    pub(super) fn due(&self, changed: &[(AccountId, Balances)]) -> bool {
        let waiting = !(self.balances.is_empty() && changed.is_empty());
        waiting && !self.unsure && self.written_at.is_none_or(|at| at.elapsed() >= self.every)
    }

    /// What a checkpoint with `changed` writes: every balance waiting, `changed` over them.
    pub(super) fn with(&self, changed: &[(AccountId, Balances)]) -> Vec<(AccountId, Balances)> {
        let mut all = self.balances.clone();
        all.extend(changed.iter().copied());
        all.into_iter().collect()
    }

    /// After a commit: its balances wait, or, if it wrote the checkpoint, none does.
    pub(super) fn committed(&mut self, changed: &[(AccountId, Balances)], checkpointed: bool) {
        if checkpointed {
            self.balances.clear();
            self.written_at = Some(Instant::now());
        } else {
            self.balances.extend(changed.iter().copied());
        }
    }

    /// After a commit that failed: no checkpoint until [`Pending::recovered`].
    pub(super) fn failed(&mut self) {
        self.unsure = true;
    }

    /// Makes the next commit write the checkpoint; for tests.
    #[cfg(test)]
    pub(super) fn due_now(&mut self) {
        self.written_at = None;
    }

    /// Checkpoints every `every` instead of [`CHECKPOINT_EVERY`]; for tests.
    #[cfg(test)]
    pub(super) fn set_every(&mut self, every: Duration) {
        self.every = every;
    }

    /// After recovery: the balances replayed wait, and the next commit writes them.
    pub(super) fn recovered(&mut self, replayed: HashMap<AccountId, Balances>) {
        self.balances = replayed;
        self.written_at = None;
        self.unsure = false;
    }
}

/// Brings `accounts`, as read from their rows in `client`'s snapshot, up to date: replays on
/// each the transfers committed after its partition's checkpoint, in that snapshot. Returns
/// the balances it changed (what a leader recovering must write at its next checkpoint).
pub(super) fn bring_up_to_date(
    client: &mut impl GenericClient,
    accounts: &mut [Account],
) -> Result<HashMap<AccountId, Balances>> {
    let mut replayed = HashMap::new();
    if accounts.is_empty() {
        return Ok(replayed);
    }
    // Where each partition's balances were last checkpointed. A partition with no row yet has
    // committed nothing: its accounts' rows are all there is (nothing to replay).
    let checkpoints = PerPartition::read(client, "partitions", "id", "balances_through")?;
    let at: HashMap<AccountId, (usize, i64)> =
        accounts.iter().enumerate().map(|(i, a)| (a.id, (i, checkpoints.of_tenant(a.tenant, i64::MAX)))).collect();
    let since = at.values().map(|&(_, through)| through).min().unwrap_or(i64::MAX);
    if since == i64::MAX {
        return Ok(replayed);
    }
    let rows = if accounts.len() <= FILTER_MAX {
        let ids: Vec<[u8; 16]> = accounts.iter().map(|a| id_bytes(a.id.0)).collect();
        client.query(TAIL_OF, &[&since, &ids])?
    } else {
        client.query(TAIL, &[&since])?
    };
    let tail = all(&rows, transfer_from)?;
    let held = held_amounts(client, &tail)?;
    for t in &tail {
        for (side, id) in [(Side::Debit, t.debit_account), (Side::Credit, t.credit_account)] {
            let Some(&(i, through)) = at.get(&id) else { continue };
            if int(t.timestamp) <= through {
                continue;
            }
            let held = match t.pending_id {
                None => 0,
                Some(hold) => *held
                    .get(&hold)
                    .ok_or_else(|| StoreError::Corrupt(format!("{} resolves a missing hold {hold}", t.id)))?,
            };
            let balances = &mut accounts[i].balances;
            t.replay_side(held, side, balances).ok_or_else(|| {
                StoreError::Corrupt(format!("{} takes a balance of {id} out of range on replay", t.id))
            })?;
            replayed.insert(id, *balances);
        }
    }
    Ok(replayed)
}

/// The amount of each hold the posts, voids and expiries of `tail` resolve: from the tail
/// itself, or else by primary key, in one more query (a join in the tail's query was planned
/// as a hash join over all of `transfers`).
fn held_amounts(client: &mut impl GenericClient, tail: &[Transfer]) -> Result<HashMap<TransferId, u64>> {
    let mut held: HashMap<TransferId, u64> =
        tail.iter().filter(|t| t.kind == TransferKind::Pending).map(|t| (t.id, t.amount)).collect();
    let mut missing: Vec<[u8; 16]> =
        tail.iter().filter_map(|t| t.pending_id).filter(|p| !held.contains_key(p)).map(|p| id_bytes(p.0)).collect();
    if missing.is_empty() {
        return Ok(held);
    }
    missing.sort_unstable();
    missing.dedup();
    for row in client.query("SELECT id, amount FROM transfers WHERE id = ANY($1)", &[&missing])? {
        held.insert(TransferId(id(&row, "id")?), uint(&row, "amount")?);
    }
    Ok(held)
}

/// A checkpoint's balances, in one statement; an account that is not there means the store
/// and the engine disagree, and nothing is written.
pub(super) fn write_balances(
    tx: &mut Transaction<'_>,
    prepared: &mut Prepared,
    balances: &[(AccountId, Balances)],
) -> Result<()> {
    if balances.is_empty() {
        return Ok(());
    }
    let updated = prepared.execute(tx, UPDATE_BALANCES, &BalanceColumns::of(balances).params())?;
    if updated != balances.len() as u64 {
        return Err(StoreError::Corrupt(format!(
            "{} balance updates for {} accounts: some account is missing",
            updated,
            balances.len()
        )));
    }
    Ok(())
}

/// The `UPDATE` of accounts' balances from the five arrays of [`BalanceColumns`].
const UPDATE_BALANCES: &str = "UPDATE accounts SET debits_posted = b.debits_posted, credits_posted = b.credits_posted,
         debits_pending = b.debits_pending, credits_pending = b.credits_pending
     FROM UNNEST($1::bytea[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[])
         AS b (id, debits_posted, credits_posted, debits_pending, credits_pending)
     WHERE accounts.id = b.id";

/// Balances as the column arrays of [`UPDATE_BALANCES`].
struct BalanceColumns {
    ids: Vec<[u8; 16]>,
    debits_posted: Vec<i64>,
    credits_posted: Vec<i64>,
    debits_pending: Vec<i64>,
    credits_pending: Vec<i64>,
}

impl BalanceColumns {
    fn of(balances: &[(AccountId, Balances)]) -> BalanceColumns {
        let column = |f: fn(&Balances) -> u64| balances.iter().map(|(_, b)| int(f(b))).collect();
        BalanceColumns {
            ids: balances.iter().map(|(id, _)| id_bytes(id.0)).collect(),
            debits_posted: column(|b| b.debits_posted),
            credits_posted: column(|b| b.credits_posted),
            debits_pending: column(|b| b.debits_pending),
            credits_pending: column(|b| b.credits_pending),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 5] {
        [&self.ids, &self.debits_posted, &self.credits_posted, &self.debits_pending, &self.credits_pending]
    }
}

/// Writes the checkpoint when the leader has balances waiting and no commit writes them: after
/// a burst the engine may commit nothing for a long time, and every read would replay the
/// burst's last second until it did. A thread with its own connection (like the history's
/// `Indexer`), started with the store and stopped with it; the fencing update keeps a leader
/// that lost its partition from writing.
pub(super) struct IdleCheckpoints {
    _thread: Background,
}

impl IdleCheckpoints {
    pub(super) fn start(url: String, ids: Vec<i32>, epochs: Vec<i64>, pending: Shared) -> IdleCheckpoints {
        let thread = Background::start("pg-checkpoint", "the idle checkpoints of the balances", move |stop| {
            idle_checkpoints(&url, &ids, &epochs, &pending, stop)
        });
        IdleCheckpoints { _thread: thread }
    }
}

fn idle_checkpoints(url: &str, ids: &[i32], epochs: &[i64], pending: &Shared, stop: &Stop) {
    let mut connection: Option<(Client, Prepared)> = None;
    let mut failing = false;
    loop {
        if stop.wait(IDLE_TICK) {
            return;
        }
        let Ok(mut waiting) = pending.lock() else { return };
        if !waiting.due(&[]) {
            continue;
        }
        match checkpoint(url, &mut connection, ids, epochs, &waiting.with(&[])) {
            Ok(true) => {
                waiting.committed(&[], true);
                if std::mem::take(&mut failing) {
                    tracing::info!("idle checkpoints of the balances succeed again");
                }
            }
            // Another leader took the partition: nothing of it is this process's to write.
            Ok(false) => return,
            Err(error) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(%error, "an idle checkpoint of the balances failed; retrying");
                }
                connection = connection.filter(|(client, _)| !client.is_closed());
            }
        }
    }
}

/// One checkpoint of `balances` in its own transaction, at the partitions' clocks (the engine
/// commits nothing meanwhile: the caller holds [`Pending`]). `false`: fenced, nothing written.
fn checkpoint(
    url: &str,
    connection: &mut Option<(Client, Prepared)>,
    ids: &[i32],
    epochs: &[i64],
    balances: &[(AccountId, Balances)],
) -> Result<bool> {
    if connection.is_none() {
        *connection = Some((super::open::connect(url)?, Prepared::default()));
    }
    let Some((client, prepared)) = connection.as_mut() else { return Ok(false) };
    let mut tx = client.transaction()?;
    // The clocks stay as they are (GREATEST with 0); the checkpoint moves to them.
    let updated = prepared.execute(&mut tx, FENCE_AND_CHECKPOINT, &[&0i64, &ids, &epochs])?;
    if updated != ids.len() as u64 {
        return Ok(false);
    }
    write_balances(&mut tx, prepared, balances)?;
    tx.commit()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::Pending;
    use paycore_ledger::{AccountId, Balances};
    use std::collections::HashMap;

    fn balances(posted: u64) -> Balances {
        Balances { credits_posted: posted, ..Balances::default() }
    }

    /// A checkpoint writes every balance waiting, the newest of each; none is due while
    /// nothing waits, or after a failed commit until recovery, however long since the last.
    #[test]
    fn a_checkpoint_writes_the_newest_of_all_waiting_and_none_after_a_failed_commit() {
        let mut pending = Pending::default();
        assert!(!pending.due(&[]), "nothing waits");
        let first = [(AccountId(1), balances(1)), (AccountId(2), balances(2))];
        assert!(pending.due(&first), "never written: due at once");
        pending.committed(&first, true);
        pending.set_every(std::time::Duration::ZERO);
        pending.committed(&[(AccountId(1), balances(3))], false);
        pending.committed(&[(AccountId(3), balances(4))], false);
        let mut written = pending.with(&[(AccountId(3), balances(5))]);
        written.sort_unstable_by_key(|(id, _)| *id);
        assert_eq!(written, vec![(AccountId(1), balances(3)), (AccountId(3), balances(5))]);
        assert!(pending.due(&[]));

        pending.failed();
        assert!(!pending.due(&[]), "a failed commit may have committed: no checkpoint");
        assert!(!pending.due(&[(AccountId(1), balances(6))]));
        pending.recovered(HashMap::from([(AccountId(2), balances(7))]));
        assert!(pending.due(&[]), "after recovery, at once");
        assert_eq!(pending.with(&[]), vec![(AccountId(2), balances(7))]);
    }
}
