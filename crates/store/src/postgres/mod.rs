//! The PostgreSQL store (cluster mode's store of record): the same traits and semantics as
//! the embedded SQLite store, on a database named by a `postgres://` URL.
//!
//! One connection belongs to the engine ([`PostgresStore`], `commit`): it leads the
//! partitions it writes for (their advisory locks, held for as long as it lives, and a fencing
//! epoch each, checked by every commit: `partitions`), and commits each engine batch in one
//! transaction of set-based writes (`UNNEST` arrays: one statement per table, whatever the
//! number of transfers). The API's reads and writes ([`PostgresReader`], `reader`) share a
//! bounded pool of connections. The modules, by job: `open` (connections, the lock,
//! migrations in `postgres/migrations/`, recorded in `schema_version`), `partitions` (the
//! partition count, leader locks and epochs), `codec` (columns to
//! ledger values and back, PostgreSQL's errors by kind), `commit`, `history` (account history
//! built off the commit, and the reads that merge it with the unindexed tail), `reader`, `batches`,
//! `files` (uploaded batch files, in chunks), `admin`, `leases` (batch leases and delivery
//! claims, `FOR UPDATE SKIP LOCKED`), `verify`.
//!
//! The `postgres` client is synchronous (it runs a small runtime of its own per connection):
//! like the SQLite store's, its calls block, and callers on an async runtime make them from
//! blocking threads.

mod admin;
mod background;
mod balances;
mod batches;
mod clearing;
mod codec;
mod commit;
mod copy;
mod files;
mod fx;
mod history;
mod interest;
mod leases;
mod limits;
mod open;
mod partitions;
mod prepared;
mod reader;
mod retention;
mod returns;
mod verify;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_partitions;

use crate::{Leader, Opened, Options, Result, StoreError};
use commit::PostgresStore;
use partitions::Lead;
use reader::PostgresReader;
use std::sync::Arc;

/// Opens the database at `url` with one writer for all of it: takes its single-writer lock,
/// migrates its schema, leads every partition of the cluster (creating one if the cluster has
/// none yet), and returns the engine's writer and the API's handle.
pub(crate) fn open(url: &str, options: &Options) -> Result<Opened> {
    let (store, reader) = open_parts(url, options)?;
    Ok(Opened { store: Box::new(store), api: reader })
}

fn open_parts(url: &str, options: &Options) -> Result<(PostgresStore, Arc<PostgresReader>)> {
    let writer = off_runtime(|| {
        let mut writer = open::connect(url)?;
        open::lock(&mut writer, url)?;
        open::migrate(&mut writer)?;
        files::remove_stale(&mut writer)?;
        let count = partitions::count(&mut writer, None)?;
        let all: Vec<u32> = (0..count).collect();
        let lead = Lead::take(&mut writer, url, &all, count)?;
        Ok(PostgresStore::new(writer, lead, url))
    })?;
    let reader = Arc::new(PostgresReader::new(url.to_owned(), options.reader_connections_max));
    Ok((writer, reader))
}

/// The cluster's partition count at `url`, recorded by the first call (see
/// [`crate::cluster_partitions`]).
pub(crate) fn cluster_partitions(url: &str, requested: Option<u32>) -> Result<u32> {
    off_runtime(|| {
        let mut client = open::connect(url)?;
        open::migrate(&mut client)?;
        partitions::count(&mut client, requested)
    })
}

/// The partition count recorded at `url`, if a cluster was created there (see
/// [`crate::recorded_cluster_partitions`]).
pub(crate) fn recorded_partitions(url: &str) -> Result<Option<u32>> {
    off_runtime(|| {
        let mut client = open::connect(url)?;
        open::migrate(&mut client)?;
        partitions::recorded(&mut client)
    })
}

/// The API's handle on the cluster's store at `url`, without any writer lock (see
/// [`crate::open_api`]).
pub(crate) fn open_api(url: &str, options: &Options) -> Result<Arc<dyn crate::ApiStore>> {
    off_runtime(|| {
        let mut client = open::connect(url)?;
        open::migrate(&mut client)
    })?;
    Ok(Arc::new(PostgresReader::new(url.to_owned(), options.reader_connections_max)))
}

/// Leads `partition` of the cluster at `url` (see [`crate::open_partition`]).
pub(crate) fn open_partition(url: &str, partition: u32, options: &Options) -> Result<Leader> {
    let (store, partitions, epoch) = off_runtime(|| {
        let mut writer = open::connect(url)?;
        open::migrate(&mut writer)?;
        files::remove_stale(&mut writer)?;
        let count = partitions::count(&mut writer, None)?;
        if partition >= count {
            return Err(StoreError::Refused(format!(
                "partition {partition} does not exist: this cluster has {count} (0 to {})",
                count - 1
            )));
        }
        let lead = Lead::take(&mut writer, url, &[partition], count)?;
        let epoch = lead.epoch();
        Ok((PostgresStore::new(writer, lead, url), count, epoch))
    })?;
    let api = Arc::new(PostgresReader::new(url.to_owned(), options.reader_connections_max));
    Ok(Leader { store: Box::new(store), api, partition, partitions, epoch })
}

/// Opens the database at `url` for offline checks; creates nothing, and fails when it holds
/// no paycore store.
pub(crate) fn open_for_verify(url: &str) -> Result<Arc<dyn crate::ApiStore>> {
    off_runtime(|| open::check_existing(&mut open::connect(url)?, url))?;
    Ok(Arc::new(PostgresReader::new(url.to_owned(), 1)))
}

/// A connection to `url` holding `partition`'s wish (see [`crate::wish_to_lead`]).
pub(crate) fn wish_to_lead(url: &str, partition: u32) -> Result<postgres::Client> {
    off_runtime(|| {
        let mut client = open::connect(url)?;
        partitions::wish(&mut client, partition)?;
        Ok(client)
    })
}

/// A connection to `url` for [`crate::PartitionWishes`].
pub(crate) fn connect(url: &str) -> Result<postgres::Client> {
    off_runtime(|| open::connect(url))
}

/// The partitions whose wish some connection holds.
pub(crate) fn wished(client: &mut postgres::Client) -> Result<Vec<u32>> {
    partitions::wished(client)
}

/// Runs `f` on a thread of its own: the `postgres` client blocks on a runtime of its own,
/// which cannot start on a thread that drives async tasks, and a store is often opened from
/// an async `main`. Every later call is made from the engine's thread or a blocking one.
fn off_runtime<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(f)
            .join()
            .unwrap_or_else(|_| Err(crate::StoreError::Internal("opening the PostgreSQL store panicked".into())))
    })
}
