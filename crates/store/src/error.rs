//! What a store can fail with, by kind: callers decide by the kind (retry, answer 409, stop),
//! never by the text, which is for logs only and may hold a backend's own words.

/// A store failure. Business outcomes (an unknown account, insufficient funds) are never
/// errors here: they are the ledger's result codes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A row with this key already exists (a unique or primary key violation): the write lost
    /// a race or repeats one that was made. Nothing of it was written.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store is held by another writer longer than the wait allows; retrying later can work.
    #[error("the store is busy: {0}")]
    Busy(String),
    /// The store cannot be reached or written now (I/O error, read-only file, connection
    /// lost); retrying later can work.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The store's disk is full (SQLite's `SQLITE_FULL`, `ENOSPC` on a file of the data folder,
    /// PostgreSQL's SQLSTATE 53100): nothing of the write was made; reads still work, and the
    /// same write can succeed once space is freed.
    #[error("the store's disk is full: {0}")]
    Full(String),
    /// Another process holds the data location (one writer per location).
    #[error("{0} is in use by another paycore process")]
    InUse(String),
    /// What is stored breaks the schema's rules: a value that cannot be decoded, a balance
    /// replayed out of range, a row that should exist and does not.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The data was written by a newer paycore.
    #[error("the data is for a newer paycore (schema version {found}, this build knows {known})")]
    SchemaTooNew { found: i64, known: i64 },
    /// This engine no longer leads its partition: another leader took the partition's fencing
    /// epoch (or the connection that held the leader lock is gone). Nothing of the commit was
    /// written, and no later one will be: the engine must stop, not retry.
    #[error("fenced: {0}")]
    Fenced(String),
    /// The store's recorded set-up refuses what was asked: a partition count other than the
    /// cluster's, a partition that does not exist.
    #[error("{0}")]
    Refused(String),
    /// Anything else: a bug, a misused statement, a task of the store that panicked.
    #[error("internal store error: {0}")]
    Internal(String),
}

impl StoreError {
    /// Whether the same call may succeed later without anything changing on the caller's side.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Busy(_) | StoreError::Unavailable(_) | StoreError::Full(_))
    }

    /// The error of a file operation of the store: `ENOSPC` (and a quota's `EDQUOT`) is
    /// [`StoreError::Full`], anything else [`StoreError::Unavailable`].
    pub fn from_io(what: &str, error: &std::io::Error) -> StoreError {
        let text = format!("{what}: {error}");
        match error.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => StoreError::Full(text),
            _ => StoreError::Unavailable(text),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;
