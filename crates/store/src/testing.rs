//! Throwaway PostgreSQL databases for tests, here and in the crates above (which name no
//! PostgreSQL type: they get a URL).
//!
//! [`TestDatabase::create`] makes a database with a unique name on the test server
//! (`PAYCORE_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432`, user `postgres`,
//! trust auth) and drops it when dropped, also when the test fails. When the server cannot be
//! reached it prints a loud `SKIPPED:` line and returns `None`, so that the test passes on a
//! machine without PostgreSQL, except under `CI=true`, where it panics: CI must run them.

#![allow(clippy::panic)]

use postgres::{Client, NoTls};
use std::sync::atomic::{AtomicU64, Ordering};

/// The server the tests use unless `PAYCORE_TEST_POSTGRES` names another.
pub const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// A database that lives as long as this value.
pub struct TestDatabase {
    server: String,
    name: String,
    url: String,
}

fn server() -> String {
    std::env::var("PAYCORE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_SERVER.to_owned())
}

/// A connection to the server's `postgres` database, to create and drop databases.
fn maintenance(server: &str) -> Result<Client, postgres::Error> {
    Client::connect(&format!("{server}/postgres?connect_timeout=5"), NoTls)
}

impl TestDatabase {
    /// A new, empty database for `test`, or `None` (after a `SKIPPED:` line) when no
    /// PostgreSQL server can be reached and `CI` is not `true`.
    pub fn create(test: &str) -> Option<TestDatabase> {
        let server = server();
        let mut client = match maintenance(&server) {
            Ok(client) => client,
            Err(error) => {
                let why = match std::error::Error::source(&error) {
                    Some(source) => format!("{error}: {source}"),
                    None => error.to_string(),
                };
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("{test}: PostgreSQL at {server} is required under CI=true: {why}");
                }
                eprintln!("\nSKIPPED: {test}: no PostgreSQL at {server} ({why})\n");
                return None;
            }
        };
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let name = format!("paycore_test_{}_{nanos}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        if let Err(error) = client.batch_execute(&format!("CREATE DATABASE {name}")) {
            panic!("{test}: cannot create the test database {name}: {error:?}");
        }
        let url = format!("{server}/{name}");
        Some(TestDatabase { server, name, url })
    }

    /// The database's URL, as `paycore_store::open` takes it.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// Takes the next fencing epoch of `partition` at `url` from a connection of its own, as a
/// newer leader would: the current leader's next commit is then `Fenced`.
pub fn fence(url: &str, partition: u32) {
    let partition = i32::try_from(partition).unwrap_or(i32::MAX);
    let fenced = Client::connect(url, NoTls)
        .and_then(|mut client| client.execute("UPDATE partitions SET epoch = epoch + 1 WHERE id = $1", &[&partition]));
    match fenced {
        Ok(1) => {}
        Ok(rows) => panic!("fencing partition {partition} updated {rows} rows"),
        Err(error) => panic!("cannot fence partition {partition}: {error:?}"),
    }
}

impl Drop for TestDatabase {
    /// Drops the database, closing whatever connections the test left open.
    fn drop(&mut self) {
        let dropped = maintenance(&self.server).and_then(|mut client| {
            client.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
        });
        if let Err(error) = dropped {
            eprintln!("could not drop the test database {}: {error:?}", self.name);
        }
    }
}
