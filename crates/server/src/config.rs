//! The server's configuration.

use crate::auth::Secret;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Everything `run` needs. Build it with [`Config::new`] and adjust the public fields.
#[derive(Clone, Debug)]
pub struct Config {
    /// The data folder: the embedded store (unless `store` names another) and, on first
    /// start, the `api-key` file.
    pub data_dir: PathBuf,
    /// The store of record when it is not the embedded one in `data_dir`: a PostgreSQL
    /// database's `postgres://` URL. Uploaded batch files then live in it too, and reports are
    /// written on request from it, so `data_dir` holds only the first API key's file.
    pub store: Option<String>,
    /// Where to listen; port 0 picks a free port (printed on stdout).
    pub listen: SocketAddr,
    /// Requests with a larger body are refused with 413.
    pub max_body_bytes: usize,
    /// Batch files larger than this are refused with 413 `file_too_large`.
    pub max_batch_bytes: u64,
    /// Requests waiting for the engine beyond this are refused with 503 and `Retry-After`.
    pub queue_capacity: usize,
    /// Batch files with more items (lines) than this are rejected with `too_many_lines`.
    pub max_batch_lines: u64,
    /// Requests per second per API key (token bucket refill); 0 turns rate limiting off.
    pub rate_limit_per_second: u32,
    /// The bucket size: requests a key may send at once after being idle.
    pub rate_limit_burst: u32,
    /// The first API key, used only when the store has none (from `PAYCORE_API_KEY`).
    pub api_key: Option<Secret>,
    /// The wait before the first retry of a failed webhook delivery; it doubles per attempt
    /// up to an hour.
    pub webhook_retry_min: std::time::Duration,
    /// The most store connections the API's reads and writes hold at once (the engine has its
    /// own); a request that finds them all in use waits for one.
    pub store_connections_max: usize,
    /// This node's name in the leases of the batch jobs it runs (`lease_owner`); unique per
    /// running process. Default: `node-` and 16 random hex digits, new per `Config::new`.
    pub node_id: String,
    /// How long a batch job's lease lasts unless renewed (every third of it, while the job
    /// runs): after a node dies, another takes its batches over this long after its last
    /// renewal.
    pub batch_lease: std::time::Duration,
    /// What this process does; `All` unless in cluster mode.
    pub role: crate::Role,
    /// Cluster mode: the queue between API nodes and engines (with `store`, PostgreSQL).
    pub cluster: Option<crate::Cluster>,
    /// The clock of this process's engine (one process: not cluster mode's engines) and of
    /// what "today" is for interest runs. The system clock unless a test or a simulation sets
    /// one ([`ManualClock`]).
    pub clock: ServiceClock,
    /// The key that signs the operator console's session cookies (`PAYCORE_CONSOLE_SECRET`):
    /// the same on every API node, so that any of them accepts a session. Without it each
    /// process signs with a random key of its own, and sessions end when it stops.
    pub console_secret: Option<Secret>,
    /// Marks the console's cookies `Secure` always (TLS is in front of the server); without
    /// it, only requests with `X-Forwarded-Proto: https` get `Secure` cookies.
    pub console_secure_cookies: bool,
}

/// A clock for [`Config::clock`].
#[derive(Clone)]
pub struct ServiceClock(pub Arc<dyn paycore_engine::Clock>);

impl std::fmt::Debug for ServiceClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceClock")
    }
}

impl Default for ServiceClock {
    fn default() -> ServiceClock {
        ServiceClock(Arc::new(paycore_engine::SystemClock))
    }
}

/// A clock that says what it is told (nanoseconds since the Unix epoch), for tests that need
/// days to pass (interest). It never goes back: `set` to an earlier time is ignored.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(now_ns: u64) -> ManualClock {
        ManualClock(AtomicU64::new(now_ns))
    }

    pub fn set(&self, now_ns: u64) {
        self.0.fetch_max(now_ns, Ordering::SeqCst);
    }
}

impl paycore_engine::Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl Config {
    /// The default body size limit: 4 MiB, enough for a bulk request of 8 190 transfers.
    pub const MAX_BODY_BYTES_DEFAULT: usize = 4 * 1024 * 1024;
    /// The default largest batch file: 1 GiB.
    pub const MAX_BATCH_BYTES_DEFAULT: u64 = 1024 * 1024 * 1024;
    /// The default capacity of the engine's queue, in requests.
    pub const QUEUE_CAPACITY_DEFAULT: usize = 16 * 1024;
    /// The default most items of a batch file: 1 000 000.
    pub const MAX_BATCH_LINES_DEFAULT: u64 = 1_000_000;
    /// The default requests per second per key: 1 000 (burst 2 000).
    pub const RATE_LIMIT_PER_SECOND_DEFAULT: u32 = 1000;
    /// The default first webhook retry wait: 1 second.
    pub const WEBHOOK_RETRY_MIN_DEFAULT: std::time::Duration = std::time::Duration::from_secs(1);
    /// The default batch lease: 15 seconds.
    pub const BATCH_LEASE_DEFAULT: std::time::Duration = std::time::Duration::from_secs(15);

    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Config {
        Config {
            data_dir,
            store: None,
            listen,
            max_body_bytes: Config::MAX_BODY_BYTES_DEFAULT,
            max_batch_bytes: Config::MAX_BATCH_BYTES_DEFAULT,
            queue_capacity: Config::QUEUE_CAPACITY_DEFAULT,
            max_batch_lines: Config::MAX_BATCH_LINES_DEFAULT,
            rate_limit_per_second: Config::RATE_LIMIT_PER_SECOND_DEFAULT,
            rate_limit_burst: 2 * Config::RATE_LIMIT_PER_SECOND_DEFAULT,
            api_key: None,
            webhook_retry_min: Config::WEBHOOK_RETRY_MIN_DEFAULT,
            store_connections_max: paycore_store::READER_CONNECTIONS_DEFAULT,
            node_id: format!("node-{:016x}", rand::random::<u64>()),
            batch_lease: Config::BATCH_LEASE_DEFAULT,
            role: crate::Role::All,
            cluster: None,
            clock: ServiceClock::default(),
            console_secret: None,
            console_secure_cookies: false,
        }
    }
}
