//! The engine side of the queue: one partition's two lanes pulled from JetStream into the
//! engine's ordinary in-process queue. Each message is answered on the submitter's reply
//! subject once its batch is committed, and only then acknowledged: a leader that dies before
//! acknowledging leaves the message to be handed out again, to the next leader.

use crate::queue::{self, QueueConfig, QueueError, REPLY_HEADER};
use crate::wire;
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use paycore_engine::{ChannelQueue, ChannelSubmitter, EngineError, Envelope, Priority, Reply};
use std::sync::Arc;
use std::time::Duration;

/// Messages taken from the stream and not yet in the engine's queue, per pull.
const PULL_BATCH: usize = 512;

/// The pulling tasks of one partition. Dropping it stops them; the engine's queue then closes
/// once it is empty.
pub struct Consumption {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Consumption {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts pulling `partition`'s lanes; returns the queue for the partition's engine.
pub async fn consume(
    config: &QueueConfig,
    partition: u32,
    capacity: usize,
) -> Result<(ChannelQueue, Consumption), QueueError> {
    let client = queue::connect(config).await?;
    let js = jetstream::new(client.clone());
    let stream = queue::stream(&js, config).await?;
    let (submitter, engine_queue) = paycore_engine::channel(capacity);
    let submitter = Arc::new(submitter);
    let mut tasks = Vec::new();
    for priority in [Priority::RealTime, Priority::Background] {
        let consumer = queue::consumer(&stream, config, partition, priority).await?;
        let (client, submitter) = (client.clone(), submitter.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(error) = pull(consumer, client, &submitter, priority).await {
                tracing::error!(partition, %error, "pulling from the queue stopped");
            }
        }));
    }
    Ok((engine_queue, Consumption { tasks }))
}

async fn pull(
    consumer: jetstream::consumer::PullConsumer,
    client: async_nats::Client,
    submitter: &ChannelSubmitter,
    priority: Priority,
) -> Result<(), String> {
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .messages()
        .await
        .map_err(|e| format!("cannot pull: {e}"))?;
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                // Heartbeats missed, the server restarting: the stream of messages carries on.
                tracing::warn!(%error, "pulling from the queue");
                continue;
            }
        };
        let reply_to = message.headers.as_ref().and_then(|h| h.get(REPLY_HEADER)).map(|v| v.as_str().to_owned());
        let submission = match wire::decode_submission(&message.payload) {
            Ok(submission) => submission,
            Err(error) => {
                tracing::error!(%error, "a queued command cannot be read; it is dropped");
                let _ = message.ack_with(AckKind::Term).await;
                continue;
            }
        };
        let (payload, acker) = message.split();
        drop(payload);
        let client = client.clone();
        let runtime = tokio::runtime::Handle::current();
        let mut envelope = Envelope {
            submission,
            reply: Box::new(move |result: Result<Reply, EngineError>| {
                let bytes = wire::encode_reply(&result);
                runtime.spawn(async move {
                    if let Some(subject) = reply_to {
                        if let Err(error) = client.publish(subject, bytes.into()).await {
                            tracing::warn!(%error, "cannot send a reply");
                        }
                    }
                    // After the reply: a message is gone from the stream only once answered.
                    if let Err(error) = acker.ack().await {
                        tracing::warn!(%error, "cannot acknowledge a message; it will be handed out again");
                    }
                });
            }),
        };
        // The engine's own queue is full: wait for room (the stream holds the rest).
        loop {
            match submitter.offer(envelope, priority) {
                Ok(None) => break,
                Ok(Some(back)) => {
                    envelope = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                // The engine stopped (it lost the lead, or the process stops): what was not
                // acknowledged goes to the next leader.
                Err(_) => return Ok(()),
            }
        }
    }
    Ok(())
}
