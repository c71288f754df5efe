//! The API side of the queue: publish a submission to its tenant's partition, wait for the
//! engine's answer on this node's reply subject.
//!
//! Submissions are not published one a message: each lane of each partition has a task that
//! takes every submission waiting for it and publishes them as one JetStream message
//! (`wire::Frames`, each with the sequence number its answer is awaited under), so a burst of
//! requests costs NATS one store, one acknowledgement, one delivery and one engine ack, not one
//! of each a request. Nothing waits to make a message fuller: what queued while the previous
//! one was being published goes next.

use crate::queue::{self, QueueConfig, QueueError, REPLY_HEADER};
use crate::wire::{self, Frames, MessageKind};
use async_nats::jetstream;
use futures_util::StreamExt;
use paycore_engine::{EngineError, Envelope, Priority, Reply, Submitter};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

type Answer = Box<dyn FnOnce(Result<Reply, EngineError>) + Send>;

/// Submits to the engines through JetStream. Cheap to share; one per API process.
pub struct NatsSubmitter {
    inner: Arc<Inner>,
    /// The encoded submissions, by lane (`lane_index`), for their publishing task.
    lanes: Vec<mpsc::UnboundedSender<(u64, Vec<u8>)>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct Inner {
    config: QueueConfig,
    js: jetstream::Context,
    /// This process's id in subjects and message ids: a fresh NUID per start, so a restarted
    /// node never takes an answer meant for its previous life.
    node: String,
    next: AtomicU64,
    /// The submissions waiting for their answer, by sequence number.
    waiting: Mutex<HashMap<u64, Answer>>,
    /// More waiting than this is refused with `Overloaded` (503, retry).
    capacity: usize,
}

/// The two lanes of each partition, in one list.
fn lane_index(partition: u32, priority: Priority) -> usize {
    let lane = match priority {
        Priority::RealTime => 0,
        Priority::Background => 1,
    };
    partition as usize * 2 + lane
}

impl NatsSubmitter {
    /// Connects, makes sure the stream exists, and listens for this node's replies.
    pub async fn connect(config: QueueConfig, capacity: usize) -> Result<NatsSubmitter, QueueError> {
        let client = queue::connect(&config).await?;
        let js = jetstream::new(client.clone());
        queue::stream(&js, &config).await?;
        let node = nuid::next().to_string();
        let mut replies = client
            .subscribe(format!("{}.*", config.reply_prefix(&node)))
            .await
            .map_err(|e| QueueError::JetStream(format!("cannot listen for replies: {e}")))?;
        // The subscription is in place before the first publish.
        client.flush().await.map_err(|e| QueueError::JetStream(format!("cannot flush: {e}")))?;
        let inner = Arc::new(Inner {
            config,
            js,
            node,
            next: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
            capacity,
        });
        let listener = inner.clone();
        let mut tasks = vec![tokio::spawn(async move {
            while let Some(message) = replies.next().await {
                listener.answer(&message.subject, &message.payload);
            }
            tracing::warn!("the reply subscription ended");
        })];
        let mut lanes = Vec::new();
        for partition in 0..inner.config.partitions {
            for priority in [Priority::RealTime, Priority::Background] {
                debug_assert_eq!(lanes.len(), lane_index(partition, priority));
                let (queued, taken) = mpsc::unbounded_channel();
                lanes.push(queued);
                tasks.push(tokio::spawn(inner.clone().publish_lane(partition, priority, taken)));
            }
        }
        Ok(NatsSubmitter { inner, lanes, tasks })
    }
}

impl Drop for NatsSubmitter {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Inner {
    fn take(&self, seq: u64) -> Option<Answer> {
        self.waiting.lock().ok().and_then(|mut waiting| waiting.remove(&seq))
    }

