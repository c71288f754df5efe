//! Throwaway PostgreSQL databases for tests, here and in the crates above (which name no
//! PostgreSQL type: they get a URL), and [`step`], one engine batch without the engine.
//!
//! [`TestDatabase::create`] makes a database with a unique name on the test server
//! (`PAYCORE_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432`, user `postgres`,
//! trust auth) and drops it when dropped, also when the test fails. When the server cannot be
//! reached it prints a loud `SKIPPED:` line and returns `None`, so that the test passes on a
//! machine without PostgreSQL, except under `CI=true`, where it panics: CI must run them.

#![allow(clippy::panic)]

use crate::Store;
use paycore_ledger::{AccountId, Command, Outcome, Request, State, TenantId, Transfer, TransferId};
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

/// A small filesystem of its own (a `tmpfs` of a few MiB mounted on a fresh folder), for tests
/// of a full disk: [`SmallDisk::fill`] fills it until `ENOSPC`, [`SmallDisk::free`] gives the
/// room back. Unmounted and removed when dropped, also when the test fails.
///
/// Mounting needs root (CI runs as root). Without it [`SmallDisk::mount`] prints a loud
/// `SKIPPED:` line and returns `None`, except under `CI=true`, where it panics.
pub struct SmallDisk {
    path: std::path::PathBuf,
    filler: std::path::PathBuf,
}

impl SmallDisk {
    /// A `tmpfs` of `size_kib` KiB on a new folder for `test`, or `None` (after a `SKIPPED:`
    /// line) when it cannot be mounted and `CI` is not `true`.
    pub fn mount(test: &str, size_kib: u64) -> Option<SmallDisk> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "paycore_small_disk_{}_{nanos}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        if let Err(error) = std::fs::create_dir(&path) {
            panic!("{test}: cannot create {}: {error}", path.display());
        }
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_kib}k,mode=0700"), "tmpfs"])
            .arg(&path)
            .output();
        let why = match mounted {
            Ok(output) if output.status.success() => None,
            Ok(output) => Some(String::from_utf8_lossy(&output.stderr).trim().to_owned()),
            Err(error) => Some(error.to_string()),
        };
        if let Some(why) = why {
            let _ = std::fs::remove_dir(&path);
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: a tmpfs must be mountable under CI=true (run as root): {why}");
            }
            eprintln!("\nSKIPPED: {test}: cannot mount a tmpfs (needs root): {why}\n");
            return None;
        }
        let filler = path.join("filler");
        Some(SmallDisk { path, filler })
    }

    /// The mounted folder.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Writes a filler file until the filesystem has no room left (`ENOSPC`); returns its size.
    pub fn fill(&self) -> u64 {
        use std::io::Write;
        let mut file = match std::fs::OpenOptions::new().create(true).append(true).open(&self.filler) {
            Ok(file) => file,
            Err(error) => panic!("cannot create the filler {}: {error}", self.filler.display()),
        };
        let block = vec![0x5a_u8; 4096];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::StorageFull => break,
                Err(error) => panic!("filling {}: {error}", self.path.display()),
            }
        }
        // The last partial block, byte by byte.
        while matches!(file.write(&block[..1]), Ok(1)) {}
        std::fs::metadata(&self.filler).map_or(0, |m| m.len())
    }

    /// Whether the filesystem has no room for one more block.
    pub fn is_full(&self) -> bool {
        use std::io::Write;
        let probe = self.path.join("probe");
        let room = std::fs::File::create(&probe).and_then(|mut f| f.write_all(&[0; 4096]).and_then(|()| f.sync_all()));
        let _ = std::fs::remove_file(&probe);
        room.is_err()
    }

    /// Removes the filler: the room it took is free again.
    pub fn free(&self) {
        if let Err(error) = std::fs::remove_file(&self.filler) {
            panic!("cannot remove the filler {}: {error}", self.filler.display());
        }
    }
}

