//! Tenant partitions in PostgreSQL: the recorded partition count, each partition's leader
//! lock and fencing epoch, and the check every commit makes that its writer still leads.
//!
//! Leading a partition is two things, taken in this order on the engine's connection: its
//! advisory lock (`pg_try_advisory_lock`, held until the connection ends: one leader at a
//! time), then one more on its `partitions.epoch`. Every commit updates the partition's row
//! `WHERE epoch = <the epoch taken>` in its own transaction; no row updated means another
//! leader has come since (the lock was lost with the connection, or an operator fenced this
//! one), and the whole transaction is rolled back as [`StoreError::Fenced`]. The lock keeps
//! two leaders from running; the epoch keeps a leader that lost its lock without noticing
//! from writing (Kleppmann, "How to do distributed locking").

use super::codec::int;
use super::open::without_password;
use super::prepared::Prepared;
use crate::{partition_of, Result, StoreError, PARTITIONS_MAX};
use paycore_ledger::TenantId;
use postgres::{Client, GenericClient, Transaction};

/// The advisory lock keys of the partitions' leaders: this base plus the partition
/// (`PARTITIONS_MAX` keeps them clear of the store's other locks, `0x7061_7963_6f72_65xx`).
const PARTITION_LOCK_BASE: i64 = 0x7061_7963_0000_0000; // "payc", then the partition

fn stored_int(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} is negative")))
}

/// The cluster's partition count: recorded by the first call (`requested`, or 1), read back by
/// every later one. A `requested` count other than the recorded one is refused.
pub(super) fn count(client: &mut Client, requested: Option<u32>) -> Result<u32> {
    if let Some(requested) = requested {
        if !(1..=PARTITIONS_MAX).contains(&requested) {
            return Err(StoreError::Refused(format!(
                "--partitions {requested}: a cluster has from 1 to {PARTITIONS_MAX} partitions"
            )));
        }
    }
    let mut tx = client.transaction()?;
    // The one row serializes processes creating the partitions at once.
    let row = tx.query_one("SELECT count, last_timestamp FROM cluster_partitions FOR UPDATE", &[])?;
    let count = match stored_count(row.try_get(0)?)? {
        Some(recorded) => {
            if let Some(requested) = requested.filter(|&requested| requested != recorded) {
                return Err(StoreError::Refused(format!(
                    "this cluster was created with {recorded} partition{}; --partitions cannot change (asked for {requested})",
                    if recorded == 1 { "" } else { "s" }
                )));
            }
            recorded
        }
        None => {
            let count = requested.unwrap_or(1);
            let last_timestamp: i64 = row.try_get(1)?;
            let count_sql = i32::try_from(count).unwrap_or(i32::MAX);
            tx.execute(
                "INSERT INTO partitions (id, epoch, last_timestamp, balances_through)
                 SELECT id, 0, $2, $2 FROM generate_series(0, $1 - 1) AS id",
                &[&count_sql, &last_timestamp],
            )?;
            tx.execute("UPDATE cluster_partitions SET count = $1", &[&count_sql])?;
            count
        }
    };
    tx.commit()?;
    Ok(count)
}

/// The cluster's partition count, if one was recorded; records nothing.
pub(super) fn recorded(client: &mut impl postgres::GenericClient) -> Result<Option<u32>> {
    stored_count(client.query_one("SELECT count FROM cluster_partitions", &[])?.try_get(0)?)
}

/// `cluster_partitions.count` as stored (`NULL` until a cluster is created).
fn stored_count(stored: Option<i32>) -> Result<Option<u32>> {
    stored
        .map(|count| {
            u32::try_from(count).map_err(|_| StoreError::Corrupt(format!("the recorded partition count {count}")))
        })
        .transpose()
}

/// A value kept per partition, with the cluster's partition count, read in one round trip:
/// what a read needs to find the value of its tenant's partition, which only Rust computes
/// ([`partition_of`]). Its table has one row per partition at most.
pub(super) struct PerPartition {
    count: u32,
    /// The partitions' keys and values, by key.
    values: Vec<(i32, i64)>,
}

impl PerPartition {
    /// `column` of every row of `table`, keyed by the partition in `key`.
    pub(super) fn read(client: &mut impl GenericClient, table: &str, key: &str, column: &str) -> Result<PerPartition> {
        let row = client.query_one(
            &format!(
                "SELECT (SELECT count FROM cluster_partitions),
                     coalesce((SELECT array_agg({key} ORDER BY {key}) FROM {table}), '{{}}'),
                     coalesce((SELECT array_agg({column} ORDER BY {key}) FROM {table}), '{{}}')"
            ),
            &[],
        )?;
        let count: Option<i32> = row.try_get(0)?;
        let (keys, values): (Vec<i32>, Vec<i64>) = (row.try_get(1)?, row.try_get(2)?);
        Ok(PerPartition {
            count: count.and_then(|c| u32::try_from(c).ok()).unwrap_or(1),
            values: keys.into_iter().zip(values).collect(),
        })
    }

