//! The `paycore` binary: flag parsing and glue only. The service lives in `paycore-server`.

mod batch;
mod config;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Every allocation of the process's Rust code (the HTTP path, the engine, the batch parsers)
/// goes to jemalloc: glibc's malloc was about a quarter of a cluster API node's CPU, and
/// jemalloc took a third off it without raising peak RSS, where mimalloc doubled the 1M-line
/// CSV's (crates/bench/NOTES.md, "Global allocator (session 11)"). SQLite's own allocations
/// stay on the C library's malloc.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "paycore", version, about = "A double-entry ledger and payment platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The log lines' format on stderr: `text` (one line each, `request_id=…` last) or `json`
    /// (one JSON object a line, with a `request_id` field while a request is served).
    #[arg(long = "log-format", env = "PAYCORE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Which log lines to write: a tracing filter (`info`, `paycore_server=debug,info`).
    #[arg(long = "log-filter", env = "RUST_LOG", default_value = "info", global = true)]
    log_filter: String,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

// Parsed once per process: the size of the `serve` flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Starts the service: the ledger engine and the HTTP API.
    Serve(ServeArgs),
    /// Batch payments on a running server: submit a file, follow it, fetch its report.
    #[command(subcommand)]
    Batch(batch::BatchCommand),
    /// Checks a store offline: balances against transfers, zero sums per currency,
    /// payments and batch items against their transfers. Exit status 0 when all hold.
    /// The configuration: what `serve` would use, and the table of every setting.
    #[command(subcommand)]
    Config(ConfigCommand),
    Verify {
        /// The data folder, or the PostgreSQL database's `postgres://` URL; when given, it wins
        /// over `--store`.
        #[arg(value_name = "DATA_DIR|URL", required_unless_present = "store")]
        data: Option<PathBuf>,
        /// The PostgreSQL database's `postgres://` URL (as `serve --store` takes it).
        #[arg(long = "store", env = "PAYCORE_STORE", value_name = "URL")]
        store: Option<String>,
    },
    /// Backs a data folder up into one file while `paycore serve` runs on it (it needs no
    /// lock): the database as of one commit, and the uploaded batch files. For PostgreSQL,
    /// use pg_dump or PITR (README, "Backup and restore").
    Backup {
        /// The data folder to back up.
        #[arg(long = "data", env = "PAYCORE_DATA", default_value = "./paycore-data")]
        data: PathBuf,
        /// The backup file to write; it must not exist.
        #[arg(long = "to", value_name = "FILE")]
        to: PathBuf,
    },
    /// Restores a backup file into a new data folder (refused if the folder is not empty),
    /// then checks it as `paycore verify` does. Exit status 0 when every invariant holds.
    Restore {
        /// The backup file (from `paycore backup`).
        #[arg(value_name = "FILE")]
        from: PathBuf,
        /// The new data folder.
        #[arg(long = "data", value_name = "NEWDIR")]
        data: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Prints every setting `serve` would use with these flags, environment and file, and
    /// where each value came from (flag, env, file and line, default); exit status 1 when
    /// `serve` would refuse them.
    Check(Box<ServeArgs>),
    /// Prints the Markdown table of every setting: key, flag, environment variable, default.
    Table,
}

