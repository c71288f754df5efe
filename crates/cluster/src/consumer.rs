//! The engine side of the queue: one partition's two lanes pulled from JetStream into the
//! engine's ordinary in-process queue. Each message is answered on the submitter's reply
//! subject once its batch is committed, and only then acknowledged: a leader that dies before
//! acknowledging leaves the message to be handed out again, to the next leader.
//!
//! A stream message holds the submissions an API node had waiting for the lane
//! (`wire::Frames`); it is acknowledged once the last of them is answered. The answers go
//! through one task per partition (`answer`), which takes every answer waiting — the engine
//! answers a whole batch at once — and sends one message per API node, then the
//! acknowledgements: a batch of 30 requests from two API nodes is two reply messages instead
//! of 30, and no task is spawned per request.

use crate::queue::{self, QueueConfig, QueueError, REPLY_HEADER};
use crate::wire::{self, Frames, MessageKind, WireError};
use async_nats::jetstream::{self, message::Acker, AckKind};
use futures_util::StreamExt;
use paycore_engine::{ChannelQueue, ChannelSubmitter, EngineError, Envelope, Priority, Reply, Submission};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Messages taken from the stream and not yet in the engine's queue, per pull.
const PULL_BATCH: usize = 512;

/// The pulling tasks of one partition. Dropping it stops them; the engine's queue then closes
/// once it is empty, and the answering task once the engine has answered the last envelope.
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

/// Starts pulling `partition`'s lanes; returns the queue for the partition's engine. Called
/// by the partition's leader once it holds the lead: it makes the lanes' consumers anew
/// ([`queue::release`]), so what the leader before took and did not acknowledge comes now.
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
    let (answered, answers) = mpsc::unbounded_channel();
    // Not among the tasks that dropping `Consumption` stops: what the engine answers after
    // the pulls stop (a stop drains its queue) is still sent. It ends with the last envelope.
    tokio::spawn(answer(answers, client));
    let mut tasks = Vec::new();
    for priority in [Priority::RealTime, Priority::Background] {
        queue::release(&stream, config, partition, priority).await;
        let consumer = queue::consumer(&stream, config, partition, priority).await?;
        let (answered, submitter) = (answered.clone(), submitter.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(error) = pull(consumer, answered, &submitter, priority).await {
                tracing::error!(partition, %error, "pulling from the queue stopped");
            }
        }));
    }
    Ok((engine_queue, Consumption { tasks }))
}

/// One message of the stream: its submissions (`wire::Frames`) are acknowledged together,
/// once the last of them is answered.
struct Taken {
    acker: Acker,
    unanswered: AtomicUsize,
}

/// One envelope's answer, for `answer` to send and then count against its message.
struct Answered {
    /// The API node's reply prefix (the message's `Paycore-Reply` header) and the sequence
    /// number the request waits under there; none: nobody waits.
    to: Option<(Arc<str>, u64)>,
    reply: Vec<u8>,
    taken: Arc<Taken>,
}

/// Sends what the engine answered, one message per API node for all that is waiting, and
/// then acknowledges each stream message all of whose submissions are answered (a message
/// leaves the stream only once answered). Ends when both lanes' pullers and every envelope
/// they made are gone.
async fn answer(mut answers: mpsc::UnboundedReceiver<Answered>, client: async_nats::Client) {
    let mut waiting = Vec::new();
    while answers.recv_many(&mut waiting, 4096).await > 0 {
        let mut messages: HashMap<&str, Frames> = HashMap::new();
        for Answered { to, reply, .. } in &waiting {
            let Some((prefix, seq)) = to else { continue };
            let message = messages.entry(prefix).or_default();
            if !message.fits(reply.len()) {
                send(&client, prefix, std::mem::take(message)).await;
            }
            message.push(*seq, reply);
        }
        for (prefix, message) in messages {
            send(&client, prefix, message).await;
        }
        for Answered { taken, .. } in waiting.drain(..) {
            if taken.unanswered.fetch_sub(1, Ordering::Relaxed) != 1 {
                continue;
            }
            if let Err(error) = taken.acker.ack().await {
                tracing::warn!(%error, "cannot acknowledge a message; it will be handed out again");
            }
        }
    }
}

/// One reply message to an API node: `<prefix>.batch`, under its reply subscription.
async fn send(client: &async_nats::Client, prefix: &str, message: Frames) {
    if message.is_empty() {
        return;
    }
    if let Err(error) = client.publish(format!("{prefix}.{}", wire::REPLY_BATCH), message.into_bytes().into()).await {
        tracing::warn!(%error, "cannot send replies");
    }
}

/// A stream message's submissions, each with the sequence number its API node awaits it
/// under; none if one cannot be read (the message is then refused whole).
fn submissions(payload: &[u8]) -> Result<Vec<(u64, Submission)>, WireError> {
    wire::frames(MessageKind::Submission, payload)
        .map(|frame| frame.and_then(|(seq, bytes)| Ok((seq, wire::decode_submission(bytes)?))))
        .collect()
}

async fn pull(
    consumer: jetstream::consumer::PullConsumer,
    answered: mpsc::UnboundedSender<Answered>,
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
        let prefix: Option<Arc<str>> =
            message.headers.as_ref().and_then(|h| h.get(REPLY_HEADER)).map(|v| Arc::from(v.as_str()));
        let submissions = match submissions(&message.payload) {
            Ok(submissions) if !submissions.is_empty() => submissions,
            Ok(_) => {
                tracing::error!("a queued message holds no command; it is dropped");
                let _ = message.ack_with(AckKind::Term).await;
                continue;
            }
            Err(error) => {
                tracing::error!(%error, "a queued message cannot be read; it is dropped");
                let _ = message.ack_with(AckKind::Term).await;
                continue;
            }
        };
        let (payload, acker) = message.split();
        drop(payload);
        let taken = Arc::new(Taken { acker, unanswered: AtomicUsize::new(submissions.len()) });
        for (seq, submission) in submissions {
            let (answered, taken) = (answered.clone(), taken.clone());
            let to = prefix.clone().map(|prefix| (prefix, seq));
            let mut envelope = Envelope {
                submission,
                reply: Box::new(move |result: Result<Reply, EngineError>| {
                    let reply = wire::encode_reply(&result);
                    // `answer` outlives every envelope (it ends when the last one is gone).
                    let _ = answered.send(Answered { to, reply, taken });
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
    }
    Ok(())
}
