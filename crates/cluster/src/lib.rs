//! Cluster mode: paycore on PostgreSQL and NATS JetStream, for when one machine is not enough.
//!
//! API nodes publish engine submissions to a JetStream work-queue stream, one subject per
//! tenant partition and lane (`<name>.cmd.<partition>.rt|bg`), each with the ids it assigned
//! and a `Nats-Msg-Id`, and wait for the engine's answer on their own reply subject
//! ([`NatsSubmitter`]). The leader engine of each partition pulls them into the ordinary engine
//! loop ([`consume`]), executes them in batches, commits to PostgreSQL, replies, and only then
//! acknowledges. A leader is elected per partition with a PostgreSQL advisory lock; every
//! commit checks the partition's fencing epoch ([`EngineNode`]).
//!
//! - [`wire`]: the bytes of a submission and of a reply: a version byte, then the value in
//!   postcard.
//! - `queue`: the stream, its subjects and consumers.
//! - `submitter`: the API side.
//! - `consumer`: the engine side.
//! - `node`: the engines of one process, one per partition it leads.
//! - [`testing`]: a NATS server of a test's own.

mod consumer;
mod node;
mod queue;
mod submitter;
pub mod testing;
pub mod wire;

pub use consumer::{consume, Consumption};
pub use node::{EngineNode, EngineNodeConfig};
pub use queue::{QueueConfig, QueueError};
pub use submitter::NatsSubmitter;
