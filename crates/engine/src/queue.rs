//! The engine's queue, behind a trait: an in-process bounded channel now, a NATS JetStream work
//! queue in cluster mode.

use crate::{EngineError, Reply, Submission};
use std::time::Duration;

/// A submission and the way to answer it.
pub struct Envelope {
    pub submission: Submission,
    pub reply: Box<dyn FnOnce(Result<Reply, EngineError>) + Send>,
}

impl Envelope {
    /// How many ledger events the submission weighs in a batch (a bulk transfer request counts
    /// each transfer).
    pub fn events(&self) -> usize {
        match &self.submission.request.command {
            paycore_ledger::Command::Transfers(t) => t.len().max(1),
            _ => 1,
        }
    }
}

/// The API side: submit without blocking, or be told the queue is full.
pub trait Submitter: Send + Sync {
    fn try_submit(&self, envelope: Envelope) -> Result<(), EngineError>;
    fn depth(&self) -> usize;
}

/// What the engine's receive saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// At least one envelope was added.
    Some,
    /// The timeout passed with nothing to do.
    Timeout,
    /// Every submitter is gone: the engine stops.
    Closed,
}

/// The engine side.
pub trait Queue: Send {
    /// Waits up to `timeout` (forever if `None`) for one envelope, then takes whatever else is
    /// already waiting, without waiting again, until about `max_events` events.
    fn recv_batch(&mut self, max_events: usize, timeout: Option<Duration>, out: &mut Vec<Envelope>) -> Received;
}

/// A bounded in-process queue of `capacity` submissions.
pub fn channel(capacity: usize) -> (ChannelSubmitter, ChannelQueue) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    (ChannelSubmitter { tx }, ChannelQueue { rx, carry: None })
}

pub struct ChannelSubmitter {
    tx: crossbeam_channel::Sender<Envelope>,
}

impl Submitter for ChannelSubmitter {
    fn try_submit(&self, envelope: Envelope) -> Result<(), EngineError> {
        self.tx.try_send(envelope).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => EngineError::Overloaded,
            crossbeam_channel::TrySendError::Disconnected(_) => {
                EngineError::Unavailable("the engine stopped".into())
            }
        })
    }

    fn depth(&self) -> usize {
        self.tx.len()
    }
}

pub struct ChannelQueue {
    rx: crossbeam_channel::Receiver<Envelope>,
    /// An envelope taken but left for the next batch because this one was full.
    carry: Option<Envelope>,
}

impl Queue for ChannelQueue {
    fn recv_batch(&mut self, max_events: usize, timeout: Option<Duration>, out: &mut Vec<Envelope>) -> Received {
        let first = match self.carry.take() {
            Some(envelope) => envelope,
            None => match timeout {
                None => match self.rx.recv() {
                    Ok(envelope) => envelope,
                    Err(_) => return Received::Closed,
                },
                Some(timeout) => match self.rx.recv_timeout(timeout) {
                    Ok(envelope) => envelope,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => return Received::Timeout,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Received::Closed,
                },
            },
        };
        let mut events = first.events();
        out.push(first);
        while events < max_events {
            let Ok(envelope) = self.rx.try_recv() else { break };
            if events + envelope.events() > max_events {
                self.carry = Some(envelope);
                break;
            }
            events += envelope.events();
            out.push(envelope);
        }
        Received::Some
    }
}
