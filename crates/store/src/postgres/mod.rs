//! The PostgreSQL store (cluster mode's store of record): the same traits and semantics as
//! the embedded SQLite store, on a database named by a `postgres://` URL.
//!
//! One connection belongs to the engine ([`PostgresStore`], `commit`): it holds the database's
//! single-writer advisory lock for as long as it lives, and commits each engine batch in one
//! transaction of set-based writes (`UNNEST` arrays: one statement per table, whatever the
//! number of transfers). The API's reads and writes ([`PostgresReader`], `reader`) share a
//! bounded pool of connections. The modules, by job: `open` (connections, the lock,
//! migrations in `postgres/migrations/`, recorded in `schema_version`), `codec` (columns to
//! ledger values and back, PostgreSQL's errors by kind), `commit`, `reader`, `batches`,
//! `files` (uploaded batch files, in chunks), `admin`, `verify`.
//!
//! The `postgres` client is synchronous (it runs a small runtime of its own per connection):
//! like the SQLite store's, its calls block, and callers on an async runtime make them from
//! blocking threads.

mod admin;
mod batches;
mod codec;
mod commit;
mod files;
mod open;
mod reader;
mod verify;

#[cfg(test)]
mod tests;

use crate::{Opened, Options, Result};
use commit::PostgresStore;
use reader::PostgresReader;
use std::sync::Arc;

/// Opens the database at `url`: takes its single-writer lock, migrates its schema, and returns
/// the engine's writer and the API's handle.
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
        Ok(writer)
    })?;
    let reader = Arc::new(PostgresReader::new(url.to_owned(), options.reader_connections_max));
    Ok((PostgresStore::new(writer), reader))
}

/// Opens the database at `url` for offline checks; creates nothing, and fails when it holds
/// no paycore store.
pub(crate) fn open_for_verify(url: &str) -> Result<Arc<dyn crate::ApiStore>> {
    off_runtime(|| open::check_existing(&mut open::connect(url)?, url))?;
    Ok(Arc::new(PostgresReader::new(url.to_owned(), 1)))
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
