//! The JetStream stream that carries engine submissions, and the names derived from the
//! cluster's queue name.

use async_nats::jetstream::{self, consumer::pull, stream};
use paycore_engine::Priority;
use std::time::Duration;

/// How API nodes and engines reach the queue.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// `nats://host:port` (several servers: comma-separated).
    pub url: String,
    /// The stream is `<NAME>` upper-cased; subjects start with `<name>.`. Letters, digits,
    /// `_` and `-`; tests give each their own.
    pub name: String,
    /// The cluster's partition count (as recorded in PostgreSQL).
    pub partitions: u32,
    /// How long an API node waits for the engine's reply before it answers from the store.
    pub reply_timeout: Duration,
    /// Stream replicas: 1 on one NATS server, 3 on a three-node NATS cluster.
    pub replicas: usize,
}

impl QueueConfig {
    /// The default queue name.
    pub const NAME_DEFAULT: &'static str = "paycore";
    /// The default reply timeout.
    pub const REPLY_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

    pub fn new(url: impl Into<String>, partitions: u32) -> QueueConfig {
        QueueConfig {
            url: url.into(),
            name: QueueConfig::NAME_DEFAULT.into(),
            partitions,
            reply_timeout: QueueConfig::REPLY_TIMEOUT_DEFAULT,
            replicas: 1,
        }
    }

    pub(crate) fn stream_name(&self) -> String {
        self.name.to_uppercase()
    }

    /// The subject of one partition's lane.
    pub(crate) fn command_subject(&self, partition: u32, priority: Priority) -> String {
        format!("{}.cmd.{partition}.{}", self.name, lane(priority))
    }

    /// The durable consumer that a partition's leader pulls one lane from.
    pub(crate) fn consumer_name(&self, partition: u32, priority: Priority) -> String {
        format!("{}-engine-{partition}-{}", self.name, lane(priority))
    }

    /// Every reply subject of one API node.
    pub(crate) fn reply_prefix(&self, node: &str) -> String {
        format!("{}.reply.{node}", self.name)
    }
}

fn lane(priority: Priority) -> &'static str {
    match priority {
        Priority::RealTime => "rt",
        Priority::Background => "bg",
    }
}

/// The header that names where the engine sends its answers: the API node's reply prefix, under
/// which they go to `<prefix>.batch` (the message's own reply subject carries JetStream's
/// publish acknowledgement).
pub(crate) const REPLY_HEADER: &str = "Paycore-Reply";

/// How long an engine has to answer and acknowledge a message before JetStream hands it out
/// again (to the next leader, after a failover). Redelivery is harmless: every command is
/// idempotent.
pub(crate) const ACK_WAIT: Duration = Duration::from_secs(10);

/// Why the queue could not be used.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot connect to NATS at {url}: {cause}")]
    Connect { url: String, cause: String },
    #[error("the queue name {0:?} may hold only letters, digits, '_' and '-'")]
    Name(String),
    #[error("JetStream: {0}")]
    JetStream(String),
}

/// Connects to NATS.
pub(crate) async fn connect(config: &QueueConfig) -> Result<async_nats::Client, QueueError> {
    let valid =
        !config.name.is_empty() && config.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(QueueError::Name(config.name.clone()));
    }
    async_nats::ConnectOptions::new()
        .name("paycore")
        // Keep trying for ever after a lost connection: a NATS restart is an outage, not the end.
        .max_reconnects(None)
        .connect(config.url.as_str())
        .await
        .map_err(|e| QueueError::Connect { url: config.url.clone(), cause: e.to_string() })
}

/// The work-queue stream (created if missing): a message is removed once an engine acknowledges
/// it; a `Nats-Msg-Id` seen in the last two minutes is stored once.
///
/// Every process of a cluster makes sure of the stream as it starts, so on a new cluster
/// several create it at once. The server can refuse all but one of them, and not always as
/// "already exists": a CI run saw "subjects overlap with an existing stream" (10065) for the
/// very stream another engine had just created. A refused creation is tried again (it then
/// finds the stream), a few times over about two seconds, before it counts as an error.
pub(crate) async fn stream(js: &jetstream::Context, config: &QueueConfig) -> Result<stream::Stream, QueueError> {
    let wanted = stream::Config {
        name: config.stream_name(),
        subjects: vec![format!("{}.cmd.>", config.name)],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    let mut attempt = 0;
    loop {
        match js.get_or_create_stream(wanted.clone()).await {
            Ok(stream) => return Ok(stream),
            Err(error) if attempt < STREAM_ATTEMPTS => {
                attempt += 1;
                tracing::debug!(stream = %wanted.name, %error, attempt, "the stream could not be made; trying again");
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(error) => {
                return Err(QueueError::JetStream(format!("cannot create or open the stream {}: {error}", wanted.name)))
            }
        }
    }
}

/// How many times a refused creation of the stream is tried again ([`stream`]).
const STREAM_ATTEMPTS: u64 = 6;

/// Deletes the durable consumer of one partition's lane, if there is one. A new leader does
/// this before it pulls: a message the engine before it took and did not acknowledge (it was
/// killed between its pull and its ack) would otherwise wait out the ack wait
/// ([`ACK_WAIT`], 10 s, as long as an API node's reply timeout) before the stream delivered
/// it again; a work-queue stream keeps every message not acknowledged, so the consumer made
/// anew delivers it at once. The engine before is fenced off by then (the new leader holds
/// the lead and its epoch), so what it took can no longer be committed by it. A failed
/// delete (none there yet, at a partition's first lead) leaves the consumer as it was.
pub(crate) async fn release(stream: &stream::Stream, config: &QueueConfig, partition: u32, priority: Priority) {
    let name = config.consumer_name(partition, priority);
    match stream.delete_consumer(&name).await {
        Ok(_) => {
            tracing::info!(consumer = %name, "the consumer of the lead before was deleted: what it took and did not acknowledge comes again now")
        }
        Err(error) => tracing::debug!(consumer = %name, %error, "no consumer deleted"),
    }
}

/// The durable pull consumer of one partition's lane (created if missing).
pub(crate) async fn consumer(
    stream: &stream::Stream,
    config: &QueueConfig,
    partition: u32,
    priority: Priority,
) -> Result<jetstream::consumer::PullConsumer, QueueError> {
    let name = config.consumer_name(partition, priority);
    stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: config.command_subject(partition, priority),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                // The engine's batches are made of what is waiting: let enough be in flight.
                max_ack_pending: match priority {
                    Priority::RealTime => 65_536,
                    Priority::Background => 64,
                },
                ..Default::default()
            },
        )
        .await
        .map_err(|e| QueueError::JetStream(format!("cannot create or open the consumer {name}: {e}")))
}
