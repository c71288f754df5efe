//! The API side of the queue: publish a submission to its tenant's partition, wait for the
//! engine's answer on this node's reply subject.
//!
//! Submissions are not published one a message: each lane of each partition has a task that
//! takes every submission waiting for it and publishes them as one JetStream message
//! (`wire::Frames`, each with the sequence number its answer is awaited under), so a burst of
//! requests costs NATS one store, one acknowledgement, one delivery and one engine ack, not one
//! of each a request. A lane has one message at a time waiting for its publish
//! acknowledgement: what queues meanwhile goes next, as one message, when it comes (after at
//! most `STALL`). Nothing else waits to make a message fuller: a lone request goes at once.

use crate::queue::{self, QueueConfig, QueueError, REPLY_HEADER};
use crate::wire::{self, Frames, MessageKind};
use async_nats::{jetstream, Subject};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use paycore_engine::{EngineError, Envelope, Priority, Reply, Submitter};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

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
    /// `<name>.reply.<node>`: where the engines send this node's answers.
    reply_prefix: String,
    next: AtomicU64,
    /// The submissions waiting for their answer, by sequence number.
    waiting: Mutex<HashMap<u64, Answer>>,
    /// More waiting than this is refused with `Overloaded` (503, retry).
    capacity: usize,
    published: Published,
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
            reply_prefix: config.reply_prefix(&node),
            config,
            js,
            node,
            next: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
            capacity,
            published: Published::default(),
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

    /// How many stream messages this node has published, and how many submissions they held
    /// (each message holds what waited for its lane while the one before was acknowledged).
    pub fn published(&self) -> (u64, u64) {
        let published = &self.inner.published;
        (published.messages.load(Ordering::Relaxed), published.submissions.load(Ordering::Relaxed))
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

    /// Answers arrived on `subject` (`…reply.<node>.batch`, `wire::Frames` of replies): each
    /// to its own waiter, the table of waiters locked once for the whole message.
    fn answer(&self, subject: &str, payload: &[u8]) {
        if subject.rsplit('.').next() != Some(wire::REPLY_BATCH) {
            tracing::warn!(%subject, "a reply on an unexpected subject");
            return;
        }
        let mut answers = Vec::new();
        {
            let Ok(mut waiting) = self.waiting.lock() else { return };
            for frame in wire::frames(MessageKind::Reply, payload) {
                match frame {
                    // Its waiter may have timed out already: the answer then went from the store.
                    Ok((seq, reply)) => answers.extend(waiting.remove(&seq).map(|answer| (answer, reply))),
                    Err(error) => {
                        // The requests of the frames not read time out and are answered from the store.
                        tracing::error!(%error, "an engine's replies cannot be read");
                        break;
                    }
                }
            }
        }
        for (answer, reply) in answers {
            answer(wire::decode_reply(reply).unwrap_or_else(|error| {
                tracing::error!(%error, "an engine's reply cannot be read");
                Err(EngineError::Unavailable(format!("an engine's reply cannot be read: {error}")))
            }));
        }
    }

    /// Publishes one lane's submissions as they come, all that are waiting in each message,
    /// until the submitter is dropped; answers `NoReply` to those whose answer did not come
    /// within the reply timeout of their message's acknowledgement.
    ///
    /// One message at a time: while a message waits for its publish acknowledgement, what
    /// comes next waits too, and goes as one message when the acknowledgement comes (or after
    /// [`STALL`], when NATS is slow to acknowledge). Publishing each submission as soon as the
    /// lane's task ran made messages of about one submission under load: the task is woken by
    /// the first request and runs before the next one is read.
    async fn publish_lane(
        self: Arc<Inner>,
        partition: u32,
        priority: Priority,
        mut taken: mpsc::UnboundedReceiver<(u64, Vec<u8>)>,
    ) {
        let subject = Subject::from(self.config.command_subject(partition, priority));
        let mut lane = Lane { pending: Vec::new(), acks: FuturesUnordered::new(), deadlines: VecDeque::new() };
        let mut last_sent = Instant::now();
        let mut open = true;
        loop {
            if open {
                // What came since the last look goes in the next message too.
                while let Ok(submission) = taken.try_recv() {
                    lane.pending.push(submission);
                }
            }
            if !lane.pending.is_empty() && (lane.acks.is_empty() || last_sent.elapsed() >= STALL) {
                self.publish_pending(&subject, &mut lane).await;
                last_sent = Instant::now();
                continue;
            }
            if !open && lane.pending.is_empty() && lane.acks.is_empty() && lane.deadlines.is_empty() {
                return;
            }
            let deadline = lane.deadlines.front().map(|(at, _)| *at);
            // While a message waits for its acknowledgement (and not for longer than `STALL`),
            // what comes stays in the channel: it is taken when the acknowledgement comes.
            let held = !lane.acks.is_empty() && last_sent.elapsed() < STALL;
            tokio::select! {
                biased;
                Some((seqs, published)) = lane.acks.next(), if !lane.acks.is_empty() => match published {
                    Ok(()) => lane.deadlines.push_back((Instant::now() + self.config.reply_timeout, seqs)),
                    Err(Unacked::Refused(cause)) => self.unpublished(seqs, &cause),
                    Err(Unacked::Unknown(cause)) => {
                        tracing::warn!(%cause, "no acknowledgement from the queue: the requests may still be executed");
                        self.no_reply(seqs);
                    }
                },
                received = taken.recv_many(&mut lane.pending, 4096), if open && !held => open = received > 0,
                () = tokio::time::sleep_until(last_sent + STALL), if held => {}
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    let now = Instant::now();
                    while lane.deadlines.front().is_some_and(|(at, _)| *at <= now) {
                        if let Some((_, seqs)) = lane.deadlines.pop_front() {
                            self.no_reply(seqs);
                        }
                    }
                }
                else => return,
            }
        }
    }

    /// Publishes what is waiting in `lane`, as few messages as fit.
    async fn publish_pending(&self, subject: &Subject, lane: &mut Lane) {
        let mut message = Frames::default();
        let mut seqs = Vec::new();
        for (seq, submission) in std::mem::take(&mut lane.pending) {
            if !message.fits(submission.len()) {
                self.publish(subject, std::mem::take(&mut message), std::mem::take(&mut seqs), lane).await;
            }
            message.push(seq, &submission);
            seqs.push(seq);
        }
        self.publish(subject, message, seqs, lane).await;
    }

    /// Publishes one message of submissions; its acknowledgement is awaited among the lane's
    /// (`Lane::acks`). A message the client could not send, or that JetStream refused, answers
    /// each of its requests `Unavailable`: nothing of it will be executed. One whose
    /// acknowledgement did not come answers them `NoReply` (see [`Unacked`]).
    async fn publish(&self, subject: &Subject, message: Frames, seqs: Vec<u64>, lane: &mut Lane) {
        let Some(&first) = seqs.first() else { return };
        self.published.messages.fetch_add(1, Ordering::Relaxed);
        self.published.submissions.fetch_add(seqs.len() as u64, Ordering::Relaxed);
        let mut headers = async_nats::HeaderMap::new();
        // Unique per message: the node's id and its first request's number.
        headers.insert("Nats-Msg-Id", format!("{}-{first}", self.node).as_str());
        headers.insert(REPLY_HEADER, self.reply_prefix.as_str());
        match self.js.publish_with_headers(subject.clone(), headers, message.into_bytes().into()).await {
            Ok(ack) => lane.acks.push(Box::pin(async move {
                let published = ack.await.map(|_| ()).map_err(|e| unacked(&e));
                (seqs, published)
            })),
            Err(e) => self.unpublished(seqs, &e.to_string()),
        }
    }

    /// The requests of a message JetStream did not take: none of them will be executed.
    fn unpublished(&self, seqs: Vec<u64>, cause: &str) {
        tracing::warn!(%cause, "cannot publish to the queue");
        for seq in seqs {
            if let Some(answer) = self.take(seq) {
                answer(Err(EngineError::Unavailable(format!("the queue cannot take the request: {cause}"))));
            }
        }
    }

    /// The requests of a message whose reply timeout passed: those still waiting are answered
    /// `NoReply` (the API answers them from the store).
    fn no_reply(&self, seqs: Vec<u64>) {
        for seq in seqs {
            if let Some(answer) = self.take(seq) {
                answer(Err(EngineError::NoReply));
            }
        }
    }
}