    /// The value of `tenant`'s partition, or `missing` when that partition has no row.
    pub(super) fn of_tenant(&self, tenant: TenantId, missing: i64) -> i64 {
        let partition = i32::try_from(partition_of(tenant, self.count)).unwrap_or(i32::MAX);
        self.values.iter().find(|(key, _)| *key == partition).map_or(missing, |(_, value)| *value)
    }
}

/// The fencing update of every commit (`Lead::check`): `$1` the batch's last timestamp, `$2` and
/// `$3` the partitions led and the epochs taken (`Lead::fence_params`). It updates one row per
/// partition whose epoch is still the one taken.
pub(super) const FENCE: &str = "UPDATE partitions SET last_timestamp = GREATEST(partitions.last_timestamp, $1)
     FROM UNNEST($2::integer[], $3::bigint[]) AS l (id, epoch)
     WHERE partitions.id = l.id AND partitions.epoch = l.epoch";

/// [`FENCE`] in a commit that writes the balances' checkpoint: the rows are then current as
/// of the partitions' new clocks.
pub(super) const FENCE_AND_CHECKPOINT: &str = "UPDATE partitions
     SET last_timestamp = GREATEST(partitions.last_timestamp, $1),
         balances_through = GREATEST(partitions.last_timestamp, $1)
     FROM UNNEST($2::integer[], $3::bigint[]) AS l (id, epoch)
     WHERE partitions.id = l.id AND partitions.epoch = l.epoch";

/// What an engine's connection leads: some partitions, each with the epoch it took.
#[derive(Debug)]
pub(super) struct Lead {
    /// `partitions.id` and the epoch taken, for every partition led.
    ids: Vec<i32>,
    epochs: Vec<i64>,
    /// The one partition led and the cluster's count, or `None` when every partition is led
    /// (the whole store, `paycore_store::open`).
    only: Option<(u32, u32)>,
}

impl Lead {
    /// Takes the leader locks of `partitions` (of a cluster of `count`) on `client`, then one
    /// more epoch on each. `InUse` when another connection leads any of them; the locks taken
    /// so far go with the connection, which the caller then drops.
    pub(super) fn take(client: &mut Client, url: &str, partitions: &[u32], count: u32) -> Result<Lead> {
        let ids: Vec<i32> = partitions.iter().map(|&p| i32::try_from(p).unwrap_or(i32::MAX)).collect();
        // Every lock tried in one round trip (the whole store takes them all); the ones not
        // taken come back.
        let led: Vec<i32> = client
            .query(
                "SELECT p FROM UNNEST($1::integer[]) AS p WHERE NOT pg_try_advisory_lock($2::bigint + p) ORDER BY p",
                &[&ids, &PARTITION_LOCK_BASE],
            )?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        if let Some(partition) = led.first() {
            return Err(StoreError::InUse(format!(
                "{} (partition {partition} has a leader{})",
                without_password(url),
                if led.len() > 1 { format!(", and {} more", led.len() - 1) } else { String::new() }
            )));
        }
        let rows =
            client.query("UPDATE partitions SET epoch = epoch + 1 WHERE id = ANY($1) RETURNING id, epoch", &[&ids])?;
        if rows.len() != ids.len() {
            return Err(StoreError::Corrupt(format!("{} partition rows for {} partitions", rows.len(), ids.len())));
        }
        let mut taken: Vec<(i32, i64)> =
            rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect::<Result<_>>()?;
        taken.sort_unstable();
        let only = match partitions {
            [partition] if count > 1 => Some((*partition, count)),
            _ => None,
        };
        Ok(Lead { ids: taken.iter().map(|t| t.0).collect(), epochs: taken.iter().map(|t| t.1).collect(), only })
    }

    /// The epoch taken on the first partition led (the only one, for a partition's leader).
    pub(super) fn epoch(&self) -> u64 {
        self.epochs.first().map_or(0, |&e| u64::try_from(e).unwrap_or(0))
    }

    /// Whether other processes may write transfers and payments meanwhile (other partitions'
    /// leaders): then the highest stored ids are never final.
    pub(super) fn shared(&self) -> bool {
        self.only.is_some()
    }

    /// The clock to start from: the latest commit of any partition led.
    pub(super) fn last_timestamp(&self, client: &mut Client) -> Result<u64> {
        let last: Option<i64> = client
            .query_one("SELECT max(last_timestamp) FROM partitions WHERE id = ANY($1)", &[&self.ids])?
            .try_get(0)?;
        stored_int(last.unwrap_or(0), "a partition's last timestamp")
    }

