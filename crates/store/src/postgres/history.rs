//! Account history, built off the commit (migration `0022_account_runs.sql`).
//!
//! The commit writes a transfer once, to `transfers` (keyed by id, with a B-tree on its
//! timestamp). Each engine process runs an [`Indexer`] for the partitions it leads: a thread
//! with a connection of its own that, about once a second, reads what those partitions
//! committed since their watermark and writes every account's entries of that stretch as runs
//! (`account_runs`: up to [`RUN_MAX`] timestamps and ids in time order, one row and one index
//! entry each), then moves the watermark, in the same transaction.
//!
//! **Why a watermark is safe.** A partition's commits are serial and each one moves
//! `partitions.last_timestamp` to its batch's last timestamp in the transaction that writes its
//! transfers (the fence). So in any snapshot, every transfer of a partition up to its
//! `last_timestamp` is visible, and one not yet committed has a later timestamp. A pass reads
//! the watermarks (locked), the clocks and the transfers in one `REPEATABLE READ` snapshot and
//! indexes up to the clock: nothing at or below a watermark can appear later. Two indexers of
//! one partition (a stale leader's and the new one's) serialize on the watermark's row: the
//! second fails with a serialization error and tries again at its next tick.
//!
//! **Reads** (listing, statements, limits, interest) take a split point `S`, a watermark read
//! first: the runs' entries at or below `S` and the transfers after `S` (the tail, read by
//! time on `transfers_timestamp`). Runs and watermarks only grow, so a watermark that moved
//! since `S` was read only adds entries above `S`, which the read takes from the tail: every
//! transfer is listed once, whether indexed or not.

use super::background::{Background, Stop};
use super::codec::{get, id, id_bytes};
use super::partitions::{self, PerPartition};
use crate::{partition_of, Result, StoreError};
use paycore_ledger::{AccountId, TenantId, TransferId};
use postgres::{Client, GenericClient, IsolationLevel};
use std::collections::HashMap;
use std::time::Duration;

/// The most entries in a run: 48 timestamps and ids keep a row under PostgreSQL's 2 kB TOAST
/// threshold, so a run is read without a second lookup.
const RUN_MAX: usize = 48;

/// How often the indexer looks for new transfers when it has caught up.
const TICK: Duration = Duration::from_secs(1);

/// A pass reads at most this many transfers (a bulk load's second, or a stretch of a history
/// being built anew after the migration).
const PASS_ROWS: i64 = 200_000;

/// The split point of reads on the accounts of `tenant`: its partition's watermark (0 when
/// nothing is indexed yet). One round trip: the partition count and every watermark (one a
/// partition), the tenant's picked here, where its partition is computed.
pub(super) fn split_of_tenant(client: &mut impl GenericClient, tenant: TenantId) -> Result<i64> {
    Ok(PerPartition::read(client, "history_watermarks", "partition", "through")?.of_tenant(tenant, 0))
}

/// The split point of reads on the accounts of several partitions: the least of their
/// watermarks (0 when one has none yet).
pub(super) fn split_of_partitions(client: &mut Client, ids: &[i32]) -> Result<i64> {
    let row = client.query_one(
        "SELECT coalesce(min(coalesce(h.through, 0)), 0)
         FROM UNNEST($1::integer[]) AS p (id) LEFT JOIN history_watermarks h ON h.partition = p.id",
        &[&ids],
    )?;
    Ok(row.try_get(0)?)
}

/// An account's transfers before `$2`, newest first, at most `$4`: `$1` the account, `$3` its
/// tenant, `$5` the split point. The runs read are the one that may straddle `$2` and the
/// `$4` before it: each holds at least one entry, and those above `$5` (skipped here) are all
/// in the tail, so enough remain.
pub(super) const NEWEST_BEFORE: &str = "SELECT * FROM (
     (SELECT * FROM transfers
      WHERE timestamp > $5 AND timestamp < $2 AND tenant = $3 AND (debit_account = $1 OR credit_account = $1)
      ORDER BY timestamp DESC LIMIT $4)
     UNION ALL
     (SELECT t.* FROM (
          SELECT e.id FROM (
              (SELECT * FROM account_runs WHERE account = $1 AND last_ts >= $2 ORDER BY last_ts LIMIT 1)
              UNION ALL
              (SELECT * FROM account_runs WHERE account = $1 AND last_ts < $2 ORDER BY last_ts DESC LIMIT $4)
          ) r, unnest(r.timestamps, r.ids) AS e (ts, id)
          WHERE e.ts < $2 AND e.ts <= $5
          ORDER BY e.ts DESC LIMIT $4
      ) i JOIN transfers t ON t.id = i.id WHERE t.tenant = $3)
 ) x ORDER BY timestamp DESC LIMIT $4";