/// The settings of `serve`. Each has a key in the configuration file, its long flag name
/// (`config.rs`).
#[derive(clap::Args)]
struct ServeArgs {
    /// The configuration file (TOML; its keys are these flags' long names). Read only when
    /// given: flags win over the environment, which wins over the file.
    #[arg(long = "config", env = "PAYCORE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The data folder: the embedded store's database and the first API key's file (only the
    /// key's file with `--store`).
    #[arg(long = "data", env = "PAYCORE_DATA", default_value = "./paycore-data")]
    data: PathBuf,
    /// The store of record, when not the embedded one in `--data`: a PostgreSQL database's
    /// `postgres://` URL. Uploaded batch files are kept in it too.
    #[arg(long = "store", env = "PAYCORE_STORE", value_name = "URL")]
    store: Option<String>,
    /// The address to listen on; port 0 picks a free port.
    #[arg(long = "listen", env = "PAYCORE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The largest request body accepted, in bytes.
    #[arg(long = "max-body-bytes", env = "PAYCORE_MAX_BODY_BYTES", default_value_t = paycore_server::Config::MAX_BODY_BYTES_DEFAULT)]
    max_body_bytes: usize,
    /// The largest batch file accepted, in bytes.
    #[arg(long = "max-batch-bytes", env = "PAYCORE_MAX_BATCH_BYTES", default_value_t = paycore_server::Config::MAX_BATCH_BYTES_DEFAULT)]
    max_batch_bytes: u64,
    /// Requests that may wait for the engine before new ones get 503.
    #[arg(long = "queue-capacity", env = "PAYCORE_QUEUE_CAPACITY", default_value_t = paycore_server::Config::QUEUE_CAPACITY_DEFAULT)]
    queue_capacity: usize,
    /// The most items (lines) a batch file may have; more is rejected with `too_many_lines`.
    #[arg(long = "max-batch-lines", env = "PAYCORE_MAX_BATCH_LINES", default_value_t = paycore_server::Config::MAX_BATCH_LINES_DEFAULT)]
    max_batch_lines: u64,
    /// Requests per second per API key; 0 turns rate limiting off.
    #[arg(long = "rate-limit-per-second", env = "PAYCORE_RATE_LIMIT_PER_SECOND", default_value_t = paycore_server::Config::RATE_LIMIT_PER_SECOND_DEFAULT)]
    rate_limit_per_second: u32,
    /// Requests a key may send at once after being idle; default twice the rate.
    #[arg(long = "rate-limit-burst", env = "PAYCORE_RATE_LIMIT_BURST")]
    rate_limit_burst: Option<u32>,
    /// Marks the operator console's cookies `Secure` on every request (TLS in front of the
    /// server); without it only requests with `X-Forwarded-Proto: https` get them.
    #[arg(long = "console-secure-cookies", env = "PAYCORE_CONSOLE_SECURE_COOKIES")]
    console_secure_cookies: bool,
    /// The key that signs the console's session cookies, the same on every API node so that
    /// any of them accepts a session (default: a random key per process; sessions end with it).
    #[arg(long = "console-secret", env = "PAYCORE_CONSOLE_SECRET", hide_env_values = true, value_name = "SECRET")]
    console_secret: Option<String>,
    /// Threads serving HTTP; default one per core but one, which the engine's thread has to
    /// itself (at least one).
    #[arg(long = "http-threads", env = "PAYCORE_HTTP_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    http_threads: Option<u16>,
    /// The most store connections the API's requests hold at once (the engine has its own); a
    /// request that finds them all in use waits for one.
    #[arg(long = "store-connections", env = "PAYCORE_STORE_CONNECTIONS", default_value_t = paycore_store::READER_CONNECTIONS_DEFAULT)]
    store_connections: usize,
    /// Cluster mode: what this process does. `api` serves the HTTP API and submits through the
    /// queue; `engine` leads (or stands by for) the partitions and serves only /healthz and
    /// /metrics; `all` does both (without --queue: the single process of the embedded default).
    #[arg(long = "role", env = "PAYCORE_ROLE", value_enum, default_value_t = RoleArg::All)]
    role: RoleArg,
    /// Cluster mode: the NATS JetStream server(s) between API nodes and engines
    /// (`nats://host:4222`); needs --store.
    #[arg(long = "queue", env = "PAYCORE_QUEUE", value_name = "URL")]
    queue: Option<String>,
    /// Cluster mode: the name of the stream (upper-cased) and of its subjects' prefix.
    #[arg(long = "queue-name", env = "PAYCORE_QUEUE_NAME", default_value = paycore_server::QueueConfig::NAME_DEFAULT)]
    queue_name: String,
    /// Cluster mode: the tenant partition count, fixed when the cluster is created (default:
    /// the one recorded; for a new cluster, 1 on an engine, while an API node waits for an
    /// engine to record it).
    #[arg(long = "partitions", env = "PAYCORE_PARTITIONS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    partitions: Option<u32>,
    /// Cluster mode: the partitions this process's engines try to lead first (comma-separated);
    /// the others only when they stay without a leader, and those go back to an engine that
    /// names them once it stands by. Default: all.
    #[arg(long = "prefer-partitions", env = "PAYCORE_PREFER_PARTITIONS", value_delimiter = ',')]
    prefer_partitions: Vec<u32>,
    /// Cluster mode: seconds an API node waits for the engine's answer before answering with
    /// what the store holds.
    #[arg(long = "reply-timeout", env = "PAYCORE_REPLY_TIMEOUT", default_value_t = 10)]
    reply_timeout: u64,
    /// This process's name in batch leases (default: a random one per start).
    #[arg(long = "node-id", env = "PAYCORE_NODE_ID")]
    node_id: Option<String>,
    /// How long a response saved for an Idempotency-Key is kept (e.g. 24h); a retry after it
    /// is a new request.
    #[arg(long = "idempotency-retention", env = "PAYCORE_IDEMPOTENCY_RETENTION", default_value = "24h", value_parser = paycore_server::parse_window)]
    idempotency_retention: std::time::Duration,
    /// How long finished webhook deliveries and their outbox events are kept (e.g. 30d).
    #[arg(long = "delivery-retention", env = "PAYCORE_DELIVERY_RETENTION", default_value = "30d", value_parser = paycore_server::parse_window)]
    delivery_retention: std::time::Duration,
    /// How long the uploaded files of ended batches, and report files, are kept (e.g. 30d);
    /// the batch and its items stay, and reports are written again from the items.
    #[arg(long = "file-retention", env = "PAYCORE_FILE_RETENTION", default_value = "30d", value_parser = paycore_server::parse_window)]
    file_retention: std::time::Duration,
    /// The first API key, stored only when the store has none (default: a new key written to
    /// `<data>/api-key`). Prefer the environment or the file: a flag shows in `ps`.
    #[arg(long = "api-key", env = "PAYCORE_API_KEY", hide_env_values = true, value_name = "KEY")]
    api_key: Option<String>,
    /// Let webhooks go to loopback, private, link-local and other non-public addresses
    /// (refused otherwise, at registration and at every connection: SSRF).
    #[arg(long = "webhook-allow-private", env = "PAYCORE_WEBHOOK_ALLOW_PRIVATE")]
    webhook_allow_private: bool,
    /// A PEM file of CA certificates webhook receivers may use, beside the web PKI roots.
    #[arg(long = "webhook-ca", env = "PAYCORE_WEBHOOK_CA", value_name = "FILE")]
    webhook_ca: Option<PathBuf>,
    /// Seconds a connection may send nothing between two requests before it is closed.
    #[arg(long = "keep-alive-timeout", env = "PAYCORE_KEEP_ALIVE_TIMEOUT", default_value_t = paycore_server::Config::KEEP_ALIVE_TIMEOUT_DEFAULT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    keep_alive_timeout: u64,
    /// Seconds a request head (or a TLS handshake) may take once begun.
    #[arg(long = "header-read-timeout", env = "PAYCORE_HEADER_READ_TIMEOUT", default_value_t = paycore_server::Config::HEADER_READ_TIMEOUT_DEFAULT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout: u64,
    /// Seconds a request body may take to arrive in full; then 408 `request_body_timeout`.
    #[arg(long = "body-read-timeout", env = "PAYCORE_BODY_READ_TIMEOUT", default_value_t = paycore_server::Config::BODY_READ_TIMEOUT_DEFAULT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    body_read_timeout: u64,
    /// The most connections open at once (keep it under `ulimit -n`); more get 503 and are closed.
    #[arg(long = "max-connections", env = "PAYCORE_MAX_CONNECTIONS", default_value_t = paycore_server::Config::MAX_CONNECTIONS_DEFAULT, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_connections: usize,
    /// The most connections open at once from one client address.
    #[arg(long = "max-connections-per-ip", env = "PAYCORE_MAX_CONNECTIONS_PER_IP", default_value_t = paycore_server::Config::MAX_CONNECTIONS_PER_IP_DEFAULT, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_connections_per_ip: usize,
    /// On SIGTERM, seconds requests in flight have to finish before their connections are dropped.
    #[arg(long = "shutdown-timeout", env = "PAYCORE_SHUTDOWN_TIMEOUT", default_value_t = paycore_server::Config::SHUTDOWN_TIMEOUT_DEFAULT.as_secs())]
    shutdown_timeout: u64,
    /// Serve the API over TLS with this PEM certificate chain (with --tls-key).
    #[arg(long = "tls-cert", env = "PAYCORE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long = "tls-key", env = "PAYCORE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Batch files validated at once; more wait, their batches `validating`.
    #[arg(long = "max-concurrent-validations", env = "PAYCORE_MAX_CONCURRENT_VALIDATIONS", default_value_t = paycore_server::Config::MAX_CONCURRENT_VALIDATIONS_DEFAULT, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    max_concurrent_validations: usize,
    /// Batch uploads that may wait for a validation at once; one more is refused, 503 `validation_queue_full`.
    #[arg(long = "max-queued-validations", env = "PAYCORE_MAX_QUEUED_VALIDATIONS", default_value_t = paycore_server::Config::MAX_QUEUED_VALIDATIONS_DEFAULT, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=4096))]
    max_queued_validations: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Api,
    Engine,
    All,
}

