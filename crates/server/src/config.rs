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
    /// Webhooks may go to loopback, private, link-local and other non-public addresses
    /// (`--webhook-allow-private`); off, such endpoints are refused at registration and at
    /// every connection (SSRF).
    pub webhook_allow_private: bool,
    /// A PEM file of CA certificates that webhook receivers' certificates may chain to, beside
    /// the web PKI roots (`--webhook-ca`): a private CA.
    pub webhook_ca: Option<PathBuf>,
    /// What resolves webhook hosts: the system's resolver unless a test sets another.
    pub webhook_resolver: crate::ssrf::WebhookResolver,
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
    /// How long saved idempotent responses, the webhook delivery log and uploaded batch and
    /// report files are kept (`--idempotency-retention`, `--delivery-retention`,
    /// `--file-retention`); see `retention`.
    pub retention: paycore_store::Retention,
    /// How often the pruner runs a round.
    pub retention_interval: std::time::Duration,
    /// Between two requests, a connection that sends nothing for this long is closed.
    pub keep_alive_timeout: std::time::Duration,
    /// A request head (or a TLS handshake) begun must be complete within this.
    pub header_read_timeout: std::time::Duration,
    /// A request body must arrive in full within this of its head; else 408
    /// `request_body_timeout`, and nothing of it is kept.
    pub body_read_timeout: std::time::Duration,
    /// The most connections open at once; more are answered 503 `too_many_connections` and
    /// closed. Keep it under the process's file-descriptor limit (`ulimit -n`), with room for
    /// the store's files and connections.
    pub max_connections: usize,
    /// The most connections open at once from one client address.
    pub max_connections_per_ip: usize,
    /// On SIGTERM, how long requests in flight have to finish before their connections are
    /// dropped; the engine then answers what it took, commits and stops.
    pub shutdown_timeout: std::time::Duration,
    /// Serve the API over TLS: the PEM files of the certificate chain and of its key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Batch files validated at once; more wait (their batches stay `validating`).
    pub max_concurrent_validations: usize,
    /// Batch uploads that may wait for a validation at once (those being taken in included);
    /// one more is refused at once, 503 `validation_queue_full`, and nothing of it is kept.
    pub max_queued_validations: usize,
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
    /// The default pause between two rounds of the pruner: a minute.
    pub const RETENTION_INTERVAL_DEFAULT: std::time::Duration = std::time::Duration::from_secs(60);

    /// The default idle keep-alive timeout: 60 seconds.
    pub const KEEP_ALIVE_TIMEOUT_DEFAULT: std::time::Duration = std::time::Duration::from_secs(60);
    /// The default header read timeout: 10 seconds.
    pub const HEADER_READ_TIMEOUT_DEFAULT: std::time::Duration = std::time::Duration::from_secs(10);
    /// The default body read timeout: 5 minutes (a 1 GiB file at about 4 MB/s).
    pub const BODY_READ_TIMEOUT_DEFAULT: std::time::Duration = std::time::Duration::from_secs(300);
    /// The default most open connections: 800, under the common limit of 1 024 descriptors.
    pub const MAX_CONNECTIONS_DEFAULT: usize = 800;
    /// The default most open connections from one address: as many as in all (behind a proxy
    /// every client is one address). Set it lower when clients connect directly.
    pub const MAX_CONNECTIONS_PER_IP_DEFAULT: usize = 800;
    /// The default drain time on SIGTERM: 30 seconds.
    pub const SHUTDOWN_TIMEOUT_DEFAULT: std::time::Duration = std::time::Duration::from_secs(30);
    /// The default batch files validated at once: 2 (each keeps a core busy).
    pub const MAX_CONCURRENT_VALIDATIONS_DEFAULT: usize = 2;
    /// The default batch uploads waiting for a validation at once: 16.
    pub const MAX_QUEUED_VALIDATIONS_DEFAULT: usize = 16;

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
            webhook_allow_private: false,
            webhook_ca: None,
            webhook_resolver: crate::ssrf::WebhookResolver::default(),
            store_connections_max: paycore_store::READER_CONNECTIONS_DEFAULT,
            node_id: format!("node-{:016x}", rand::random::<u64>()),
            batch_lease: Config::BATCH_LEASE_DEFAULT,
            role: crate::Role::All,
            cluster: None,
            clock: ServiceClock::default(),
            retention: paycore_store::Retention::default(),
            retention_interval: Config::RETENTION_INTERVAL_DEFAULT,
            keep_alive_timeout: Config::KEEP_ALIVE_TIMEOUT_DEFAULT,
            header_read_timeout: Config::HEADER_READ_TIMEOUT_DEFAULT,
            body_read_timeout: Config::BODY_READ_TIMEOUT_DEFAULT,
            max_connections: Config::MAX_CONNECTIONS_DEFAULT,
            max_connections_per_ip: Config::MAX_CONNECTIONS_PER_IP_DEFAULT,
            shutdown_timeout: Config::SHUTDOWN_TIMEOUT_DEFAULT,
            tls: None,
            max_concurrent_validations: Config::MAX_CONCURRENT_VALIDATIONS_DEFAULT,
            max_queued_validations: Config::MAX_QUEUED_VALIDATIONS_DEFAULT,
            console_secret: None,
            console_secure_cookies: false,
        }
    }
}

/// A retention window as the command line gives it: a whole number and a unit, `s`, `m`, `h`
/// or `d` (`90s`, `24h`, `30d`); more than zero.
pub fn parse_window(text: &str) -> Result<std::time::Duration, String> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let seconds = match &text[digits.len()..] {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: give a number and a unit, s, m, h or d (e.g. 24h, 30d)")),
    };
    let n: u64 = digits.parse().map_err(|_| format!("{text:?}: {digits:?} is not a whole number"))?;
    if n == 0 {
        return Err(format!("{text:?}: a retention window is more than zero"));
    }
    n.checked_mul(seconds).map(std::time::Duration::from_secs).ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::parse_window;
    use std::time::Duration;

    #[test]
    fn windows_are_a_number_and_a_unit() {
        assert_eq!(parse_window("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_window("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_window("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_window("5m"), Ok(Duration::from_secs(300)));
        for bad in ["", "24", "h", "0h", "1.5h", "-1d", "24 h", "3w", "99999999999999999999d", "18446744073709551615d"]
        {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }
}
