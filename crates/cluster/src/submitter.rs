//! The API side of the queue: publish a submission to its tenant's partition, wait for the
//! engine's answer on this node's reply subject.

use crate::queue::{self, QueueConfig, QueueError, REPLY_HEADER};
use crate::wire;
use async_nats::jetstream;
use futures_util::StreamExt;
use paycore_engine::{EngineError, Envelope, Priority, Reply, Submitter};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

type Answer = Box<dyn FnOnce(Result<Reply, EngineError>) + Send>;

/// Submits to the engines through JetStream. Cheap to share; one per API process.
pub struct NatsSubmitter {
    inner: Arc<Inner>,
    replies: tokio::task::JoinHandle<()>,
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
    runtime: tokio::runtime::Handle,
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
            runtime: tokio::runtime::Handle::current(),
        });
        let listener = inner.clone();
        let replies = tokio::spawn(async move {
            while let Some(message) = replies.next().await {
                listener.answer(&message.subject, &message.payload);
            }
            tracing::warn!("the reply subscription ended");
        });
        Ok(NatsSubmitter { inner, replies })
    }
}

impl Drop for NatsSubmitter {
    fn drop(&mut self) {
        self.replies.abort();
    }
}

impl Inner {
    fn take(&self, seq: u64) -> Option<Answer> {
        self.waiting.lock().ok().and_then(|mut waiting| waiting.remove(&seq))
    }

    /// A reply arrived on `subject` (`…reply.<node>.<seq>`).
    fn answer(&self, subject: &str, payload: &[u8]) {
        let Some(seq) = subject.rsplit('.').next().and_then(|s| s.parse::<u64>().ok()) else {
            tracing::warn!(%subject, "a reply on an unexpected subject");
            return;
        };
        // Its waiter may have timed out already: the answer then went from the store.
        let Some(answer) = self.take(seq) else { return };
        answer(wire::decode_reply(payload).unwrap_or_else(|error| {
            tracing::error!(%error, "an engine's reply cannot be read");
            Err(EngineError::Unavailable(format!("an engine's reply cannot be read: {error}")))
        }));
    }
}

impl Submitter for NatsSubmitter {
    fn try_submit(&self, envelope: Envelope, priority: Priority) -> Result<(), EngineError> {
        let inner = &self.inner;
        let seq = inner.next.fetch_add(1, Ordering::Relaxed);
        let partition = paycore_store::partition_of(envelope.submission.request.tenant, inner.config.partitions);
        let payload = wire::encode_submission(&envelope.submission);
        {
            let mut waiting =
                inner.waiting.lock().map_err(|_| EngineError::Unavailable("the reply table is poisoned".into()))?;
            if waiting.len() >= inner.capacity {
                return Err(EngineError::Overloaded);
            }
            waiting.insert(seq, envelope.reply);
        }
        let inner = self.inner.clone();
        self.inner.runtime.spawn(async move {
            let subject = inner.config.command_subject(partition, priority);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("{}-{seq}", inner.node).as_str());
            headers.insert(REPLY_HEADER, format!("{}.{seq}", inner.config.reply_prefix(&inner.node)).as_str());
            let published = match inner.js.publish_with_headers(subject, headers, payload.into()).await {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(cause) = published {
                // Not in the stream: nothing will be executed.
                if let Some(answer) = inner.take(seq) {
                    tracing::warn!(%cause, "cannot publish to the queue");
                    answer(Err(EngineError::Unavailable(format!("the queue cannot take the request: {cause}"))));
                }
                return;
            }
            tokio::time::sleep(inner.config.reply_timeout).await;
            if let Some(answer) = inner.take(seq) {
                answer(Err(EngineError::NoReply));
            }
        });
        Ok(())
    }

    fn depth(&self) -> usize {
        self.inner.waiting.lock().map_or(0, |waiting| waiting.len())
    }
}