fn main() -> ExitCode {
    match try_main() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("paycore: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Exit status 2: the command ran, and its answer is "no" (a batch not fully paid, a data
/// folder that fails verification).
const EXIT_NOT_ALL_HOLDS: u8 = 2;

/// The subcommands that read the configuration file.
const CONFIGURED: [&[&str]; 2] = [&["serve"], &["config", "check"]];

fn try_main() -> anyhow::Result<ExitCode> {
    let (matches, resolved) = config::parse(Cli::command(), std::env::args_os().collect(), &CONFIGURED)?;
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_filter)
        .map_err(|error| anyhow::anyhow!("--log-filter (RUST_LOG) '{}': {error}", cli.log_filter))?;
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    match cli.log_format {
        // Every line written while a request is served ends with its `request_id=…`.
        LogFormat::Text => logs.event_format(paycore_server::WithRequestId(tracing_subscriber::fmt::format())).init(),
        LogFormat::Json => logs
            .event_format(paycore_server::WithRequestId(tracing_subscriber::fmt::format().json()))
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .init(),
    }
    match cli.command {
        Command::Serve(args) => serve(args).map(|()| ExitCode::SUCCESS),
        Command::Config(ConfigCommand::Check(args)) => {
            let mut command = Cli::command();
            command.build();
            let check = command
                .find_subcommand("config")
                .and_then(|config| config.find_subcommand("check"))
                .ok_or_else(|| anyhow::anyhow!("no `config check` command"))?;
            if let Some(resolved) = &resolved {
                print!("{}", config::report(check, resolved));
            }
            match server_config(*args) {
                Ok(_) => Ok(ExitCode::SUCCESS),
                Err(error) => {
                    println!("serve would refuse this configuration: {error:#}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Config(ConfigCommand::Table) => {
            let mut command = Cli::command();
            command.build();
            let serve = command.find_subcommand("serve").ok_or_else(|| anyhow::anyhow!("no `serve` command"))?;
            print!("{}", config::table(serve));
            Ok(ExitCode::SUCCESS)
        }
        Command::Batch(command) => Ok(match batch::run(command)? {
            batch::Finished::Ok => ExitCode::SUCCESS,
            batch::Finished::NotAllPaid => ExitCode::from(EXIT_NOT_ALL_HOLDS),
        }),
        Command::Verify { data, store } => match (data, store) {
            (Some(data), _) => verify(&data),
            (None, Some(url)) => verify(Path::new(&postgres_url(url)?)),
            (None, None) => anyhow::bail!("verify needs a data folder or --store URL"),
        },
        Command::Backup { data, to } => {
            let summary = paycore_store::backup::backup(&data, &to)?;
            println!(
                "backed up {} to {}: database {} bytes, {} batch file(s), {} bytes in all",
                data.display(),
                to.display(),
                summary.database_bytes,
                summary.files,
                summary.bytes
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore { from, data } => {
            let summary = paycore_store::backup::restore(&from, &data)?;
            println!(
                "restored {} into {}: database {} bytes, {} batch file(s)",
                from.display(),
                data.display(),
                summary.database_bytes,
                summary.files
            );
            verify(&data)
        }
    }
}

fn verify(data: &std::path::Path) -> anyhow::Result<ExitCode> {
    let store = paycore_store::open_for_verify(data)?;
    let report = paycore_store::verify::verify(store.as_ref())?;
    println!(
        "checked {} accounts, {} transfers, {} payments, {} batch items, {} clearing windows",
        report.accounts, report.transfers, report.payments, report.batch_items, report.clearing_windows
    );
    if report.ok() {
        println!("ok: every invariant holds");
        return Ok(ExitCode::SUCCESS);
    }
    for problem in &report.problems {
        println!("problem: {problem}");
    }
    println!("FAILED: {} problem(s)", report.problems.len());
    Ok(ExitCode::from(EXIT_NOT_ALL_HOLDS))
}

/// `url`, checked to name a PostgreSQL database.
fn postgres_url(url: String) -> anyhow::Result<String> {
    match paycore_store::Location::parse(Path::new(&url)) {
        paycore_store::Location::Postgres(_) => Ok(url),
        paycore_store::Location::Folder(_) => {
            anyhow::bail!("--store takes a postgres:// URL; the embedded store is the --data folder")
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (config, http_threads) = server_config(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(http_threads).enable_all().build()?;
    runtime.block_on(paycore_server::run(config))
}

/// The server's configuration from `serve`'s settings, and its HTTP thread count; refuses
/// combinations `serve` cannot run.
fn server_config(args: ServeArgs) -> anyhow::Result<(paycore_server::Config, usize)> {
    if matches!(paycore_store::Location::parse(&args.data), paycore_store::Location::Postgres(_)) {
        anyhow::bail!(
            "--data takes a folder; to serve from PostgreSQL, give its URL as --store postgres://… \
             (--data is then only where the first API key's file is written)"
        );
    }
    let store = args.store.map(postgres_url).transpose()?;
    let mut config = paycore_server::Config::new(args.data, args.listen);
    config.store = store;
    config.max_body_bytes = args.max_body_bytes;
    config.max_batch_bytes = args.max_batch_bytes;
    config.queue_capacity = args.queue_capacity;
    config.max_batch_lines = args.max_batch_lines;
    config.rate_limit_per_second = args.rate_limit_per_second;
    config.store_connections_max = args.store_connections;
    config.rate_limit_burst = args.rate_limit_burst.unwrap_or(args.rate_limit_per_second.saturating_mul(2));
    config.retention = paycore_store::Retention {
        idempotency: args.idempotency_retention,
        deliveries: args.delivery_retention,
        files: args.file_retention,
    };
    config.api_key = args.api_key.filter(|key| !key.is_empty()).map(paycore_server::Secret::new);
    config.keep_alive_timeout = std::time::Duration::from_secs(args.keep_alive_timeout);
    config.header_read_timeout = std::time::Duration::from_secs(args.header_read_timeout);
    config.body_read_timeout = std::time::Duration::from_secs(args.body_read_timeout);
    config.max_connections = args.max_connections;
    config.max_connections_per_ip = args.max_connections_per_ip;
    config.shutdown_timeout = std::time::Duration::from_secs(args.shutdown_timeout);
    config.tls = args.tls_cert.zip(args.tls_key);
    config.max_concurrent_validations = args.max_concurrent_validations;
    config.max_queued_validations = args.max_queued_validations;
    // Served over TLS, the console's cookies are always `Secure`.
    config.console_secure_cookies = args.console_secure_cookies || config.tls.is_some();
    config.console_secret = args.console_secret.filter(|secret| !secret.is_empty()).map(paycore_server::Secret::new);
    if let Some(node_id) = args.node_id {
        config.node_id = node_id;
    }
    config.webhook_allow_private = args.webhook_allow_private;
    config.webhook_ca = args.webhook_ca;
    config.role = match args.role {
        RoleArg::Api => paycore_server::Role::Api,
        RoleArg::Engine => paycore_server::Role::Engine,
        RoleArg::All => paycore_server::Role::All,
    };
    if let Some(url) = args.queue {
        if config.store.is_none() {
            anyhow::bail!("--queue (cluster mode) needs the PostgreSQL store: --store postgres://…");
        }
        let mut queue = paycore_server::QueueConfig::new(url, 1);
        queue.name = args.queue_name;
        queue.reply_timeout = std::time::Duration::from_secs(args.reply_timeout.max(1));
        config.cluster =
            Some(paycore_server::Cluster { queue, partitions: args.partitions, preferred: args.prefer_partitions });
    } else if !matches!(config.role, paycore_server::Role::All) {
        anyhow::bail!("--role api and --role engine are cluster mode: give --queue nats://… and --store postgres://…");
    }
    let http_threads = args.http_threads.map_or_else(default_http_threads, usize::from);
    Ok((config, http_threads))
}

/// One HTTP thread per core, but one: every request waits on the engine's single thread, so
/// that thread must never wait for a core behind HTTP work. On 2 cores, one HTTP thread
/// serves 64 clients about 10% faster than two (BENCHMARKS.md, session 4).
fn default_http_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1)).max(1)
}
