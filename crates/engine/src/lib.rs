//! The engine: the one writer of the ledger.
//!
//! A loop on its own thread, as in TigerBeetle: **collect** requests from the queue without
//! waiting once one has arrived (light load makes small batches and low latency, heavy load
//! makes large batches and high throughput); **load** what the batch refers to from the store;
//! **execute** it on the in-memory [`State`](paycore_ledger::State), deterministically;
//! **commit** its changes and saved idempotent responses in one transaction; only then
//! **reply**. When requests are waiting behind a large batch, it commits (and is answered) on a committer
//! thread while the engine thread executes the next one, which reads the store, replies and
//! commits only after that commit returned, and fails with it if it failed. A batch that cannot be committed is answered with an error and the state is
//! rebuilt from the store, so memory never runs ahead of disk (after a full disk, writes are
//! refused for a short, growing while before the next try); a commit the store fences off
//! (another engine leads its partition now) ends the loop instead ([`Stopped::Fenced`]).
//!
//! Feature `serde` (off by default) gives [`Submission`], [`Reply`], [`EngineError`] and
//! [`IdempotencyKey`] `Serialize` and `Deserialize`, for the cluster's wire format.

pub mod batches;
mod engine;
mod metrics;
mod queue;
pub mod returns;

pub use engine::{start, Clock, EngineConfig, Renderer, Stopped, SystemClock, PIPELINE_EVENTS_MIN};
pub use metrics::EngineMetrics;
pub use queue::{channel, ChannelQueue, ChannelSubmitter, Envelope, Priority, Queue, Received, Submitter};

use paycore_ledger::{Outcome, Request};

/// An `Idempotency-Key` and the fingerprint (SHA-256 of method, path and body) of the request
/// that carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct IdempotencyKey {
    pub key: String,
    pub fingerprint: [u8; 32],
}

/// A request as submitted to the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Submission {
    pub request: Request,
    pub idempotency: Option<IdempotencyKey>,
}

/// The engine's answer, given only after the batch is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
// An outcome is built once per request and moved, never copied: boxing it would add an
// allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Reply {
    /// Executed and committed now.
    Done(Outcome),
    /// This key was used before with the same request: the response saved then.
    Replay {
        status: u16,
        #[cfg_attr(feature = "serde", serde(with = "body_bytes"))]
        body: Vec<u8>,
    },
    /// This key was used before with a different request.
    KeyReused,
}

/// A saved response's body as one byte string: a `Vec<u8>` is otherwise a sequence, each byte
/// written and read on its own.
#[cfg(feature = "serde")]
mod body_bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(body: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(body)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(Body)
    }

    struct Body;

    impl serde::de::Visitor<'_> for Body {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a response body")
        }

        fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum EngineError {
    /// The queue is full: retry later (HTTP 503 with `Retry-After`).
    #[error("the engine's queue is full")]
    Overloaded,
    /// The engine could not commit the batch (nothing of it was applied), or it has stopped.
    #[error("the ledger is unavailable: {0}")]
    Unavailable(String),
    /// Cluster mode: the request is in the queue but the engine's answer did not come in time.
    /// It may still be applied (or may have been): the caller answers from the store.
    #[error("the engine did not answer in time")]
    NoReply,
    /// The store's disk is full ([`paycore_store::StoreError::Full`]): nothing of the request
    /// was applied; retry later (HTTP 503 `storage_full` with `Retry-After`). Reads still work.
    #[error("the store's disk is full")]
    StorageFull,
}

/// The submitting side of the engine, shared by every API worker.
#[derive(Clone)]
pub struct EngineHandle {
    submitter: std::sync::Arc<dyn Submitter>,
}

impl EngineHandle {
    pub fn new(submitter: std::sync::Arc<dyn Submitter>) -> EngineHandle {
        EngineHandle { submitter }
    }

    /// Submits a real-time request and waits for its committed outcome.
    pub async fn submit(&self, submission: Submission) -> Result<Reply, EngineError> {
        self.submit_with(submission, Priority::RealTime).await
    }

    /// Submits background work (batch items): it fills what real-time requests leave of each
    /// engine batch.
    pub async fn submit_background(&self, submission: Submission) -> Result<Reply, EngineError> {
        self.submit_with(submission, Priority::Background).await
    }

    async fn submit_with(&self, submission: Submission, priority: Priority) -> Result<Reply, EngineError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let envelope = Envelope {
            submission,
            reply: Box::new(move |reply| {
                // The caller may have gone away (client disconnected): nothing to tell then.
                let _ = tx.send(reply);
            }),
        };
        self.submitter.try_submit(envelope, priority)?;
        rx.await.unwrap_or_else(|_| Err(EngineError::Unavailable("the engine stopped".into())))
    }

    /// Requests waiting in the queue.
    pub fn queue_depth(&self) -> usize {
        self.submitter.depth()
    }
}
