//! One prepared statement driven through SQLite's C API, for the bulk transfer insert.
//!
//! rusqlite binds every blob and text `SQLITE_TRANSIENT`: SQLite allocates a copy at each bind
//! and frees it at the next one, and rusqlite offers no `SQLITE_STATIC` bind (the value used in
//! place, no copy). A bulk commit binds three 16-byte ids a transfer, ~350 instructions each
//! that way (the copy with its `malloc` and `free`), ~160 in place (crates/bench/NOTES.md).
//! [`StaticStatement::execute`] binds every parameter `SQLITE_STATIC` from values that outlive
//! the step, steps once and resets. Its `unsafe` blocks, and the one `prepare` of its caller
//! (`commit::insert_transfers`), each say why they hold.
//!
//! The statement is prepared on a connection the caller keeps ([`StaticStatement::prepare`]
//! is `unsafe` for that reason): rusqlite closes a connection with `sqlite3_close`, which fails
//! (and rusqlite panics) while a statement of it is not finalized, so the statement must be
//! dropped first. `SqliteStore` declares it before its connection, and fields drop in order.

use rusqlite::{ffi, Connection};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr::NonNull;

/// A value bound to one parameter for one step, borrowed from the caller.
#[derive(Clone, Copy, Debug)]
pub(super) enum Bind<'a> {
    Blob(&'a [u8]),
    Text(&'a str),
    Int(i64),
    Null,
}

/// A prepared statement of one connection whose parameters are bound without a copy.
pub(super) struct StaticStatement {
    stmt: NonNull<ffi::sqlite3_stmt>,
    db: NonNull<ffi::sqlite3>,
    parameters: usize,
}

// SAFETY: the statement is used only through `&mut self`, so by one thread at a time, and it
// moves between threads only with the store that owns it and its connection (the engine's
// connection is opened `SQLITE_OPEN_NO_MUTEX`: one thread at a time, as this statement).
unsafe impl Send for StaticStatement {}

impl StaticStatement {
    /// Prepares `sql` (one statement) on `conn`, kept for reuse (`SQLITE_PREPARE_PERSISTENT`).
    ///
    /// # Safety
    ///
    /// The statement must be dropped before `conn` is closed, and used only while `conn` is
    /// (the same thread, never during another call on `conn`).
    pub(super) unsafe fn prepare(conn: &Connection, sql: &str) -> rusqlite::Result<StaticStatement> {
        // SAFETY: `handle` is the live connection's pointer; it is used here and, by the
        // caller's promise, only while the connection lives.
        let db = unsafe { conn.handle() };
        let db = NonNull::new(db).ok_or(rusqlite::Error::InvalidQuery)?;
        let length = c_int::try_from(sql.len()).map_err(|_| rusqlite::Error::InvalidQuery)?;
        let mut stmt = std::ptr::null_mut();
        // SAFETY: `sql` is valid for `length` bytes (SQLite reads no further); `stmt` is
        // written by SQLite; no tail is asked for.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                db.as_ptr(),
                sql.as_ptr().cast::<c_char>(),
                length,
                ffi::SQLITE_PREPARE_PERSISTENT,
                &mut stmt,
                std::ptr::null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(error(db));
        }
        // An empty text prepares to no statement.
        let stmt = NonNull::new(stmt).ok_or(rusqlite::Error::InvalidQuery)?;
        // SAFETY: `stmt` is the statement just prepared.
        let parameters = unsafe { ffi::sqlite3_bind_parameter_count(stmt.as_ptr()) };
        Ok(StaticStatement { stmt, db, parameters: usize::try_from(parameters).unwrap_or(0) })
    }

    /// Binds `values` to the parameters 1, 2, … (exactly as many as the statement has), steps
    /// the statement to its end and resets it; returns the rows changed.
    ///
    /// Every parameter is bound anew before each step and SQLite reads bound values only while
    /// it steps, so a value borrowed for this call is never read after it returns.
    pub(super) fn execute(&mut self, values: &[Bind<'_>]) -> rusqlite::Result<usize> {
        if values.len() != self.parameters {
            return Err(rusqlite::Error::InvalidParameterCount(values.len(), self.parameters));
        }
        let stmt = self.stmt.as_ptr();
        for (index, value) in values.iter().enumerate() {
            // Fits: at most `parameters`, itself a `c_int`.
            let index = c_int::try_from(index + 1).unwrap_or(c_int::MAX);
            // SAFETY: `stmt` is live (finalized only by `drop`); each pointer is valid for its
            // length for this whole call, which ends after the step that reads it; with
            // `SQLITE_STATIC` SQLite neither copies nor frees it.
            let rc = unsafe {
                match *value {
                    Bind::Blob(bytes) => ffi::sqlite3_bind_blob(
                        stmt,
                        index,
                        bytes.as_ptr().cast::<c_void>(),
                        c_int::try_from(bytes.len()).map_err(|_| rusqlite::Error::InvalidQuery)?,
                        ffi::SQLITE_STATIC(),
                    ),
                    Bind::Text(text) => ffi::sqlite3_bind_text(
                        stmt,
                        index,
                        text.as_ptr().cast::<c_char>(),
                        c_int::try_from(text.len()).map_err(|_| rusqlite::Error::InvalidQuery)?,
                        ffi::SQLITE_STATIC(),
                    ),
                    Bind::Int(value) => ffi::sqlite3_bind_int64(stmt, index, value),
                    Bind::Null => ffi::sqlite3_bind_null(stmt, index),
                }
            };
            if rc != ffi::SQLITE_OK {
                return Err(error(self.db));
            }
        }
        // SAFETY: `stmt` is live, its parameters bound to values that outlive the step.
        let rc = unsafe { ffi::sqlite3_step(stmt) };
        // The error and its message, before the reset (which would return the code again).
        let failed = (rc != ffi::SQLITE_DONE).then(|| match rc {
            ffi::SQLITE_ROW => rusqlite::Error::ExecuteReturnedResults,
            _ => error(self.db),
        });
        // SAFETY: `stmt` is live; a reset keeps the bindings and reads none.
        unsafe { ffi::sqlite3_reset(stmt) };
        if let Some(error) = failed {
            return Err(error);
        }
        // SAFETY: the connection is live (the caller's promise at `prepare`).
        let changes = unsafe { ffi::sqlite3_changes64(self.db.as_ptr()) };
        Ok(usize::try_from(changes).unwrap_or(0))
    }
}

impl Drop for StaticStatement {
    fn drop(&mut self) {
        // SAFETY: the statement is live and finalized once, here, before its connection closes
        // (the caller's promise at `prepare`).
        unsafe { ffi::sqlite3_finalize(self.stmt.as_ptr()) };
    }
}

/// The connection's last error, as rusqlite reports one (so `StoreError::from` sorts it).
fn error(db: NonNull<ffi::sqlite3>) -> rusqlite::Error {
    // SAFETY: the connection is live; its message is a NUL-terminated string that SQLite keeps
    // until the next call on the connection, and is copied at once.
    let (code, message) = unsafe {
        let message = ffi::sqlite3_errmsg(db.as_ptr());
        let message = (!message.is_null()).then(|| CStr::from_ptr(message).to_string_lossy().into_owned());
        (ffi::sqlite3_extended_errcode(db.as_ptr()), message)
    };
    rusqlite::Error::SqliteFailure(ffi::Error::new(code), message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::type_complexity)]
mod tests {
    use super::{Bind, StaticStatement};
    use crate::StoreError;
    use rusqlite::Connection;

    fn table() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id BLOB NOT NULL UNIQUE, name TEXT, n INTEGER, extra BLOB)").unwrap();
        conn
    }

    fn rows(conn: &Connection) -> Vec<(Vec<u8>, Option<String>, Option<i64>, Option<Vec<u8>>)> {
        let mut stmt = conn.prepare("SELECT id, name, n, extra FROM t ORDER BY rowid").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap().map(Result::unwrap).collect()
    }

    /// Values bound in place read back as bound, each execute with its own, even when the
    /// buffer they were borrowed from is overwritten between executes.
    #[test]
    fn values_bound_in_place_are_stored_as_bound() {
        let conn = table();
        // SAFETY (of the test): the statement is dropped before `conn`, at the end of scope.
        #[allow(unsafe_code)]
        let mut stmt = unsafe {
            StaticStatement::prepare(
                &conn,
                "INSERT INTO t (id, name, n, extra) VALUES (?1, ?2, ?3, ?4), (?5, ?6, ?7, ?8)",
            )
        }
        .unwrap();
        let mut buffer = [[1u8; 16], [2u8; 16]];
        let n = stmt
            .execute(&[
                Bind::Blob(&buffer[0]),
                Bind::Text("one"),
                Bind::Int(i64::MAX),
                Bind::Null,
                Bind::Blob(&buffer[1]),
                Bind::Text(""),
                Bind::Int(-1),
                Bind::Blob(&[]),
            ])
            .unwrap();
        assert_eq!(n, 2);
        buffer = [[3u8; 16], [4u8; 16]];
        stmt.execute(&[
            Bind::Blob(&buffer[0]),
            Bind::Null,
            Bind::Null,
            Bind::Blob(&buffer[1][..3]),
            Bind::Blob(&buffer[1]),
            Bind::Text("four"),
            Bind::Int(0),
            Bind::Null,
        ])
        .unwrap();
        drop(stmt);
        assert_eq!(
            rows(&conn),
            vec![
                (vec![1; 16], Some("one".into()), Some(i64::MAX), None),
                (vec![2; 16], Some(String::new()), Some(-1), Some(Vec::new())),
                (vec![3; 16], None, None, Some(vec![4; 3])),
                (vec![4; 16], Some("four".into()), Some(0), None),
            ]
        );
    }

    /// A failed step is SQLite's error as rusqlite reports it (a unique violation is the
    /// store's `Conflict`), inserts nothing of its statement, and leaves the statement usable.
    #[test]
    fn a_failed_step_is_sqlites_error_and_the_statement_goes_on() {
        let conn = table();
        #[allow(unsafe_code)]
        // SAFETY (of the test): the statement is dropped before `conn`.
        let mut stmt = unsafe { StaticStatement::prepare(&conn, "INSERT INTO t (id) VALUES (?1), (?2)") }.unwrap();
        let error = stmt.execute(&[Bind::Blob(&[7; 16]), Bind::Blob(&[7; 16])]).unwrap_err();
        assert!(matches!(StoreError::from(error), StoreError::Conflict(m) if m.contains("UNIQUE")));
        assert!(rows(&conn).is_empty(), "the statement's first row is not kept");
        assert!(matches!(stmt.execute(&[Bind::Blob(&[7; 16])]), Err(rusqlite::Error::InvalidParameterCount(1, 2))));
        stmt.execute(&[Bind::Blob(&[7; 16]), Bind::Blob(&[8; 16])]).unwrap();
        drop(stmt);
        assert_eq!(rows(&conn).len(), 2);
    }

    #[test]
    fn a_statement_that_does_not_prepare_is_sqlites_error() {
        let conn = table();
        #[allow(unsafe_code)]
        // SAFETY (of the test): nothing is prepared.
        let error = unsafe { StaticStatement::prepare(&conn, "INSERT INTO missing VALUES (?1)") }.err().unwrap();
        assert!(error.to_string().contains("no such table: missing"), "{error}");
    }
}
