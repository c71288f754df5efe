//! The wire format between API nodes and engines: what an API node publishes (a
//! [`Submission`]) and what the engine answers (`Result<Reply, EngineError>`).
//!
//! A message is one byte of format version ([`WIRE_VERSION`]), then the value in postcard
//! (serde's derives on the engine's and the ledger's types, behind their `serde` features):
//! varints for integers, ids as 16 bytes (and a length byte), a currency as its three-letter
//! code, no field names. A bulk submission of
//! [`BATCH_EVENTS_MAX`](paycore_ledger::BATCH_EVENTS_MAX) transfers stays well under
//! [`PAYLOAD_MAX_BYTES`] (the tests measure it: 491 365 bytes, 639 131 at the widest).
//!
//! Decoding takes any bytes and never panics: another version, a truncated or malformed
//! message, a value outside its set (an unknown currency, an amount or balance out of range, an
//! error text the ledger does not make) or bytes after the value are a [`WireError`].
//!
//! On NATS, submissions and replies travel in [`Frames`]: several to a message, each with the
//! API node's sequence number of its request and its length before it.
//!
//! There are no mirror types: the messages are the engine's own types, so a field added to
//! them is on the wire at once (and changes the format: bump [`WIRE_VERSION`]).

use paycore_engine::{EngineError, Reply, Submission};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;

/// The format version, the first byte of every message. Nodes of one cluster run the same
/// paycore version; a message of another version is refused, never guessed at.
pub const WIRE_VERSION: u8 = 6;

/// NATS's default `max_payload` (1 MiB): the largest message a server accepts unless
/// configured otherwise.
pub const PAYLOAD_MAX_BYTES: usize = 1024 * 1024;

/// Which message a [`WireError`] is about.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MessageKind {
    Submission,
    Reply,
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MessageKind::Submission => "submission",
            MessageKind::Reply => "reply",
        })
    }
}

/// Why bytes are not a message of this version.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum WireError {
    #[error("empty {kind} message: a message starts with its wire format version")]
    Empty { kind: MessageKind },
    #[error(
        "message in wire format version {found}, but this node speaks version {expected}: \
         run the same paycore version on every node"
    )]
    Version { found: u8, expected: u8 },
    /// `path` locates the value at fault. Postcard has no names: `[2]` is a struct's third
    /// field (or a list's third element), `.1` an enum's second variant; so `[0][1].0[1]` in a
    /// submission is `request.command`, `CreateAccount`, its `currency`.
    #[error("malformed {kind} message at `{path}`: {}", reason(.cause))]
    Malformed {
        kind: MessageKind,
        path: String,
        #[source]
        cause: postcard::Error,
    },
    #[error("{kind} message has {extra} bytes after its end")]
    TrailingBytes { kind: MessageKind, extra: usize },
}

/// What a postcard error means here: a refusal of our own checks comes out of postcard as a
/// bare "custom" error, so it is named.
fn reason(cause: &postcard::Error) -> String {
    match cause {
        postcard::Error::SerdeDeCustom => "a value outside its set (an unknown currency, an amount or balance \
                                           counter out of range, an error text the ledger does not make)"
            .to_owned(),
        other => other.to_string(),
    }
}

pub fn encode_submission(submission: &Submission) -> Vec<u8> {
    encode(submission)
}

pub fn decode_submission(bytes: &[u8]) -> Result<Submission, WireError> {
    decode(MessageKind::Submission, bytes)
}

pub fn encode_reply(reply: &Result<Reply, EngineError>) -> Vec<u8> {
    encode(reply)
}

pub fn decode_reply(bytes: &[u8]) -> Result<Result<Reply, EngineError>, WireError> {
    decode(MessageKind::Reply, bytes)
}

/// Several messages in one NATS message: the version byte ([`WIRE_VERSION`]), then frames of
/// a sequence number (8 bytes, little-endian), a length (4 bytes, little-endian) and the bytes
/// [`encode_submission`] or [`encode_reply`] made. The leading version byte makes a message
/// from a node of another version a clear [`WireError::Version`], not frames misread. An API node publishes the submissions waiting for one lane of one
/// partition as one JetStream message, and the engine answers a whole batch to each API node
/// in one message: NATS stores, routes and acknowledges, and both sides read and write, a
/// fraction of the messages they would one request a message. The sequence number is the API
/// node's, the key of the request that waits for the answer.
pub struct Frames {
    bytes: Vec<u8>,
    count: usize,
}

/// The last token of the subject a reply [`Frames`] message is sent on, under the API node's
/// reply prefix.
pub const REPLY_BATCH: &str = "batch";

