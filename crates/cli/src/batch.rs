//! `paycore batch …`: submit a payment file to a running server, follow it, fetch its report.

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use paycore_ledger::BatchStatus;
use reqwest::blocking::{Client, Response};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the server is and how to authenticate.
#[derive(clap::Args)]
pub struct Connection {
    /// The server's base URL.
    #[arg(long, env = "PAYCORE_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The data folder to read the API key from (`<data>/api-key`) when `PAYCORE_API_KEY` is
    /// not set.
    #[arg(long = "data", env = "PAYCORE_DATA", default_value = "./paycore-data")]
    data: PathBuf,
}

#[derive(clap::Subcommand)]
pub enum BatchCommand {
    /// Uploads a payment file; with --wait, shows progress and a summary.
    Submit(SubmitArgs),
    /// Shows a batch's status, counts and control totals.
    Status {
        /// `bat_…`
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Downloads a finished batch's report.
    Report(ReportArgs),
}

#[derive(clap::Args)]
pub struct SubmitArgs {
    /// The file: CSV, JSON lines, pain.001 XML or NACHA.
    file: PathBuf,
    /// csv, jsonl, pain.001 or nacha; default from the file's extension.
    #[arg(long)]
    format: Option<String>,
    /// The paying account (id or reference) for items that name none.
    #[arg(long)]
    payer: Option<String>,
    /// The currency of items that name none.
    #[arg(long)]
    currency: Option<String>,
    /// best_effort (default) or atomic.
    #[arg(long)]
    mode: Option<String>,
    /// reject_file (default) or skip_invalid.
    #[arg(long = "on-invalid")]
    on_invalid: Option<String>,
    /// CSV and JSON lines: the number of records the file must have.
    #[arg(long = "expected-count")]
    expected_count: Option<u64>,
    /// CSV and JSON lines: the sum the valid items must have, as a decimal.
    #[arg(long = "expected-total")]
    expected_total: Option<String>,
    /// Makes a retried upload safe: the same key and file give the same batch.
    #[arg(long = "idempotency-key")]
    idempotency_key: Option<String>,
    /// Waits for the batch to finish, with a progress bar, then prints a summary.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    connection: Connection,
}

#[derive(clap::Args)]
pub struct ReportArgs {
    /// `bat_…`
    id: String,
    /// csv (default) or pain.002.
    #[arg(long, default_value = "csv")]
    format: String,
    /// pain.002 only: 001.001.03, 001.001.10 or 001.001.11 (default: the version that answers the input).
    #[arg(long)]
    version: Option<String>,
    /// Where to write the report; default standard output.
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    #[command(flatten)]
    connection: Connection,
}

/// What the process should exit with.
pub enum Finished {
    /// Nothing went wrong (or the batch is still running).
    Ok,
    /// The batch was rejected, or finished with failed items.
    NotAllPaid,
}

struct Api {
    client: Client,
    base: String,
    key: String,
}

impl Api {
    fn new(connection: &Connection) -> anyhow::Result<Api> {
        let key = match std::env::var("PAYCORE_API_KEY").ok().filter(|k| !k.is_empty()) {
            Some(key) => key,
            None => {
                let path = connection.data.join("api-key");
                std::fs::read_to_string(&path)
                    .with_context(|| format!("no PAYCORE_API_KEY and cannot read {}", path.display()))?
                    .trim()
                    .to_owned()
            }
        };
        let client = Client::builder().timeout(None).build()?;
        Ok(Api { client, base: connection.server.trim_end_matches('/').to_owned(), key })
    }

    fn get(&self, path: &str) -> anyhow::Result<Response> {
        let response = self.client.get(format!("{}{path}", self.base)).bearer_auth(&self.key).send()?;
        checked(response)
    }

    fn batch(&self, id: &str) -> anyhow::Result<Value> {
        Ok(self.get(&format!("/v1/batches/{id}"))?.json()?)
    }
}

/// An error response as a readable error.
fn checked(response: Response) -> anyhow::Result<Response> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body: Value = response.json().unwrap_or(Value::Null);
    let error = &body["error"];
    match error["param"].as_str() {
        Some(param) => bail!("{status}: {} ({}, parameter {param})", error["message"], error["code"]),
        None => bail!("{status}: {} ({})", error["message"].as_str().unwrap_or("no details"), error["code"]),
    }
}

fn format_of(path: &Path) -> Option<&'static str> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "csv" => Some("csv"),
        "jsonl" | "ndjson" => Some("jsonl"),
        "xml" => Some("pain.001"),
        "ach" | "nacha" => Some("nacha"),
        _ => None,
    }
}

pub fn run(command: BatchCommand) -> anyhow::Result<Finished> {
    match command {
        BatchCommand::Submit(args) => submit(args),
        BatchCommand::Status { id, connection } => {
            let batch = Api::new(&connection)?.batch(&id)?;
            print_summary(&batch);
            Ok(outcome(&batch))
        }
        BatchCommand::Report(args) => report(args),
    }
}

