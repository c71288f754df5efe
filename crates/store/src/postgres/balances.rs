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

use super::codec::{all, id, id_bytes, int, transfer_from, uint};
use crate::{partition_of, Result, StoreError};
use paycore_ledger::{Account, AccountId, Balances, Side, Transfer, TransferId, TransferKind};
use postgres::GenericClient;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a leader keeps the balances it changed before writing them.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Up to this many accounts, a read asks PostgreSQL for their transfers of the tail only;
/// past it (recovery, `verify`), for the whole tail.
const FILTER_MAX: usize = 1_000;

/// The tail after `$1`, oldest first.
const TAIL: &str = "SELECT * FROM transfers WHERE timestamp > $1 ORDER BY timestamp";
/// [`TAIL`], of the accounts `$2` only.
const TAIL_OF: &str = "SELECT * FROM transfers
     WHERE timestamp > $1 AND (debit_account = ANY($2) OR credit_account = ANY($2)) ORDER BY timestamp";

/// The balances a leader changed since its last checkpoint, newest of each account.
#[derive(Default)]
pub(super) struct Pending {
    balances: HashMap<AccountId, Balances>,
    /// When the last checkpoint was written; `None`: at the next commit (after recovery).
    written_at: Option<Instant>,
}

impl Pending {
    /// Whether the commit bringing `changed` also writes the checkpoint.
    pub(super) fn due(&self, changed: &[(AccountId, Balances)]) -> bool {
        let waiting = !(self.balances.is_empty() && changed.is_empty());
        waiting && self.written_at.is_none_or(|at| at.elapsed() >= CHECKPOINT_EVERY)
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

    /// Makes the next commit write the checkpoint; for tests.
    #[cfg(test)]
    pub(super) fn due_now(&mut self) {
        self.written_at = None;
    }

    /// After recovery: the balances replayed wait, and the next commit writes them.
    pub(super) fn recovered(&mut self, replayed: HashMap<AccountId, Balances>) {
        self.balances = replayed;
        self.written_at = None;
    }
}

/// Where each partition's balances were last checkpointed.
struct Checkpoints {
    count: u32,
    /// `partitions.id` and `balances_through`, by id.
    through: Vec<(i32, i64)>,
}

impl Checkpoints {
    fn read(client: &mut impl GenericClient) -> Result<Checkpoints> {
        let row = client.query_one(
            "SELECT (SELECT count FROM cluster_partitions),
                 coalesce((SELECT array_agg(id ORDER BY id) FROM partitions), '{}'),
                 coalesce((SELECT array_agg(balances_through ORDER BY id) FROM partitions), '{}')",
            &[],
        )?;
        let count: Option<i32> = row.try_get(0)?;
        let (ids, through): (Vec<i32>, Vec<i64>) = (row.try_get(1)?, row.try_get(2)?);
        Ok(Checkpoints {
            count: count.and_then(|c| u32::try_from(c).ok()).unwrap_or(1),
            through: ids.into_iter().zip(through).collect(),
        })
    }

    /// The checkpoint of `account`'s partition. A partition with no row yet has committed
    /// nothing: its accounts' rows are all there is (nothing to replay).
    fn of(&self, account: &Account) -> i64 {
        let partition = i32::try_from(partition_of(account.tenant, self.count)).unwrap_or(i32::MAX);
        self.through.iter().find(|(id, _)| *id == partition).map_or(i64::MAX, |(_, through)| *through)
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
    let checkpoints = Checkpoints::read(client)?;
    let at: HashMap<AccountId, (usize, i64)> =
        accounts.iter().enumerate().map(|(i, a)| (a.id, (i, checkpoints.of(a)))).collect();
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
