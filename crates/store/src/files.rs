//! Uploaded batch files, kept by the store so that whichever process validates a batch can
//! read the file it was uploaded with: written in chunks through a [`FileSink`], readable
//! (with [`crate::BatchStore::open_file`]) only once [`FileSink::finish`] returned, so a crash
//! in the middle of an upload leaves nothing a validator would read.
//!
//! A file is named by what [`crate::BatchRecord::file`] holds, `batches/<name>` (see
//! [`file_name`]): the embedded store keeps it at that path under its data folder, the
//! PostgreSQL store in its `batch_files` table under that name.

use crate::{Result, StoreError};

/// The folder, and the prefix of every stored file's name.
pub const BATCH_FILES_DIR: &str = "batches";

/// The size of the pieces a file is stored in where the backend stores pieces (PostgreSQL:
/// one row each), and of the writes that reach the disk: 1 MiB.
pub const FILE_CHUNK_BYTES: usize = 1024 * 1024;

/// A batch's uploaded file being written. Chunks are appended in order; nothing is readable
/// before [`FileSink::finish`] returns; [`FileSink::abort`] (or a crash) leaves no file.
pub trait FileSink: Send {
    /// Appends `bytes` (any length) to the file.
    fn write_chunk(&mut self, bytes: &[u8]) -> Result<()>;
    /// Makes the file durable and readable under its name; returns its size in bytes.
    fn finish(self: Box<Self>) -> Result<u64>;
    /// Drops what was written.
    fn abort(self: Box<Self>) -> Result<()>;
}

/// The part of a stored file's name after `batches/`, checked to be one plain name (no
/// folder, no `..`), so that a name can never reach outside the store's files.
pub fn file_name(file: &str) -> Result<&str> {
    let plain = file
        .strip_prefix(BATCH_FILES_DIR)
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|name| !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0']));
    plain.ok_or_else(|| StoreError::Internal(format!("not a stored batch file's name: {file:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_name_is_one_plain_name_under_batches() {
        assert_eq!(file_name("batches/bat_1.csv").ok(), Some("bat_1.csv"));
        for bad in ["bat_1.csv", "batches/", "batches/../x", "batches/a/b", "batches/.hidden", "other/bat_1.csv"] {
            assert!(matches!(file_name(bad), Err(StoreError::Internal(_))), "{bad}");
        }
    }
}