/// A frame's header: the sequence number and the length.
const FRAME_HEADER: usize = 12;

/// The most bytes of frames in one message: NATS's payload limit counts the headers too
/// (`Nats-Msg-Id`, `Paycore-Reply`: under 200 bytes), so some room is left for them.
pub const FRAMES_MAX_BYTES: usize = PAYLOAD_MAX_BYTES - 4096;

impl Default for Frames {
    fn default() -> Self {
        Frames { bytes: vec![WIRE_VERSION], count: 0 }
    }
}

impl Frames {
    /// Whether a message of `len` bytes still fits in [`FRAMES_MAX_BYTES`] with what is here
    /// (an empty one takes any message: each fits a NATS payload alone, `tests/wire.rs`).
    pub fn fits(&self, len: usize) -> bool {
        self.count == 0 || self.bytes.len() + FRAME_HEADER + len <= FRAMES_MAX_BYTES
    }

    pub fn push(&mut self, seq: u64, message: &[u8]) {
        self.bytes.extend_from_slice(&seq.to_le_bytes());
        // A message is far under 4 GiB (under `PAYLOAD_MAX_BYTES`).
        self.bytes.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_le_bytes());
        self.bytes.extend_from_slice(message);
        self.count += 1;
    }

    /// How many frames are here.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// The frames of a message [`Frames`] made, each a sequence number and its message's bytes
/// (for [`decode_submission`] or [`decode_reply`]); a cut or overlong frame ends the walk with
/// [`WireError::TrailingBytes`] (the bytes it could not read as a frame), an empty message or
/// one of another version is one [`WireError::Empty`] or [`WireError::Version`]; never a panic.
pub fn frames(kind: MessageKind, bytes: &[u8]) -> impl Iterator<Item = Result<(u64, &[u8]), WireError>> {
    let (mut first, mut rest) = match bytes.split_first() {
        None => (Some(Err(WireError::Empty { kind })), &[][..]),
        Some((&WIRE_VERSION, rest)) => (None, rest),
        Some((&found, _)) => (Some(Err(WireError::Version { found, expected: WIRE_VERSION })), &[][..]),
    };
    std::iter::from_fn(move || {
        if let Some(refused) = first.take() {
            return Some(refused);
        }
        if rest.is_empty() {
            return None;
        }
        let frame = rest.split_first_chunk::<8>().and_then(|(seq, after)| {
            let (len, after) = after.split_first_chunk::<4>()?;
            let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
            (after.len() >= len).then(|| (u64::from_le_bytes(*seq), after.split_at(len)))
        });
        match frame {
            Some((seq, (message, after))) => {
                rest = after;
                Some(Ok((seq, message)))
            }
            None => {
                let extra = rest.len();
                rest = &[];
                Some(Err(WireError::TrailingBytes { kind, extra }))
            }
        }
    })
}

/// Serializing these types cannot fail (no maps, no sequences of unknown length, every
/// currency code three bytes); if it ever did, the message is the bare version byte, which
/// every decoder refuses as truncated rather than a panic here.
fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(WIRE_VERSION);
    postcard::serialize_with_flavor(value, Bytes(out)).unwrap_or_else(|_| vec![WIRE_VERSION])
}

/// A growing `Vec` that already holds the version byte. Postcard's own `Vec` flavor starts
/// empty, and its `Extend` flavor pushes each byte through an iterator (a third slower).
struct Bytes(Vec<u8>);

impl postcard::ser_flavors::Flavor for Bytes {
    type Output = Vec<u8>;

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

fn decode<T: DeserializeOwned>(kind: MessageKind, bytes: &[u8]) -> Result<T, WireError> {
    let (&version, body) = bytes.split_first().ok_or(WireError::Empty { kind })?;
    if version != WIRE_VERSION {
        return Err(WireError::Version { found: version, expected: WIRE_VERSION });
    }
    match postcard::take_from_bytes::<T>(body) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(WireError::TrailingBytes { kind, extra: rest.len() }),
        Err(cause) => Err(WireError::Malformed { kind, path: fault_path::<T>(body), cause }),
    }
}

/// Where decoding `body` fails: decoded a second time, tracking the path, only once it has
/// failed (tracking costs on every value).
fn fault_path<T: DeserializeOwned>(body: &[u8]) -> String {
    let mut deserializer = postcard::Deserializer::from_bytes(body);
    match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Err(error) => error.path().to_string(),
        Ok(_) => "?".to_owned(),
    }
}
