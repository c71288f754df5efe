//! Online backup and restore of the embedded store's data folder.
//!
//! [`backup`] works while `paycore serve` runs on the folder: it takes no lock, only reads.
//! The database is copied with SQLite's `VACUUM INTO`, which reads one snapshot (a read
//! transaction of the WAL), so the copy ends at a commit boundary: every batch committed —
//! every payment acknowledged — before the backup began is in it, and no batch is in it in
//! part. The copy, the uploaded batch files its batches name, and a one-line manifest go into
//! one tar file, written beside its destination and renamed into place once synced.
//!
//! What is not copied is derived and rebuilt: `history.db` (account history; the indexer
//! rebuilds it when the restored folder is first served), the report files (written again on
//! request), balances newer than the last checkpoint (the restored store replays the
//! transfers after `balances_through`, as after a crash), and the `LOCK` file. The first API
//! key's `api-key` file is not copied either: the keys' hashes are in the database.
//!
//! [`restore`] unpacks such a file into a new data folder; it refuses a folder that exists
//! and is not empty, and any entry it does not know (a name outside the folder included); one
//! that fails leaves the folder as it found it, empty or absent. A PostgreSQL store is backed up with
//! PostgreSQL's own tools (`pg_dump`, or base backups with WAL archiving for point-in-time
//! recovery); `paycore verify --store postgres://…` checks the restored database.

use crate::Result;
use std::path::Path;

/// The first entry of a backup file: its format.
pub const MANIFEST: &str = "paycore-backup";
/// The manifest's text in the backups this build writes.
pub const MANIFEST_V1: &str = "paycore backup 1\n";

/// What a backup holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupSummary {
    /// Bytes of the database copy.
    pub database_bytes: u64,
    /// Uploaded batch files copied.
    pub files: usize,
    /// Bytes of the backup file.
    pub bytes: u64,
}

/// Backs the data folder `data_dir` up into the new file `to` (see the module docs). Refuses a
/// `to` that exists, and a folder that holds no paycore database.
pub fn backup(data_dir: &Path, to: &Path) -> Result<BackupSummary> {
    crate::sqlite::backup(data_dir, to)
}

/// Restores the backup file `from` into the data folder `data_dir`, which must not exist or
/// be empty. Returns what it restored.
pub fn restore(from: &Path, data_dir: &Path) -> Result<BackupSummary> {
    crate::sqlite::restore(from, data_dir)
}
