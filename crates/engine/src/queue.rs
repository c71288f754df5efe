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
            paycore_ledger::Command::BatchItems { items, .. } => items.len().max(1),
            _ => 1,
        }
    }
}

/// Real-time requests go first in every engine batch; background work (batch items) fills
/// what is left, so a large file never delays a checkout.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Priority {
    RealTime,
    Background,
}

/// The API side: submit without blocking, or be told the queue is full.
pub trait Submitter: Send + Sync {
    fn try_submit(&self, envelope: Envelope, priority: Priority) -> Result<(), EngineError>;
    /// Real-time submissions waiting.
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
    /// already waiting, without waiting again, until about `max_events` events: real-time
    /// envelopes first, then background ones.
    fn recv_batch(&mut self, max_events: usize, timeout: Option<Duration>, out: &mut Vec<Envelope>) -> Received;

    /// Whether an envelope is waiting, so that [`Queue::recv_batch`] would not wait. The engine
    /// commits a batch on its committer thread only then, and executes the next meanwhile
    /// (`EngineConfig::pipeline`). `false` (the default) always commits on the engine thread.
    fn has_waiting(&self) -> bool {
        false
    }
}

/// Background submissions that may wait at once (each is a chunk of up to a batch of items).
const BACKGROUND_CAPACITY: usize = 8;

/// A bounded in-process queue of `capacity` real-time submissions, and a small lane for
/// background ones.
pub fn channel(capacity: usize) -> (ChannelSubmitter, ChannelQueue) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let (background_tx, background_rx) = crossbeam_channel::bounded(BACKGROUND_CAPACITY);
    (ChannelSubmitter { tx, background_tx }, ChannelQueue { rx, background_rx, carry: None, background_carry: None })
}

pub struct ChannelSubmitter {
    tx: crossbeam_channel::Sender<Envelope>,
    background_tx: crossbeam_channel::Sender<Envelope>,
}

impl ChannelSubmitter {
    /// Like [`Submitter::try_submit`], but a full queue gives the envelope back (`Ok(Some)`),
    /// for a caller that waits for room rather than refusing (cluster mode's queue consumer).
    pub fn offer(&self, envelope: Envelope, priority: Priority) -> Result<Option<Envelope>, EngineError> {
        let tx = match priority {
            Priority::RealTime => &self.tx,
            Priority::Background => &self.background_tx,
        };
        match tx.try_send(envelope) {
            Ok(()) => Ok(None),
            Err(crossbeam_channel::TrySendError::Full(envelope)) => Ok(Some(envelope)),
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                Err(EngineError::Unavailable("the engine stopped".into()))
            }
        }
    }
}

impl Submitter for ChannelSubmitter {
    fn try_submit(&self, envelope: Envelope, priority: Priority) -> Result<(), EngineError> {
        let tx = match priority {
            Priority::RealTime => &self.tx,
            Priority::Background => &self.background_tx,
        };
        tx.try_send(envelope).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => EngineError::Overloaded,
            crossbeam_channel::TrySendError::Disconnected(_) => EngineError::Unavailable("the engine stopped".into()),
        })
    }

    fn depth(&self) -> usize {
        self.tx.len()
    }
}

pub struct ChannelQueue {
    rx: crossbeam_channel::Receiver<Envelope>,
    background_rx: crossbeam_channel::Receiver<Envelope>,
    /// Envelopes taken but left for the next batch because this one was full.
    carry: Option<Envelope>,
    background_carry: Option<Envelope>,
}

impl ChannelQueue {
    /// Blocks for the first envelope of a batch, from either lane.
    fn first(&mut self, timeout: Option<Duration>) -> Result<Envelope, Received> {
        if let Some(envelope) = self.carry.take().or_else(|| self.rx.try_recv().ok()) {
            return Ok(envelope);
        }
        if let Some(envelope) = self.background_carry.take() {
            return Ok(envelope);
        }
        let deadline = timeout.map(crossbeam_channel::after);
        let never = crossbeam_channel::never();
        let timer = deadline.as_ref().unwrap_or(&never);
        // Both lanes belong to one submitter, so they disconnect together.
        crossbeam_channel::select! {
            recv(self.rx) -> envelope => envelope.map_err(|_| Received::Closed),
            recv(self.background_rx) -> envelope => envelope.map_err(|_| Received::Closed),
            recv(timer) -> _ => Err(Received::Timeout),
        }
    }
}

impl Queue for ChannelQueue {
    fn recv_batch(&mut self, max_events: usize, timeout: Option<Duration>, out: &mut Vec<Envelope>) -> Received {
        let first = match self.first(timeout) {
            Ok(envelope) => envelope,
            Err(received) => return received,
        };
        let mut events = first.events();
        out.push(first);
        let lanes = [(&self.rx, &mut self.carry), (&self.background_rx, &mut self.background_carry)];
        for (rx, carry) in lanes {
            while events < max_events {
                let Some(envelope) = carry.take().or_else(|| rx.try_recv().ok()) else { break };
                if events + envelope.events() > max_events {
                    *carry = Some(envelope);
                    break;
                }
                events += envelope.events();
                out.push(envelope);
            }
        }
        Received::Some
    }

    fn has_waiting(&self) -> bool {
        self.carry.is_some() || self.background_carry.is_some() || !self.rx.is_empty() || !self.background_rx.is_empty()
    }
}