/// How long a lane's next message waits for the acknowledgement of the one before: past this,
/// it goes without waiting (a NATS that is restarting, or slow, holds an acknowledgement for up
/// to its timeout, 5 s). Acknowledgements take well under a millisecond on a quiet machine.
const STALL: Duration = Duration::from_millis(20);

type Acked = Pin<Box<dyn Future<Output = (Vec<u64>, Result<(), Unacked>)> + Send>>;

/// Why a published message has no acknowledgement.
#[derive(Debug)]
enum Unacked {
    /// JetStream answered that it did not store the message (no stream, or an error of its
    /// API): none of its requests will be executed.
    Refused(String),
    /// No answer came (a timeout, a lost connection). The message may be stored, or still in
    /// the client's buffer, which sends it once it has reconnected: a NATS restart applied
    /// such requests seconds after they had been answered `ledger_unavailable` ("nothing was
    /// applied"). So they are answered from the store, as a missing reply is.
    Unknown(String),
}

fn unacked(error: &jetstream::context::PublishError) -> Unacked {
    use jetstream::context::PublishErrorKind as Kind;
    let refused = match error.kind() {
        Kind::StreamNotFound | Kind::WrongLastMessageId | Kind::WrongLastSequence | Kind::MaxPayloadExceeded => true,
        // An error answer of JetStream's API; `Other` is also an answer that cannot be read.
        Kind::Other => std::error::Error::source(error).is_some_and(|source| source.is::<jetstream::Error>()),
        Kind::TimedOut | Kind::BrokenPipe | Kind::MaxAckPending => false,
    };
    if refused {
        Unacked::Refused(error.to_string())
    } else {
        Unacked::Unknown(error.to_string())
    }
}

/// A lane's task's state.
struct Lane {
    /// The submissions (sequence number, encoded) not yet published.
    pending: Vec<(u64, Vec<u8>)>,
    /// The messages published and not yet acknowledged, with their requests' numbers.
    acks: FuturesUnordered<Acked>,
    /// The requests of the acknowledged messages, by when their reply timeout ends (in that
    /// order: every message has the same timeout from its acknowledgement).
    deadlines: VecDeque<(Instant, Vec<u64>)>,
}

/// How many messages and submissions this node published (tests read it).
#[derive(Default)]
struct Published {
    messages: AtomicU64,
    submissions: AtomicU64,
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