/// An account's transfers in `[$2, $3)`, oldest first, at most `$5`: `$1` the account, `$4`
/// its tenant, `$6` the split point. The runs read are those ending in the range and the one
/// that may straddle its end.
pub(super) const OLDEST_BETWEEN: &str = "SELECT * FROM (
     (SELECT * FROM transfers
      WHERE timestamp > $6 AND timestamp >= $2 AND timestamp < $3 AND tenant = $4
        AND (debit_account = $1 OR credit_account = $1)
      ORDER BY timestamp LIMIT $5)
     UNION ALL
     (SELECT t.* FROM (
          SELECT e.id FROM (
              (SELECT * FROM account_runs WHERE account = $1 AND last_ts >= $2 AND last_ts < $3
               ORDER BY last_ts LIMIT $5)
              UNION ALL
              (SELECT * FROM account_runs WHERE account = $1 AND last_ts >= GREATEST($2, $3)
               ORDER BY last_ts LIMIT 1)
          ) r, unnest(r.timestamps, r.ids) AS e (ts, id)
          WHERE e.ts >= $2 AND e.ts < $3 AND e.ts <= $6
          ORDER BY e.ts LIMIT $5
      ) i JOIN transfers t ON t.id = i.id WHERE t.tenant = $4)
 ) x ORDER BY timestamp LIMIT $5";

/// A query of the ids (`id`) of the transfers of the accounts `accounts` (each as `account`)
/// from `since` on (inclusive) up to the split point `split`, from their runs; a transfer
/// between two of them comes twice. The arguments are the parameters' `$n`.
pub(super) fn indexed_since(accounts: &str, since: &str, split: &str) -> String {
    format!(
        "SELECT e.id, r.account FROM account_runs r, unnest(r.timestamps, r.ids) AS e (ts, id)
         WHERE r.account = ANY({accounts}) AND r.last_ts >= {since} AND e.ts >= {since} AND e.ts <= {split}"
    )
}

/// What one pass did.
#[derive(Debug, Default)]
pub(super) struct Pass {
    /// Transfers indexed.
    pub(super) indexed: usize,
    /// Whether every partition's watermark reached its clock.
    pub(super) caught_up: bool,
}

