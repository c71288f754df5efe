//! Cluster mode: the wire format, the NATS JetStream queue, roles.
//!
//! In cluster mode API nodes publish engine submissions to NATS JetStream and the engine
//! replies over NATS. [`wire`] is how both ends encode what they send: a version byte, then
//! the value in postcard.

pub mod wire;