    /// The tenants whose accounts recovery loads, as ids for `tenant = ANY($1)`; `None`: all.
    /// The distinct tenants of `accounts` are read with a skip scan of `accounts_tenant` (one
    /// index descent per tenant), and each is placed with [`partition_of`] here: the hash is
    /// not SQL's to compute.
    pub(super) fn tenants(&self, client: &mut Client) -> Result<Option<Vec<[u8; 16]>>> {
        let Some((partition, count)) = self.only else { return Ok(None) };
        let rows = client.query(
            "WITH RECURSIVE t (tenant) AS (
                 (SELECT tenant FROM accounts ORDER BY tenant LIMIT 1)
                 UNION ALL
                 SELECT (SELECT a.tenant FROM accounts a WHERE a.tenant > t.tenant ORDER BY a.tenant LIMIT 1)
                 FROM t WHERE t.tenant IS NOT NULL
             )
             SELECT tenant FROM t WHERE tenant IS NOT NULL",
            &[],
        )?;
        let mut tenants = Vec::new();
        for row in &rows {
            let bytes: &[u8] = row.try_get(0)?;
            let id =
                <[u8; 16]>::try_from(bytes).map_err(|_| StoreError::Corrupt("a tenant id of wrong length".into()))?;
            if partition_of(TenantId(u128::from_be_bytes(id)), count) == partition {
                tenants.push(id);
            }
        }
        Ok(Some(tenants))
    }

    /// Inside a commit's transaction, first: moves the partitions' clocks to the batch's and
    /// checks that every epoch taken is still current. The rows stay locked until the
    /// transaction ends, so a new leader's epoch waits for this commit, or this commit sees
    /// the new epoch and writes nothing.
    /// With `checkpoint`, it also moves their `balances_through` to the new clock: the commit
    /// writes every balance changed since the last checkpoint (see `balances`).
    pub(super) fn check(
        &self,
        tx: &mut Transaction<'_>,
        prepared: &mut Prepared,
        last_timestamp: u64,
        checkpoint: bool,
    ) -> Result<()> {
        let statement = if checkpoint { FENCE_AND_CHECKPOINT } else { FENCE };
        let updated = prepared.execute(tx, statement, &[&int(last_timestamp), &self.ids, &self.epochs])?;
        if updated != self.ids.len() as u64 {
            return Err(self.fenced());
        }
        Ok(())
    }

    /// The partitions led, as `partitions.id`.
    pub(super) fn ids(&self) -> &[i32] {
        &self.ids
    }

    /// The parameters `$2` and `$3` of [`FENCE`]: the partitions led and the epochs taken.
    pub(super) fn fence_params(&self) -> (&Vec<i32>, &Vec<i64>) {
        (&self.ids, &self.epochs)
    }

    /// The error of a commit whose [`FENCE`] found a newer epoch.
    pub(super) fn fenced(&self) -> StoreError {
        StoreError::Fenced(format!(
            "a newer leader took partition{} {:?} (this writer's epochs {:?})",
            if self.ids.len() == 1 { "" } else { "s" },
            self.ids,
            self.epochs
        ))
    }
}

/// The advisory lock keys of the partitions' wishes: an engine process standing by for a
/// partition it prefers holds its key (shared: several may), and a leader of that partition
/// that does not prefer it hands it over ([`crate::PartitionWish`]). `PARTITIONS_MAX` keeps
/// them clear of every other key of the store.
const PARTITION_WISH_BASE: i64 = 0x7061_7977_0000_0000; // "payw", then the partition

fn wish_key(partition: u32) -> i64 {
    PARTITION_WISH_BASE + i64::from(partition)
}

/// Takes `partition`'s wish on `client`, for as long as the connection lives.
pub(super) fn wish(client: &mut Client, partition: u32) -> Result<()> {
    client.execute("SELECT pg_advisory_lock_shared($1)", &[&wish_key(partition)])?;
    Ok(())
}

/// The partitions whose wish some connection of this database holds, in order. Read from
/// `pg_locks` (an advisory key's high half is `classid`, its low half `objid`: here the
/// partition), so that asking takes nothing a wisher could wait on.
pub(super) fn wished(client: &mut Client) -> Result<Vec<u32>> {
    let rows = client.query(
        "SELECT DISTINCT objid::bigint FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND objsubid = 1
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND classid::bigint = $1
         ORDER BY 1",
        &[&(PARTITION_WISH_BASE >> 32)],
    )?;
    rows.iter()
        .map(|row| {
            let partition: i64 = row.try_get(0)?;
            u32::try_from(partition).map_err(|_| StoreError::Corrupt(format!("a wish for partition {partition}")))
        })
        .collect()
}