impl Drop for SmallDisk {
    /// Unmounts (lazily when a process still has a file open there) and removes the folder.
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount").arg(&self.path).status().is_ok_and(|s| s.success())
            || std::process::Command::new("umount").arg("-l").arg(&self.path).status().is_ok_and(|s| s.success());
        if !unmounted {
            eprintln!("could not unmount the small disk {}", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Executes `commands` for `tenant` as one batch, as the engine does (prefetch, load what is
/// not in memory, execute, take the changes), and commits them: the outcomes, and the commit's
/// result. For tests of a store without the engine's thread and queue.
///
/// # Panics
/// When the load fails: tests set up what they load.
#[allow(clippy::expect_used)]
pub fn step(
    state: &mut State,
    store: &mut dyn Store,
    tenant: TenantId,
    now: u64,
    commands: Vec<Command>,
) -> (Vec<Outcome>, crate::Result<()>) {
    let requests: Vec<Request> = commands.into_iter().map(|command| Request { tenant, command }).collect();
    let loaded = store.load(&state.prefetch(&requests)).expect("the batch's load");
    state.insert_prefetched(loaded.transfers, loaded.holds, loaded.payments);
    state.insert_prefetched_quotes(loaded.quotes);
    state.insert_debit_history(loaded.debits);
    state.insert_clearing(loaded.open_windows, loaded.window_ids);
    let outcomes = state.execute(&requests, now);
    (outcomes, store.commit(&state.take_changes(), &[]))
}

/// Every page of `account`'s history, newest first, `page_size` transfers a page.
pub fn history(tenant: TenantId, reader: &dyn crate::Reader, account: u128, page_size: usize) -> Vec<TransferId> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = reader
            .account_transfers(tenant, AccountId(account), crate::Page { after, limit: page_size })
            .unwrap_or_else(|e| panic!("listing account {account}: {e}"));
        all.extend(page.iter().map(|t| t.id));
        match page.last() {
            Some(last) if page.len() == page_size => after = Some(last.id),
            _ => return all,
        }
    }
}

/// Every page of `account`'s history in `timestamps`, oldest first.
pub fn history_between(
    tenant: TenantId,
    reader: &dyn crate::Reader,
    account: u128,
    timestamps: std::ops::Range<u64>,
    page_size: usize,
) -> Vec<Transfer> {
    let mut all = Vec::new();
    let mut from = timestamps.start;
    loop {
        let page = reader
            .account_transfers_between(tenant, AccountId(account), from..timestamps.end, page_size)
            .unwrap_or_else(|e| panic!("listing account {account} between: {e}"));
        let full = page.len() == page_size;
        match page.last() {
            Some(last) => from = last.timestamp + 1,
            None => return all,
        }
        all.extend(page);
        if !full {
            return all;
        }
    }
}

/// Checks every listing of the accounts `accounts` against `committed` (id, debit account,
/// credit account, in commit order): newest first in pages of `page_size`, oldest first, and a
/// range inside each history (its start included, its end not).
pub fn assert_histories(
    tenant: TenantId,
    reader: &dyn crate::Reader,
    committed: &[(u128, u128, u128)],
    accounts: std::ops::RangeInclusive<u128>,
    page_size: usize,
) {
    for account in accounts {
        let expected: Vec<TransferId> =
            committed.iter().rev().filter(|t| t.1 == account || t.2 == account).map(|t| TransferId(t.0)).collect();
        assert_eq!(history(tenant, reader, account, page_size), expected, "account {account}, pages of {page_size}");
        let oldest_first = history_between(tenant, reader, account, 0..u64::MAX, page_size);
        let ids: Vec<TransferId> = oldest_first.iter().map(|t| t.id).collect();
        assert_eq!(ids, expected.iter().rev().copied().collect::<Vec<_>>(), "account {account} oldest first");
        if oldest_first.len() > 3 {
            let (a, b) = (1, oldest_first.len() - 1);
            let range = oldest_first[a].timestamp..oldest_first[b].timestamp;
            assert_eq!(history_between(tenant, reader, account, range, page_size), oldest_first[a..b].to_vec());
        }
    }
}

/// The transfers of the history tests: each batch seven moves (id, debit account, credit
/// account) between accounts 1 to 5, drawn from a fixed seed.
pub struct HistoryMoves {
    seed: u64,
}

impl HistoryMoves {
    pub fn new(seed: u64) -> HistoryMoves {
        HistoryMoves { seed }
    }

    fn next(&mut self, n: u64) -> u64 {
        self.seed = self.seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.seed >> 33) % n
    }

    /// Batch `batch`'s moves, ids `1000 + 10 * batch + i`.
    pub fn batch(&mut self, batch: u128) -> Vec<(u128, u128, u128)> {
        (0..7u128)
            .map(|i| {
                let debit = 1 + u128::from(self.next(5));
                let credit = 1 + (debit + u128::from(self.next(4))) % 5;
                (1000 + batch * 10 + i, debit, credit)
            })
            .collect()
    }
}
