//! The `paycore` binary: flag parsing and glue only. The service lives in `paycore-server`.

mod batch;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "paycore", version, about = "A double-entry ledger and payment platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Starts the service: the ledger engine and the HTTP API.
    Serve(ServeArgs),
    /// Batch payments on a running server: submit a file, follow it, fetch its report.
    #[command(subcommand)]
    Batch(batch::BatchCommand),
    /// Checks a store offline: balances against transfers, zero sums per currency,
    /// payments and batch items against their transfers. Exit status 0 when all hold.
    Verify {
        /// The data folder, or the PostgreSQL database's `postgres://` URL; when given, it wins
        /// over `--store`.
        #[arg(value_name = "DATA_DIR|URL", required_unless_present = "store")]
        data: Option<PathBuf>,
        /// The PostgreSQL database's `postgres://` URL (as `serve --store` takes it).
        #[arg(long = "store", env = "PAYCORE_STORE", value_name = "URL")]
        store: Option<String>,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
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
    /// the one recorded, 1 for a new cluster).
    #[arg(long = "partitions", env = "PAYCORE_PARTITIONS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    partitions: Option<u32>,
    /// Cluster mode: the partitions this process's engines try to lead first (comma-separated);
    /// the others only when they stay without a leader. Default: all.
    #[arg(long = "prefer-partitions", env = "PAYCORE_PREFER_PARTITIONS", value_delimiter = ',')]
    prefer_partitions: Vec<u32>,
    /// Cluster mode: seconds an API node waits for the engine's answer before answering with
    /// what the store holds.
    #[arg(long = "reply-timeout", env = "PAYCORE_REPLY_TIMEOUT", default_value_t = 10)]
    reply_timeout: u64,
    /// This process's name in batch leases (default: a random one per start).
    #[arg(long = "node-id", env = "PAYCORE_NODE_ID")]
    node_id: Option<String>,
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

fn try_main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Every line written while a request is served ends with its `request_id=…`.
        .event_format(paycore_server::WithRequestId(tracing_subscriber::fmt::format()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Command::Serve(args) => serve(args).map(|()| ExitCode::SUCCESS),
        Command::Batch(command) => Ok(match batch::run(command)? {
            batch::Finished::Ok => ExitCode::SUCCESS,
            batch::Finished::NotAllPaid => ExitCode::from(EXIT_NOT_ALL_HOLDS),
        }),
        Command::Verify { data, store } => match (data, store) {
            (Some(data), _) => verify(&data),
            (None, Some(url)) => verify(Path::new(&postgres_url(url)?)),
            (None, None) => anyhow::bail!("verify needs a data folder or --store URL"),
        },
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
    config.console_secure_cookies = args.console_secure_cookies;
    config.console_secret = std::env::var("PAYCORE_CONSOLE_SECRET")
        .ok()
        .filter(|secret| !secret.is_empty())
        .map(paycore_server::Secret::new);
    config.api_key =
        std::env::var("PAYCORE_API_KEY").ok().filter(|key| !key.is_empty()).map(paycore_server::Secret::new);
    if let Some(node_id) = args.node_id {
        config.node_id = node_id;
    }
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
        config.cluster = Some(paycore_server::Cluster {
            queue,
            partitions: args.partitions,
            preferred: args.prefer_partitions,
        });
    } else if !matches!(config.role, paycore_server::Role::All) {
        anyhow::bail!("--role api and --role engine are cluster mode: give --queue nats://… and --store postgres://…");
    }
    let http_threads = args.http_threads.map_or_else(default_http_threads, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(http_threads).enable_all().build()?;
    runtime.block_on(paycore_server::run(config))
}

/// One HTTP thread per core, but one: every request waits on the engine's single thread, so
/// that thread must never wait for a core behind HTTP work. On 2 cores, one HTTP thread
/// serves 64 clients about 10% faster than two (BENCHMARKS.md, session 4).
fn default_http_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1)).max(1)
}