/// One pass over `led`'s transfers after their watermarks: at most `rows_max` of them
/// ([`PASS_ROWS`] in the indexer), up to the partitions' clocks.
pub(super) fn pass(client: &mut Client, led: &[i32], rows_max: i64) -> Result<Pass> {
    client.execute(
        "INSERT INTO history_watermarks (partition, through) SELECT p, 0 FROM UNNEST($1::integer[]) AS p
         ON CONFLICT DO NOTHING",
        &[&led],
    )?;
    let count = partitions::recorded(client)?.unwrap_or(1);
    let mut tx = client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).start()?;
    let mut through: HashMap<i32, i64> = HashMap::new();
    for row in tx.query(
        "SELECT partition, through FROM history_watermarks WHERE partition = ANY($1) ORDER BY partition FOR UPDATE",
        &[&led],
    )? {
        through.insert(row.try_get(0)?, row.try_get(1)?);
    }
    let mut clock: HashMap<i32, i64> = HashMap::new();
    for row in tx.query("SELECT id, last_timestamp FROM partitions WHERE id = ANY($1)", &[&led])? {
        clock.insert(row.try_get(0)?, row.try_get(1)?);
    }
    let (Some(&lo), Some(&hi)) = (through.values().min(), clock.values().max()) else {
        return Ok(Pass { indexed: 0, caught_up: true });
    };
    if hi <= lo {
        return Ok(Pass { indexed: 0, caught_up: true });
    }
    // Where the next `rows_max` transfers end, by the timestamp index: before the first one
    // past them, unless all of them share its timestamp (partitions' clocks may meet), so
    // that every pass moves on.
    let upper = match tx.query_opt(
        "SELECT timestamp FROM transfers WHERE timestamp > $1 ORDER BY timestamp OFFSET $2 LIMIT 1",
        &[&lo, &rows_max],
    )? {
        Some(row) => {
            let past: i64 = row.try_get(0)?;
            hi.min(if past - 1 > lo { past - 1 } else { past })
        }
        None => hi,
    };
    let rows = tx.query(
        "SELECT id, tenant, debit_account, credit_account, timestamp FROM transfers
         WHERE timestamp > $1 AND timestamp <= $2",
        &[&lo, &upper],
    )?;
    let mut places: HashMap<[u8; 16], Option<i32>> = HashMap::new();
    let mut entries: Vec<([u8; 16], i64, [u8; 16])> = Vec::with_capacity(rows.len() * 2);
    let mut indexed = 0;
    for row in &rows {
        let tenant = id_bytes(id(row, "tenant")?);
        let partition = *places.entry(tenant).or_insert_with(|| {
            let p = i32::try_from(partition_of(TenantId(u128::from_be_bytes(tenant)), count)).unwrap_or(i32::MAX);
            through.contains_key(&p).then_some(p)
        });
        let Some(partition) = partition else { continue };
        let ts: i64 = get(row, "timestamp")?;
        let bound = clock.get(&partition).copied().unwrap_or(i64::MIN).min(upper);
        if ts <= through.get(&partition).copied().unwrap_or(i64::MAX) || ts > bound {
            continue;
        }
        let transfer = id_bytes(id(row, "id")?);
        let debit = id_bytes(id(row, "debit_account")?);
        let credit = id_bytes(id(row, "credit_account")?);
        entries.push((debit, ts, transfer));
        if credit != debit {
            entries.push((credit, ts, transfer));
        }
        indexed += 1;
    }
    if !entries.is_empty() {
        entries.sort_unstable();
        let runs = runs(&entries);
        let accounts: Vec<&[u8]> = entries.iter().map(|e| &e.0[..]).collect();
        let timestamps: Vec<i64> = entries.iter().map(|e| e.1).collect();
        let ids: Vec<&[u8]> = entries.iter().map(|e| &e.2[..]).collect();
        tx.execute(
            "INSERT INTO account_runs (account, first_ts, last_ts, timestamps, ids)
             SELECT account, min(ts), max(ts), array_agg(ts ORDER BY ts), array_agg(id ORDER BY ts)
             FROM UNNEST($1::bytea[], $2::bigint[], $3::bytea[], $4::integer[]) AS e (account, ts, id, run)
             GROUP BY run, account",
            &[&accounts, &timestamps, &ids, &runs],
        )?;
    }
    let (moved, to): (Vec<i32>, Vec<i64>) =
        through.iter().map(|(&p, &w)| (p, w.max(clock.get(&p).copied().unwrap_or(w).min(upper)))).unzip();
    tx.execute(
        "UPDATE history_watermarks SET through = m.through
         FROM UNNEST($1::integer[], $2::bigint[]) AS m (partition, through)
         WHERE history_watermarks.partition = m.partition",
        &[&moved, &to],
    )?;
    tx.commit()?;
    Ok(Pass { indexed, caught_up: upper >= hi })
}

/// The run of each of `entries` (sorted by account, then time): a new one at each account,
/// and after every [`RUN_MAX`] entries of one.
fn runs<T>(entries: &[([u8; 16], i64, T)]) -> Vec<i32> {
    let mut runs = Vec::with_capacity(entries.len());
    let (mut run, mut in_run) = (0i32, 0usize);
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 && (entry.0 != entries[i - 1].0 || in_run == RUN_MAX) {
            run += 1;
            in_run = 0;
        }
        in_run += 1;
        runs.push(run);
    }
    runs
}

/// The background indexer of an engine's partitions: a thread with its own connection, which
/// runs passes until it is dropped. Failures (a lost connection, a serialization failure
/// against another indexer) are logged and retried at the next tick.
pub(super) struct Indexer {
    _thread: Background,
}

impl Indexer {
    pub(super) fn start(url: String, led: Vec<i32>) -> Indexer {
        let thread = Background::start("pg-history", "the history indexer", move |stop| run(&url, &led, stop));
        Indexer { _thread: thread }
    }
}

fn run(url: &str, led: &[i32], stop: &Stop) {
    let mut client: Option<Client> = None;
    let mut failing = false;
    loop {
        let caught_up = match index(url, led, &mut client) {
            Ok(caught_up) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("history indexer succeeds again");
                }
                caught_up
            }
            Err(error) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(%error, "history indexer failed; retrying every second");
                }
                client = client.filter(|c| !c.is_closed());
                true
            }
        };
        if if caught_up { stop.wait(TICK) } else { stop.stopped() } {
            return;
        }
    }
}

fn index(url: &str, led: &[i32], client: &mut Option<Client>) -> Result<bool> {
    let client = match client {
        Some(client) => client,
        None => client.insert(super::open::connect(url)?),
    };
    match pass(client, led, PASS_ROWS) {
        Ok(pass) => {
            tracing::debug!(indexed = pass.indexed, caught_up = pass.caught_up, "history pass");
            Ok(pass.caught_up)
        }
        // Another indexer of these partitions moved a watermark since this pass's snapshot.
        Err(StoreError::Busy(_)) => Ok(true),
        Err(error) => Err(error),
    }
}

