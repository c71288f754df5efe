//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`, so a commit is on
//! disk (fsync) before it returns.
//!
//! One writer connection belongs to the engine ([`SqliteStore`], `commit`); the API's reads and
//! writes ([`SqliteReader`], `reader`) share a bounded pool of connections and see committed
//! data only. An exclusive lock on `<data>/LOCK` keeps a second process from opening the same
//! data folder: two writers would mean two engines, and two engines can spend the same money
//! twice. The modules, by job: `open` (connections, the lock, migrations), `codec` (columns to
//! ledger values and back), `commit` (the engine's side), `reader` (the pool and the reads), `files` (uploaded batch files under `<data>/batches/`),
//! `checkpoint` (WAL checkpoints beside the commits), `history` (account history in its own
//! file), `raw` (the bulk transfer insert's statement, bound without copies), `batches`, `blocks` (a batch's items, in blocks of up to 256), `admin`, `leases` (batch leases and delivery claims), `verify`.

mod admin;
mod backup;
mod batches;
mod blocks;
mod checkpoint;
mod clearing;
mod codec;
mod commit;
mod files;
mod fresh;
mod fx;
mod history;
mod interest;
mod leases;
mod limits;
mod open;
// The one module with `unsafe`: a statement bound without copies (see its header).
#[allow(unsafe_code)]
mod raw;
mod reader;
mod retention;
mod returns;
mod verify;

#[cfg(test)]
mod tests;

use crate::{Opened, Options, Result};
use checkpoint::Checkpointer;
use commit::SqliteStore;
use history::{Indexer, HISTORY_FILE};
use reader::SqliteReader;
use std::path::Path;
use std::sync::Arc;

pub(crate) use backup::{backup, restore};

/// Opens (creating if needed) the data folder: locks it, migrates the schema, and starts the
/// store's threads (the WAL checkpointer, the history indexer).
pub(crate) fn open(data_dir: &Path, options: &Options) -> Result<Opened> {
    let (store, reader) = open_parts(data_dir, options)?;
    Ok(Opened { store: Box::new(store), api: reader })
}

fn open_parts(data_dir: &Path, options: &Options) -> Result<(SqliteStore, Arc<SqliteReader>)> {
    let lock = open::lock(data_dir)?;
    let path = data_dir.join(open::DATABASE_FILE);
    let writer = open::writer(&path)?;
    open::free_leases(&writer)?;
    let checkpointer = Checkpointer::start(&path)?;
    let history_path = data_dir.join(HISTORY_FILE);
    let indexer = Indexer::start(path.clone(), history::open_for_writing(&writer, &history_path)?)?;
    let reader =
        Arc::new(SqliteReader::new(data_dir.to_path_buf(), path, history_path, options.reader_connections_max));
    let store = SqliteStore::new(writer, indexer, checkpointer, reader.fresh(), lock);
    Ok((store, reader))
}

/// Opens a data folder for offline checks; creates nothing.
pub(crate) fn open_for_verify(data_dir: &Path) -> Result<Arc<dyn crate::ApiStore>> {
    let path = data_dir.join(open::DATABASE_FILE);
    if !path.exists() {
        return Err(crate::StoreError::Unavailable(format!("{} has no paycore database", data_dir.display())));
    }
    Ok(Arc::new(SqliteReader::new(data_dir.to_path_buf(), path, data_dir.join(HISTORY_FILE), 1)))
}
