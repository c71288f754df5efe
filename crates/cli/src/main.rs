//! The `paycore` binary: flag parsing and glue only. The service lives in `paycore-server`.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
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
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The data folder (database, first API key).
    #[arg(long = "data", env = "PAYCORE_DATA", default_value = "./paycore-data")]
    data: PathBuf,
    /// The address to listen on; port 0 picks a free port.
    #[arg(long = "listen", env = "PAYCORE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The largest request body accepted, in bytes.
    #[arg(long = "max-body-bytes", env = "PAYCORE_MAX_BODY_BYTES", default_value_t = paycore_server::Config::MAX_BODY_BYTES_DEFAULT)]
    max_body_bytes: usize,
    /// Requests that may wait for the engine before new ones get 503.
    #[arg(long = "queue-capacity", env = "PAYCORE_QUEUE_CAPACITY", default_value_t = paycore_server::Config::QUEUE_CAPACITY_DEFAULT)]
    queue_capacity: usize,
}

fn main() -> ExitCode {
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("paycore: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = paycore_server::Config::new(args.data, args.listen);
    config.max_body_bytes = args.max_body_bytes;
    config.queue_capacity = args.queue_capacity;
    config.api_key = std::env::var("PAYCORE_API_KEY")
        .ok()
        .filter(|key| !key.is_empty())
        .map(paycore_server::Secret::new);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(paycore_server::run(config))
}