/// The problems of `account_runs` against `transfers` in the caller's snapshot, ten of each
/// kind at most: an entry that is not its account's transfer at its time, an entry listed twice,
/// an entry above its partition's watermark, and a transfer at or below the watermark missing
/// from one of its accounts' runs (`verify`).
pub(super) fn problems(client: &mut impl GenericClient) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let named = |row: &postgres::Row| -> Result<(AccountId, TransferId)> {
        Ok((AccountId(id(row, "account")?), TransferId(id(row, "id")?)))
    };
    for row in client.query(
        "SELECT r.account, e.id FROM account_runs r CROSS JOIN LATERAL unnest(r.timestamps, r.ids) AS e (ts, id)
         LEFT JOIN transfers t ON t.id = e.id
         WHERE t.id IS NULL OR t.timestamp <> e.ts OR (t.debit_account <> r.account AND t.credit_account <> r.account)
         LIMIT 10",
        &[],
    )? {
        let (account, transfer) = named(&row)?;
        problems.push(format!("{account}: its history lists {transfer}, which is not its transfer at that time"));
    }
    for row in client.query(
        "SELECT r.account, e.id FROM account_runs r CROSS JOIN LATERAL unnest(r.timestamps, r.ids) AS e (ts, id)
         GROUP BY 1, 2 HAVING count(*) > 1 LIMIT 10",
        &[],
    )? {
        let (account, transfer) = named(&row)?;
        problems.push(format!("{account}: its history lists {transfer} more than once"));
    }
    // Each tenant's watermark: its partition's.
    let count = partitions::recorded(client)?.unwrap_or(1);
    let mut through: HashMap<i32, i64> = HashMap::new();
    for row in client.query("SELECT partition, through FROM history_watermarks", &[])? {
        through.insert(row.try_get(0)?, row.try_get(1)?);
    }
    let mut tenants: Vec<[u8; 16]> = Vec::new();
    let mut watermarks: Vec<i64> = Vec::new();
    for row in client.query("SELECT DISTINCT tenant FROM transfers", &[])? {
        let tenant = id_bytes(id(&row, "tenant")?);
        let partition = i32::try_from(partition_of(TenantId(u128::from_be_bytes(tenant)), count)).unwrap_or(i32::MAX);
        tenants.push(tenant);
        watermarks.push(through.get(&partition).copied().unwrap_or(0));
    }
    for row in client.query(
        "SELECT r.account, e.id FROM account_runs r CROSS JOIN LATERAL unnest(r.timestamps, r.ids) AS e (ts, id)
         JOIN transfers t ON t.id = e.id JOIN UNNEST($1::bytea[], $2::bigint[]) AS w (tenant, through) ON w.tenant = t.tenant
         WHERE e.ts > w.through LIMIT 10",
        &[&tenants, &watermarks],
    )? {
        let (account, transfer) = named(&row)?;
        problems.push(format!("{account}: its history lists {transfer}, above its partition's watermark"));
    }
    for row in client.query(
        "SELECT a.account, t.id FROM transfers t
         JOIN UNNEST($1::bytea[], $2::bigint[]) AS w (tenant, through) ON w.tenant = t.tenant
         CROSS JOIN LATERAL (VALUES (t.debit_account), (t.credit_account)) AS a (account)
         WHERE t.timestamp <= w.through AND NOT EXISTS (
             SELECT 1 FROM account_runs r
             WHERE r.account = a.account AND r.last_ts >= t.timestamp AND r.first_ts <= t.timestamp
               AND t.id = ANY (r.ids))
         LIMIT 10",
        &[&tenants, &watermarks],
    )? {
        let (account, transfer) = named(&row)?;
        problems.push(format!("{account}: its history misses {transfer}, indexed by its partition's watermark"));
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::{runs, RUN_MAX};

    #[test]
    fn runs_split_at_each_account_and_after_run_max_entries() {
        let mut entries: Vec<([u8; 16], i64, ())> = (0..RUN_MAX * 2 + 1).map(|i| ([1; 16], i as i64, ())).collect();
        entries.extend([([2; 16], 0, ()), ([2; 16], 1, ()), ([3; 16], 5, ())]);
        let runs = runs(&entries);
        let count = |run: i32| runs.iter().filter(|&&r| r == run).count();
        assert_eq!((count(0), count(1), count(2), count(3), count(4)), (RUN_MAX, RUN_MAX, 1, 2, 1));
        assert_eq!(runs.last(), Some(&4));
        assert!(runs.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1));
    }
}