    /// Answers arrived on `subject` (`…reply.<node>.batch`, `wire::Frames` of replies).
    fn answer(&self, subject: &str, payload: &[u8]) {
        if subject.rsplit('.').next() != Some(wire::REPLY_BATCH) {
            tracing::warn!(%subject, "a reply on an unexpected subject");
            return;
        }
        for frame in wire::frames(MessageKind::Reply, payload) {
            let (seq, reply) = match frame {
                Ok(frame) => frame,
                Err(error) => {
                    // The requests of the frames not read time out and are answered from the store.
                    tracing::error!(%error, "an engine's replies cannot be read");
                    return;
                }
            };
            // Its waiter may have timed out already: the answer then went from the store.
            let Some(answer) = self.take(seq) else { continue };
            answer(wire::decode_reply(reply).unwrap_or_else(|error| {
                tracing::error!(%error, "an engine's reply cannot be read");
                Err(EngineError::Unavailable(format!("an engine's reply cannot be read: {error}")))
            }));
        }
    }

    /// Publishes one lane's submissions as they come, all that are waiting in each message,
    /// until the submitter is dropped.
    async fn publish_lane(
        self: Arc<Inner>,
        partition: u32,
        priority: Priority,
        mut taken: mpsc::UnboundedReceiver<(u64, Vec<u8>)>,
    ) {
        let subject = self.config.command_subject(partition, priority);
        let mut waiting = Vec::new();
        while taken.recv_many(&mut waiting, 4096).await > 0 {
            let mut message = Frames::default();
            let mut seqs = Vec::new();
            for (seq, submission) in waiting.drain(..) {
                if !message.fits(submission.len()) {
                    self.publish(&subject, std::mem::take(&mut message), std::mem::take(&mut seqs)).await;
                }
                message.push(seq, &submission);
                seqs.push(seq);
            }
            self.publish(&subject, message, seqs).await;
        }
    }

    /// Publishes one message of submissions; once JetStream has stored it, a task waits out
    /// the reply timeout for the requests in it. A message JetStream did not take answers each
    /// of its requests `Unavailable`: nothing of it will be executed.
    async fn publish(self: &Arc<Inner>, subject: &str, message: Frames, seqs: Vec<u64>) {
        let Some(&first) = seqs.first() else { return };
        let mut headers = async_nats::HeaderMap::new();
        // Unique per message: the node's id and its first request's number.
        headers.insert("Nats-Msg-Id", format!("{}-{first}", self.node).as_str());
        headers.insert(REPLY_HEADER, self.config.reply_prefix(&self.node).as_str());
        let sent = self.js.publish_with_headers(subject.to_owned(), headers, message.into_bytes().into()).await;
        let inner = self.clone();
        tokio::spawn(async move {
            let published = match sent {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(cause) = published {
                tracing::warn!(%cause, "cannot publish to the queue");
                for seq in seqs {
                    if let Some(answer) = inner.take(seq) {
                        answer(Err(EngineError::Unavailable(format!("the queue cannot take the request: {cause}"))));
                    }
                }
                return;
            }
            tokio::time::sleep(inner.config.reply_timeout).await;
            for seq in seqs {
                if let Some(answer) = inner.take(seq) {
                    answer(Err(EngineError::NoReply));
                }
            }
        });
    }
}

impl Submitter for NatsSubmitter {
    fn try_submit(&self, envelope: Envelope, priority: Priority) -> Result<(), EngineError> {
        let inner = &self.inner;
        let seq = inner.next.fetch_add(1, Ordering::Relaxed);
        let partition = paycore_store::partition_of(envelope.submission.request.tenant, inner.config.partitions);
        let payload = wire::encode_submission(&envelope.submission);
        let lane = self
            .lanes
            .get(lane_index(partition, priority))
            .ok_or_else(|| EngineError::Unavailable(format!("no queue lane for partition {partition}")))?;
        {
            let mut waiting =
                inner.waiting.lock().map_err(|_| EngineError::Unavailable("the reply table is poisoned".into()))?;
            if waiting.len() >= inner.capacity {
                return Err(EngineError::Overloaded);
            }
            waiting.insert(seq, envelope.reply);
        }
        if lane.send((seq, payload)).is_err() {
            // The lane's task is gone (the submitter is being dropped): nothing was published.
            drop(inner.take(seq));
            return Err(EngineError::Unavailable("the queue is closed".into()));
        }
        Ok(())
    }

    fn depth(&self) -> usize {
        self.inner.waiting.lock().map_or(0, |waiting| waiting.len())
    }
}