fn submit(args: SubmitArgs) -> anyhow::Result<Finished> {
    let api = Api::new(&args.connection)?;
    let format = match &args.format {
        Some(format) => format.clone(),
        None => format_of(&args.file)
            .with_context(|| format!("cannot tell the format of {} from its name: pass --format", args.file.display()))?
            .to_owned(),
    };
    let content_type = match format.as_str() {
        "csv" => "text/csv",
        "jsonl" => "application/x-ndjson",
        "pain.001" => "application/xml",
        _ => "application/octet-stream",
    };
    let mut query = vec![("format", format.clone())];
    let optional = [
        ("payer", args.payer.clone()),
        ("currency", args.currency.clone()),
        ("mode", args.mode.clone()),
        ("on_invalid", args.on_invalid.clone()),
        ("expected_count", args.expected_count.map(|n| n.to_string())),
        ("expected_total", args.expected_total.clone()),
    ];
    query.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
    let file = std::fs::File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let size = file.metadata()?.len();
    let mut request = api
        .client
        .post(format!("{}/v1/batches", api.base))
        .bearer_auth(&api.key)
        .query(&query)
        .header("Content-Type", content_type)
        .body(reqwest::blocking::Body::sized(file, size));
    if let Some(key) = &args.idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let batch: Value = checked(request.send()?)?.json()?;
    let id = batch["id"].as_str().context("the server answered without a batch id")?.to_owned();
    eprintln!("batch {id}: {}", batch["status"].as_str().unwrap_or("?"));
    if !args.wait {
        println!("{id}");
        return Ok(Finished::Ok);
    }
    let batch = follow(&api, &id)?;
    print_summary(&batch);
    Ok(outcome(&batch))
}

/// Polls the batch until it ends, with a progress bar.
fn follow(api: &Api, id: &str) -> anyhow::Result<Value> {
    let bar = ProgressBar::new_spinner();
    bar.set_message(BatchStatus::Validating.as_str());
    let mut wait = Duration::from_millis(50);
    loop {
        let batch = api.batch(id)?;
        let text = batch["status"].as_str().unwrap_or("?").to_owned();
        let status = BatchStatus::parse(&text);
        let counts = &batch["counts"];
        let number = |field: &str| counts[field].as_u64().unwrap_or(0);
        if status == Some(BatchStatus::Processing) && bar.length().is_none() {
            bar.set_length(number("total"));
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} lines  {per_sec}  eta {eta}  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
        }
        bar.set_position(number("invalid") + number("succeeded") + number("failed"));
        bar.set_message(format!("{text}: {} paid, {} failed", number("succeeded"), number("failed")));
        if status.is_some_and(BatchStatus::is_final) {
            bar.finish_and_clear();
            return Ok(batch);
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_millis(500));
    }
}

fn outcome(batch: &Value) -> Finished {
    let failed = batch["counts"]["failed"].as_u64().unwrap_or(0) + batch["counts"]["invalid"].as_u64().unwrap_or(0);
    match batch["status"].as_str().and_then(BatchStatus::parse) {
        Some(BatchStatus::Rejected | BatchStatus::Cancelled) => Finished::NotAllPaid,
        Some(BatchStatus::Completed) if failed > 0 => Finished::NotAllPaid,
        _ => Finished::Ok,
    }
}

fn print_summary(batch: &Value) {
    let counts = &batch["counts"];
    println!("batch      {}", batch["id"].as_str().unwrap_or("?"));
    println!("status     {}", batch["status"].as_str().unwrap_or("?"));
    println!(
        "items      {} total: {} succeeded, {} failed, {} invalid, {} pending",
        counts["total"], counts["succeeded"], counts["failed"], counts["invalid"], counts["pending"]
    );
    for total in batch["control_totals"].as_array().into_iter().flatten() {
        println!(
            "total      {} {} in {} items",
            total["sum_decimal"].as_str().unwrap_or("?"),
            total["currency"].as_str().unwrap_or("?"),
            total["count"]
        );
    }
    if let Some(rejection) = batch["rejection"].as_object() {
        println!(
            "rejected   {}: {}",
            rejection["code"].as_str().unwrap_or("?"),
            rejection["message"].as_str().unwrap_or("")
        );
        for error in rejection.get("errors").and_then(Value::as_array).into_iter().flatten().take(20) {
            println!("  {}: {}", error["location"].as_str().unwrap_or("?"), error["message"].as_str().unwrap_or(""));
        }
    }
}

fn report(args: ReportArgs) -> anyhow::Result<Finished> {
    let api = Api::new(&args.connection)?;
    let mut path = format!("/v1/batches/{}/report?format={}", args.id, args.format);
    if let Some(version) = &args.version {
        path.push_str(&format!("&version={version}"));
    }
    let mut response = api.get(&path)?;
    match &args.output {
        Some(output) => {
            let mut file =
                std::fs::File::create(output).with_context(|| format!("cannot create {}", output.display()))?;
            response.copy_to(&mut file)?;
            eprintln!("report written to {}", output.display());
        }
        None => {
            response.copy_to(&mut std::io::stdout().lock())?;
        }
    }
    Ok(Finished::Ok)
}
