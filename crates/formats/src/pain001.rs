//! ISO 20022 pain.001 input, read as a stream of XML events.

use crate::common::{self, Collector, Decimal, DecimalSum};
use crate::iban::{iban_problem, is_bic};
use crate::report::Digits;
use crate::{Diagnostic, FatalError, Item, Summary};
use quick_xml::encoding::EncodingError;
use quick_xml::errors::IllFormedError;
use quick_xml::events::{BytesStart, BytesText, Event};
use quick_xml::Reader;
use std::io::{BufRead, Read};

/// Namespaces accepted, with the variant name each one means.
const NAMESPACES: &[(&str, &str)] = &[
    ("urn:iso:std:iso:20022:tech:xsd:pain.001.001.03", "pain.001.001.03"),
    ("urn:iso:std:iso:20022:tech:xsd:pain.001.001.09", "pain.001.001.09"),
    ("urn:iso:std:iso:20022:tech:xsd:pain.001.001.10", "pain.001.001.10"),
    ("urn:iso:std:iso:20022:tech:xsd:pain.001.001.11", "pain.001.001.11"),
    ("urn:iso:std:iso:20022:tech:xsd:pain.001.001.12", "pain.001.001.12"),
    ("urn:iso:std:iso:20022:tech:xsd:pain.001.003.03", "pain.001.003.03"),
    ("http://www.six-interbank-clearing.com/de/pain.001.001.03.ch.02.xsd", "pain.001.001.03.ch.02"),
];
const EXPECTED_NAMESPACES: &str = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.03, .09, .10, .11 or .12 (urn:iso:std:iso:20022:tech:xsd:pain.001.001.NN), the German DK urn:iso:std:iso:20022:tech:xsd:pain.001.003.03, or the Swiss http://www.six-interbank-clearing.com/de/pain.001.001.03.ch.02.xsd";

/// Element names the parser looks at, each with its tag: [`KNOWN`] lists them, `tag::NAME`
/// is a name's position in it plus one (0 is any other name), and [`tag_of`] finds a name's tag
/// through a table of 64 slots that no two known names share ([`name_slot`], checked when the
/// crate is compiled), then one comparison. Paths are matched on tags, not on text.
macro_rules! known_names {
    ($($tag:ident $name:literal,)*) => {
        const KNOWN: &[&str] = &[$($name),*];
        mod tag {
            #[allow(non_camel_case_types, clippy::upper_case_acronyms, dead_code)]
            #[repr(u8)]
            enum Tags { Other, $($tag),* }
            $(pub(super) const $tag: u8 = Tags::$tag as u8;)*
        }
    };
}

/// Each known name's tag in its [`slot`].
#[allow(clippy::cast_possible_truncation)] // fewer than 256 names
const TAG_SLOTS: [u8; 64] = {
    let mut slots = [0u8; 64];
    let mut i = 0;
    while i < KNOWN.len() {
        let slot = slot(packed(KNOWN[i].as_bytes()));
        assert!(slots[slot] == 0, "two known names share a slot: choose another multiplier");
        slots[slot] = (i + 1) as u8;
        i += 1;
    }
    slots
};

/// A packed name's slot in [`TAG_SLOTS`]: its two halves mixed by a multiplication (by a
/// multiplier found by trying, under which no two known names share a slot).
#[allow(clippy::cast_possible_truncation)] // the halves, and the top 6 bits
const fn slot(packed: u128) -> usize {
    let word = packed as u64 ^ (packed >> 64) as u64;
    (word.wrapping_mul(0x91ec_4ff7_7b46_008d) >> 58) as usize
}

/// The tag of an element's local name.
fn tag_of(name: &[u8]) -> u8 {
    if name.len() > 16 {
        return 0;
    }
    tag_of_packed(packed(name), name.len())
}

/// The tag of the name of `length` bytes that packs as `packed`.
fn tag_of_packed(packed: u128, length: usize) -> u8 {
    let tag = TAG_SLOTS[slot(packed)];
    let index = usize::from(tag).wrapping_sub(1);
    match (KNOWN.get(index), KNOWN_PACKED.get(index)) {
        (Some(known), Some(&pack)) if pack == packed && known.len() == length => tag,
        _ => 0,
    }
}

/// Each known name as one integer ([`packed`]), by tag less one.
const KNOWN_PACKED: [u128; KNOWN.len()] = {
    let mut packs = [0u128; KNOWN.len()];
    let mut i = 0;
    while i < KNOWN.len() {
        assert!(KNOWN[i].len() <= 16, "a known name is at most 16 bytes long");
        packs[i] = packed(KNOWN[i].as_bytes());
        i += 1;
    }
    packs
};

/// A name of at most 16 bytes as one integer (little-endian, zeros after it; a name ending
/// in zero bytes packs as the name without them, so lengths are compared too).
const fn packed(name: &[u8]) -> u128 {
    let mut key = 0u128;
    let mut i = 0;
    while i < name.len() && i < 16 {
        key |= (name[i] as u128) << (8 * i);
        i += 1;
    }
    key
}

/// The `length` bytes at `at` in `bytes` as [`packed`] makes them, by one load of the 16
/// bytes there; `None` when `bytes` has fewer than 16 there, or `length` is more than 16.
fn packed_at(bytes: &[u8], at: usize, length: usize) -> Option<u128> {
    let chunk = <[u8; 16]>::try_from(bytes.get(at..at.checked_add(16)?)?).ok()?;
    let mask = match length {
        16 => u128::MAX,
        0..16 => (1u128 << (8 * length)) - 1,
        _ => return None,
    };
    Some(u128::from_le_bytes(chunk) & mask)
}

/// [`tag_of`] the name of `length` bytes at `at` in `bytes`, packed by one load when
/// `bytes` has 16 bytes there.
fn tag_of_at(bytes: &[u8], at: usize, length: usize) -> u8 {
    match packed_at(bytes, at, length) {
        Some(pack) => tag_of_packed(pack, length),
        None => tag_of(bytes.get(at..at.saturating_add(length)).unwrap_or_default()),
    }
}

known_names! {
    AMT "Amt",
    BIC "BIC",
    BICFI "BICFI",
    CCY_OF_TRF "CcyOfTrf",
    CDT_TRF_TX_INF "CdtTrfTxInf",
    CDTR_ACCT "CdtrAcct",
    CDTR_AGT "CdtrAgt",
    CSTMR_CDT_TRF_INITN "CstmrCdtTrfInitn",
    CTRL_SUM "CtrlSum",
    DBTR_ACCT "DbtrAcct",
    DOCUMENT "Document",
    DT "Dt",
    DT_TM "DtTm",
    END_TO_END_ID "EndToEndId",
    EQVT_AMT "EqvtAmt",
    FIN_INSTN_ID "FinInstnId",
    GRP_HDR "GrpHdr",
    IBAN "IBAN",
    ID "Id",
    INSTD_AMT "InstdAmt",
    INSTR_ID "InstrId",
    MSG_ID "MsgId",
    NB_OF_TXS "NbOfTxs",
    OTHR "Othr",
    PMT_ID "PmtId",
    PMT_INF "PmtInf",
    PMT_INF_ID "PmtInfId",
    REQD_EXCTN_DT "ReqdExctnDt",
    RMT_INF "RmtInf",
    USTRD "Ustrd",
}

/// The most characters of remittance information kept (ISO's `Max140Text`).
const REMITTANCE_MAX: usize = 140;

/// Nesting deeper than this is fatal; pain.001 needs about 12 levels.
const DEPTH_MAX: usize = 64;

/// A figure read from the file with the line it is on.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
struct Figure {
    text: Option<String>,
    line: u64,
}

/// Control figures and what the transactions actually add up to, for the group header or one
/// payment information block.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
struct Control {
    nb_of_txs: Figure,
    ctrl_sum: Figure,
    count: u64,
    sum: DecimalSum,
}

/// One `PmtInf` block, while it is being read.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
struct Block {
    number: u64,
    id: Option<String>,
    payer: Option<String>,
    date_error: Option<String>,
    transactions: u64,
    control: Control,
}

/// One `CdtTrfTxInf`, while it is being read.
#[derive(Default)]
struct Transaction {
    line: u64,
    location: String,
    instruction_id: Option<String>,
    end_to_end_id: Option<String>,
    /// `RmtInf/Ustrd`, its lines joined by a space, cut at [`REMITTANCE_MAX`] characters.
    remittance: Option<String>,
    amount: Option<String>,
    currency: Option<String>,
    equivalent: bool,
    transfer_currency: Option<String>,
    payee: Option<String>,
    /// The payee was given as `CdtrAcct/Id/IBAN` (so its checksum is checked).
    payee_is_iban: bool,
    /// `CdtrAgt/FinInstnId/BIC` (.03) or `BICFI` (.08 on), with the element's name.
    creditor_bic: Option<(&'static str, String)>,
}

struct Frame {
    name: &'static str,
    has_children: bool,
}

struct Parser<'c, 's> {
    out: &'c mut Collector<'s>,
    line: u64,
    stack: Vec<Frame>,
    /// The tags of `stack`'s names, kept beside it: the path matched at every start and end
    /// tag, without collecting it each time.
    names: Vec<u8>,
    /// Character content of the innermost open element since its start tag.
    text: String,
    text_line: u64,
    variant: Option<&'static str>,
    message_id: Option<String>,
    group: Control,
    blocks: u64,
    block: Block,
    transaction: Transaction,
    control_errors: Vec<Diagnostic>,
    root_closed: bool,
    /// The byte offset (after a byte order mark) where the event being handled starts.
    position: u64,
    /// Where the current `PmtInf` start tag and its first `CdtTrfTxInf` start tag are.
    block_start: u64,
    block_first_transaction: Option<u64>,
    /// The root's and its child's names as written (prefix included).
    root_names: Vec<Vec<u8>>,
    /// The second part of a file cut in two: see [`Resume`].
    resume: Option<Resume>,
    /// The names of the open elements as written: an end tag must name the element it
    /// closes ([`Parser::end_name`]). Names other than the known ones are kept in
    /// `open_bytes`, one after the other.
    open_names: Vec<OpenName>,
    open_bytes: Vec<u8>,
    /// `/Document/CstmrCdtTrfInitn/PmtInf[N]/CdtTrfTxInf[` for the current block.
    location_prefix: String,
    /// The last transaction's amount and currency texts, cleared, kept for their buffers.
    spare_amount: String,
    spare_currency: String,
}

/// `value` in the buffer `spare` lends (taken from it).
fn refill(spare: &mut String, value: &str) -> String {
    let mut text = std::mem::take(spare);
    text.clear();
    text.push_str(value);
    text
}

/// The name of an open element, as written.
#[derive(Clone, Copy)]
enum OpenName {
    /// The known name with this tag.
    Known(u8),
    /// Another, in `Parser::open_bytes` from this offset on.
    Stored(usize),
}

/// What the second part of a file cut in two does at its first transaction, the one at the
/// cut: take up the line, the block's count of transactions and the record count there.
struct Resume {
    line: u64,
    in_block: u64,
    /// The block's header as the second part read it, at the cut (`None` until then).
    header: Option<BlockHeader>,
    /// The control figures of the block the cut falls in, held back when that block ends:
    /// its transactions before the cut are the first part's.
    straddle: Option<Control>,
}

/// What a block's transactions take from its header, compared where a file is cut.
#[derive(PartialEq, Eq, Debug)]
struct BlockHeader {
    number: u64,
    id: Option<String>,
    payer: Option<String>,
    date_error: Option<String>,
    nb_of_txs: Figure,
    ctrl_sum: Figure,
}

impl Block {
    fn header(&self) -> BlockHeader {
        BlockHeader {
            number: self.number,
            id: self.id.clone(),
            payer: self.payer.clone(),
            date_error: self.date_error.clone(),
            nb_of_txs: self.control.nb_of_txs.clone(),
            ctrl_sum: self.control.ctrl_sum.clone(),
        }
    }
}

impl<'c, 's> Parser<'c, 's> {
    fn new(out: &'c mut Collector<'s>) -> Self {
        Parser {
            out,
            line: 1,
            stack: Vec::new(),
            names: Vec::new(),
            text: String::new(),
            text_line: 1,
            variant: None,
            message_id: None,
            group: Control::default(),
            blocks: 0,
            block: Block::default(),
            transaction: Transaction::default(),
            control_errors: Vec::new(),
            root_closed: false,
            position: 0,
            block_start: 0,
            block_first_transaction: None,
            root_names: Vec::new(),
            resume: None,
            open_names: Vec::new(),
            open_bytes: Vec::new(),
            location_prefix: String::new(),
            spare_amount: String::new(),
            spare_currency: String::new(),
        }
    }
}

pub(crate) fn parse<R: BufRead>(input: R, out: &mut Collector<'_>, summary: &mut Summary) -> Result<(), FatalError> {
    let mut parser = Parser::new(out);
    read_events(&mut parser, input, u64::MAX)?;
    parser.finish(summary)
}

/// The bytes read from the file at a time into the window that events are read from.
const WINDOW_BYTES: usize = 1 << 20;

/// Reads events into `parser` until the end of the file, or until the next event would
/// start at or past `stop` (a byte offset); returns the offset where reading stopped.
///
/// Events are read from a window of the file in memory ([`WINDOW_BYTES`] at a time). A
/// window ends just before its last `<`, so that it ends between two events; when that `<`
/// was not the start of one (it is in a comment, a CDATA section or an attribute value), the
/// event it cuts fails to parse, and is read again from its start in a larger window. Events
/// a prefix of the input gives whole are the events the whole input gives, so the events are
/// the same whatever the windows.
///
/// Most events of a payment file are plain: a start tag with no attribute (`<Name>`), an end
/// tag (`</Name>`), text up to the next `<`. [`plain_event`] reads those, giving the events
/// quick-xml would give; everything else (attributes, comments, CDATA, processing
/// instructions, whatever is not well-formed) is read by quick-xml's slice reader, one event
/// at a time from where the plain reading stopped. Its reader starts afresh each time, so end
/// tags are matched against start tags by `parser` ([`Parser::end_name`]), as quick-xml
/// matches them.
fn read_events<R: Read>(parser: &mut Parser<'_, '_>, input: R, stop: u64) -> Result<u64, FatalError> {
    read_events_in_windows(parser, input, stop, WINDOW_BYTES)
}

/// [`read_events`] with windows of `window_bytes` (tests try many sizes).
fn read_events_in_windows<R: Read>(
    parser: &mut Parser<'_, '_>,
    mut input: R,
    stop: u64,
    window_bytes: usize,
) -> Result<u64, FatalError> {
    let window_bytes = window_bytes.max(1);
    // `window[..filled]` holds the input from offset `base` on.
    let mut window: Vec<u8> = Vec::new();
    let mut filled = 0usize;
    let mut base = 0u64;
    // The least the window holds before it is read, unless the input ends first.
    let mut want = window_bytes;
    let mut ended = false;
    loop {
        while !ended && filled < want {
            if window.len() < want {
                window.resize(want, 0);
            }
            let read = loop {
                match input.read(&mut window[filled..want]) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            }?;
            filled += read;
            ended = read == 0;
        }
        let Some(end) = window_end(&window[..filled], ended) else {
            // No `<` past the window's first byte yet.
            want = filled.saturating_mul(2);
            continue;
        };
        let events = &window[..end.at];
        let events_text = std::str::from_utf8(events).ok();
        // Where the next event starts. quick-xml's reader skips a byte order mark at the start
        // of its input (after the one `parse` skips).
        let mut at = if base == 0 && events.starts_with(b"\xEF\xBB\xBF") { 3 } else { 0 };
        let retry = loop {
            let position = base + at as u64;
            if position >= stop {
                return Ok(position);
            }
            if at == end.at {
                if end.cut {
                    return Err(parser.too_long());
                }
                if ended {
                    return Ok(position);
                }
                break None;
            }
            let rest = &events[at..];
            if let Some(length) = parser.closes_known(rest) {
                // The end tag of the innermost element, a known name: checked as one integer.
                parser.position = position;
                parser.close(parser.line)?;
                at += length;
                continue;
            }
            let length = match plain_event(rest, events_text.and_then(|text| text.get(at..))) {
                Some((event, length)) => {
                    if length > common::LINE_BYTES_MAX {
                        return Err(parser.too_long());
                    }
                    parser.position = position;
                    match event {
                        Plain::Start(start, tag, lines) => {
                            let line = parser.line;
                            parser.line += lines;
                            parser.start(&start, tag, line)?;
                        }
                        Plain::End(name) => parser.end(name, parser.line)?,
                        Plain::Text(raw, text) => parser.text(raw, text)?,
                    }
                    length
                }
                None => {
                    // `rest` starts with `<`: the reader reads one markup event, up to its `>`.
                    let mut reader = Reader::from_reader(rest);
                    let config = reader.config_mut();
                    config.check_end_names = false;
                    config.allow_unmatched_ends = true;
                    let event = reader.read_event();
                    // What the reader took, a byte order mark it skipped included.
                    let length = rest.len() - reader.get_ref().len();
                    if length > common::LINE_BYTES_MAX {
                        return Err(parser.too_long());
                    }
                    match event {
                        Ok(Event::Eof) => {
                            at = end.at;
                            continue;
                        }
                        Ok(event) => {
                            parser.position = position;
                            parser.event(event)?;
                        }
                        Err(e) if end.last || end.at - at > common::LINE_BYTES_MAX => {
                            return Err(parser.malformed(parser.line, format!("the file is not well-formed XML: {e}")));
                        }
                        // The window may have cut this event: read it again in a larger one.
                        Err(_) => break Some(at),
                    }
                    length
                }
            };
            at += length;
        };
        let done = retry.unwrap_or(end.at);
        window.copy_within(done..filled, 0);
        filled -= done;
        base += done as u64;
        want = match retry {
            Some(_) => filled.saturating_mul(2).max(window_bytes),
            None => window_bytes,
        };
    }
}

/// A plain event: see [`read_events`].
enum Plain<'a> {
    /// A start tag, its name's tag and the line ends in it.
    Start(BytesStart<'a>, u8, u64),
    End(&'a [u8]),
    /// Text, and the same as `str` when the window is valid UTF-8.
    Text(&'a [u8], Option<&'a str>),
}

/// The plain event `bytes` start with, as quick-xml would read it, and its length; `None`
/// when it is not plain (quick-xml reads it then). `text` is `bytes` as text when the window
/// is valid UTF-8 (it usually is: checked once for the window rather than event by event).
#[inline(always)] // its event is matched at once: no `Plain` made
fn plain_event<'a>(bytes: &'a [u8], text: Option<&'a str>) -> Option<(Plain<'a>, usize)> {
    let text_of = |range: std::ops::Range<usize>| match text {
        Some(text) => text.get(range),
        None => std::str::from_utf8(bytes.get(range)?).ok(),
    };
    match bytes {
        [b'<', b'/', rest @ ..] => {
            // An end tag with nothing but its name: quick-xml trims what follows a name.
            let length = rest.iter().position(|&b| BYTE_CLASSES[usize::from(b)] != PLAIN)?;
            if rest.get(length) != Some(&b'>') || length == 0 {
                return None;
            }
            Some((Plain::End(&rest[..length]), length + 3))
        }
        [b'<', first, ..] if !matches!(first, b'!' | b'?') => {
            // quick-xml's `ElementParser`: up to the first `>` outside quotes.
            let content = &bytes[1..];
            let mut at = content.iter().position(|&b| BYTE_CLASSES[usize::from(b)] != PLAIN)?;
            let name_length = at;
            let mut quote = 0u8;
            loop {
                let byte = *content.get(at)?;
                match (quote, byte) {
                    (0, b'>') => break,
                    (0, b'"' | b'\'') => quote = byte,
                    (0, _) => {}
                    _ if byte == quote => quote = 0,
                    _ => {}
                }
                at += 1;
            }
            let content = &content[..at];
            // An empty name, or `<name/>` (an empty element): quick-xml's.
            if name_length == 0 || content.last() == Some(&b'/') {
                return None;
            }
            let start = if name_length == content.len() {
                match tag_of_at(bytes, 1, name_length) {
                    // A known name is that name's text.
                    tag @ 1.. => {
                        Plain::Start(BytesStart::from_content(KNOWN[usize::from(tag) - 1], name_length), tag, 0)
                    }
                    0 => {
                        let name = text_of(1..1 + name_length)?;
                        Plain::Start(BytesStart::from_content(name, name_length), tag_of(local_part(content)), 0)
                    }
                }
            } else {
                let text = text_of(1..1 + at)?;
                // What quick-xml's `name_len` takes as the name: up to the first whitespace.
                let name_length = content.iter().position(|&b| is_xml_whitespace_byte(b)).unwrap_or(content.len());
                let tag = tag_of(local_part(&content[..name_length]));
                Plain::Start(BytesStart::from_content(text, name_length), tag, newlines(content))
            };
            Some((start, at + 2))
        }
        [b'<', ..] | [] => None,
        _ => {
            let length = memchr::memchr(b'<', bytes).unwrap_or(bytes.len());
            Some((Plain::Text(&bytes[..length], text.and_then(|text| text.get(..length))), length))
        }
    }
}

/// What ends a plain name (see [`plain_event`]): `>`, XML whitespace and quotes have
/// [`BYTE_CLASSES`] other than `PLAIN`.
const PLAIN: u8 = 0;
const BYTE_CLASSES: [u8; 256] = {
    let mut classes = [PLAIN; 256];
    let mut i = 0;
    let ends = b"> \t\r\n\"'";
    while i < ends.len() {
        classes[ends[i] as usize] = 1;
        i += 1;
    }
    classes
};

fn is_xml_whitespace_byte(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

/// A name's part after its prefix (`a:Name` gives `Name`), as quick-xml's `local_name` cuts it.
fn local_part(name: &[u8]) -> &[u8] {
    match name.iter().position(|&b| b == b':') {
        Some(at) => &name[at + 1..],
        None => name,
    }
}

/// Where a window of the input ends: see [`read_events`].
struct WindowEnd {
    at: usize,
    /// No event goes on past `at`: the input ends there, or the window was cut (`cut`).
    last: bool,
    /// The window ends inside an event longer than [`common::LINE_BYTES_MAX`]: more than twice
    /// that many bytes follow its last `<`, so the tag there, or the text after it, is that long.
    cut: bool,
}

/// The end of the window `window` holds: just before its last `<`; its end when the input has
/// `ended`, or when the window is cut; `None` while there is no `<` past its first byte.
fn window_end(window: &[u8], ended: bool) -> Option<WindowEnd> {
    if ended {
        return Some(WindowEnd { at: window.len(), last: true, cut: false });
    }
    let after = match memchr::memrchr(b'<', window) {
        Some(at) if at > 0 => at,
        _ => 0,
    };
    if window.len() - after > 2 * common::LINE_BYTES_MAX + 2 {
        return Some(WindowEnd { at: window.len(), last: true, cut: true });
    }
    (after > 0).then_some(WindowEnd { at: after, last: false, cut: false })
}

/// `/Document/CstmrCdtTrfInitn/PmtInf[block]/CdtTrfTxInf[transaction]`, put together without
/// `format!`'s machinery (it is made for every transaction).
#[cfg(test)]
fn transaction_location(block: u64, transaction: u64) -> String {
    transaction_location_after(&location_prefix(block), transaction)
}

/// `/Document/CstmrCdtTrfInitn/PmtInf[block]/CdtTrfTxInf[`, made once a block.
fn location_prefix(block: u64) -> String {
    let mut prefix = String::with_capacity(56);
    prefix.push_str("/Document/CstmrCdtTrfInitn/PmtInf[");
    prefix.push_str(Digits::new().text(block));
    prefix.push_str("]/CdtTrfTxInf[");
    prefix
}

/// A transaction's location after its block's [`location_prefix`].
fn transaction_location_after(prefix: &str, transaction: u64) -> String {
    let mut digits = Digits::new();
    let digits = digits.text(transaction);
    let mut location = String::with_capacity(prefix.len() + digits.len() + 1);
    location.push_str(prefix);
    location.push_str(digits);
    location.push(']');
    location
}

fn newlines(bytes: &[u8]) -> u64 {
    // `count` adds the comparisons up in vector registers; a `fold` went byte by byte.
    u64::try_from(bytes.iter().filter(|&&b| b == b'\n').count()).unwrap_or(u64::MAX)
}

fn is_xml_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Whether `text` is only XML whitespace (as `text.chars().all(is_xml_whitespace)`, byte by
/// byte: XML whitespace is ASCII).
fn is_xml_whitespace_only(text: &str) -> bool {
    text.bytes().all(is_xml_whitespace_byte)
}

/// `text` without the XML whitespace around it (as `text.trim_matches(is_xml_whitespace)`).
fn trim_xml_whitespace(text: &str) -> &str {
    let bytes = text.as_bytes();
    let start = bytes.iter().position(|&b| !is_xml_whitespace_byte(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|&b| !is_xml_whitespace_byte(b)).map_or(start, |at| at + 1);
    // Both are next to ASCII bytes, so on character boundaries.
    text.get(start..end).unwrap_or_default()
}

impl Parser<'_, '_> {
    /// Handles one event that quick-xml read; `false` at the end of the file.
    fn event(&mut self, event: Event<'_>) -> Result<bool, FatalError> {
        let line = self.line;
        match event {
            Event::Start(start) => {
                self.line += newlines(&start);
                self.start(&start, tag_of(start.local_name().as_ref()), line)?;
            }
            Event::Empty(start) => {
                self.line += newlines(&start);
                self.open(&start, tag_of(start.local_name().as_ref()), line)?;
                self.close(line)?;
            }
            Event::End(end) => {
                self.line += newlines(&end);
                self.end(end.name().as_ref(), line)?;
            }
            Event::Text(text) => self.text(&text, None)?,
            Event::CData(data) => {
                self.line += newlines(&data);
                let text = std::str::from_utf8(&data).map_err(|_| self.not_utf8(line))?;
                self.characters(text, line)?;
            }
            Event::Comment(text) => self.line += newlines(&text),
            Event::PI(text) => self.line += newlines(&text),
            Event::Decl(declaration) => {
                self.line += newlines(&declaration);
                if let Some(Ok(encoding)) = declaration.encoding() {
                    if !encoding.eq_ignore_ascii_case(b"utf-8") {
                        let name = String::from_utf8_lossy(&encoding).into_owned();
                        return Err(self.malformed(
                            line,
                            format!("the encoding {name:?} is not supported; pain.001 files must be UTF-8"),
                        ));
                    }
                }
            }
            Event::DocType(_) => {
                return Err(self.malformed(line, "a DOCTYPE is not allowed in a payment file".to_owned()))
            }
            Event::Eof => return Ok(false),
        }
        Ok(true)
    }

    /// A start tag at `line` (the lines it spans are counted), with its local name's `tag`.
    fn start(&mut self, start: &BytesStart<'_>, tag: u8, line: u64) -> Result<(), FatalError> {
        let name = start.name().into_inner();
        match KNOWN.get(usize::from(tag).wrapping_sub(1)) {
            // The local name is that known name, and as long as the whole name: no prefix.
            Some(known) if known.len() == name.len() => self.open_names.push(OpenName::Known(tag)),
            _ => {
                self.open_names.push(OpenName::Stored(self.open_bytes.len()));
                self.open_bytes.extend_from_slice(name);
            }
        }
        self.open(start, tag, line)
    }

    /// An end tag naming `name`, at `line` (the lines it spans are counted).
    fn end(&mut self, name: &[u8], line: u64) -> Result<(), FatalError> {
        self.end_name(name, line)?;
        self.close(line)
    }

    /// When `bytes` start with the end tag of the innermost open element and its name is a
    /// known one (`</Name>`), takes that name off the open ones and gives the tag's length.
    fn closes_known(&mut self, bytes: &[u8]) -> Option<usize> {
        let Some(&OpenName::Known(tag)) = self.open_names.last() else { return None };
        let index = usize::from(tag) - 1;
        let length = KNOWN[index].len();
        let matches = bytes.starts_with(b"</")
            && packed_at(bytes, 2, length) == Some(KNOWN_PACKED[index])
            && bytes.get(2 + length) == Some(&b'>');
        if !matches {
            return None;
        }
        self.open_names.pop();
        Some(length + 3)
    }

    /// Text, escaped as it is in the file: unescaped as quick-xml's `BytesText::unescape`
    /// does, with its errors, without its second look at text that has no `&`.
    /// `text` is `raw` as text, when the caller knows it.
    fn text(&mut self, raw: &[u8], text: Option<&str>) -> Result<(), FatalError> {
        let line = self.line;
        let (mut lines, mut entities) = (0u64, false);
        for &byte in raw {
            lines += u64::from(byte == b'\n');
            entities |= byte == b'&';
        }
        self.line += lines;
        let bad = |e: quick_xml::Error| FatalError::Malformed { line, message: format!("bad character content: {e}") };
        let text = match text {
            Some(text) => text,
            None => std::str::from_utf8(raw).map_err(|e| bad(EncodingError::from(e).into()))?,
        };
        if !entities {
            return self.characters(text, line);
        }
        let text = BytesText::from_escaped(text).unescape().map_err(bad)?;
        self.characters(&text, line)
    }

    fn malformed(&self, line: u64, message: String) -> FatalError {
        FatalError::Malformed { line, message }
    }

    /// The event that starts at the current line is longer than the limit.
    fn too_long(&self) -> FatalError {
        self.malformed(self.line, format!("a tag or text is longer than {} bytes", common::LINE_BYTES_MAX))
    }

    /// Checks that an end tag names the innermost open element, as quick-xml's reader checks
    /// it (`check_end_names`), with its error; and closes that element's name.
    fn end_name(&mut self, name: &[u8], line: u64) -> Result<(), FatalError> {
        let expected = match self.open_names.pop() {
            Some(OpenName::Known(tag)) => KNOWN[usize::from(tag) - 1].as_bytes(),
            Some(OpenName::Stored(start)) => {
                let matches = self.open_bytes.get(start..) == Some(name);
                if matches {
                    self.open_bytes.truncate(start);
                    return Ok(());
                }
                let problem = self.ill_formed(self.open_bytes.get(start..), name, line);
                self.open_bytes.truncate(start);
                return Err(problem);
            }
            None => return Err(self.ill_formed(None, name, line)),
        };
        if expected == name {
            return Ok(());
        }
        Err(self.ill_formed(Some(expected), name, line))
    }

    /// quick-xml's error for an end tag naming `found` where `expected` is open (or nothing).
    #[cold]
    fn ill_formed(&self, expected: Option<&[u8]>, found: &[u8], line: u64) -> FatalError {
        let text = |bytes: &[u8]| std::str::from_utf8(bytes).unwrap_or_default().to_owned();
        let problem = match expected {
            Some(expected) => IllFormedError::MismatchedEndTag { expected: text(expected), found: text(found) },
            None => IllFormedError::UnmatchedEndTag(text(found)),
        };
        self.malformed(line, format!("the file is not well-formed XML: {}", quick_xml::Error::IllFormed(problem)))
    }

    fn not_utf8(&self, line: u64) -> FatalError {
        self.malformed(line, "the file is not valid UTF-8".to_owned())
    }

    /// Opens an element: `tag` is its local name's ([`tag_of`]).
    fn open(&mut self, start: &BytesStart<'_>, tag: u8, line: u64) -> Result<(), FatalError> {
        let name = if tag == 0 { "" } else { KNOWN[usize::from(tag) - 1] };
        // A known name is that name's text.
        let name_text = match tag {
            0 => std::str::from_utf8(start.local_name().into_inner()).map_err(|_| self.not_utf8(line))?,
            _ => name,
        };
        if let Some(parent) = self.stack.last_mut() {
            parent.has_children = true;
            if !is_xml_whitespace_only(&self.text) {
                return Err(self.mixed_content(name_text));
            }
        } else if self.root_closed {
            return Err(self.malformed(line, format!("<{name_text}> after the end of the root element")));
        }
        if self.stack.len() >= DEPTH_MAX {
            return Err(self.malformed(line, format!("elements are nested deeper than {DEPTH_MAX} levels")));
        }
        self.stack.push(Frame { name, has_children: false });
        self.names.push(tag);
        self.text.clear();
        self.text_line = line;
        let depth = self.stack.len();
        if depth <= 2 {
            self.root_names.push(start.name().as_ref().to_vec());
            if self.resume.is_none() {
                self.check_root(start, name_text, line)?;
            }
        }
        let mut line = line;
        match self.names.as_slice() {
            [tag::DOCUMENT, tag::CSTMR_CDT_TRF_INITN, tag::PMT_INF] => {
                self.blocks += 1;
                self.block = Block { number: self.blocks, ..Block::default() };
                self.location_prefix = location_prefix(self.blocks);
                self.block_start = self.position;
                self.block_first_transaction = None;
            }
            [tag::DOCUMENT, tag::CSTMR_CDT_TRF_INITN, tag::PMT_INF, tag::CDT_TRF_TX_INF] => {
                self.block_first_transaction.get_or_insert(self.position);
                if let Some(resume) = self.resume.as_mut().filter(|r| r.header.is_none()) {
                    // The first transaction of the second part: the one at the cut.
                    self.line = resume.line + (self.line - line);
                    line = resume.line;
                    self.block.transactions = resume.in_block;
                    resume.header = Some(self.block.header());
                }
                self.block.transactions += 1;
                self.transaction = Transaction {
                    line,
                    location: transaction_location_after(&self.location_prefix, self.block.transactions),
                    ..Transaction::default()
                };
            }
            [.., tag::CDT_TRF_TX_INF, tag::AMT, tag::INSTD_AMT]
            | [.., tag::CDT_TRF_TX_INF, tag::AMT, tag::EQVT_AMT, tag::AMT] => {
                self.transaction.equivalent = name_text == "Amt";
                self.transaction.currency = match start.try_get_attribute("Ccy") {
                    Ok(Some(attribute)) => {
                        let value = attribute
                            .unescape_value()
                            .map_err(|e| self.malformed(line, format!("bad Ccy attribute: {e}")))?;
                        Some(refill(&mut self.spare_currency, value.trim()))
                    }
                    Ok(None) => None,
                    Err(e) => return Err(self.malformed(line, format!("bad attributes: {e}"))),
                };
            }
            _ => {}
        }
        Ok(())
    }

    /// Checks that the root is a pain.001 `Document` in a supported namespace, with a
    /// `CstmrCdtTrfInitn` inside.
    fn check_root(&mut self, start: &BytesStart<'_>, name: &str, line: u64) -> Result<(), FatalError> {
        if self.stack.len() == 2 {
            if name != "CstmrCdtTrfInitn" {
                return Err(self.malformed(
                    line,
                    format!("expected <CstmrCdtTrfInitn> (a customer credit transfer initiation) inside <Document>, found <{name}>"),
                ));
            }
            return Ok(());
        }
        if name != "Document" {
            return Err(
                self.malformed(line, format!("the root element is <{name}>; a pain.001 file starts with <Document>"))
            );
        }
        let prefix = start.name().prefix().map(|p| String::from_utf8_lossy(p.as_ref()).into_owned());
        let key = match &prefix {
            Some(prefix) => format!("xmlns:{prefix}"),
            None => "xmlns".to_owned(),
        };
        let namespace = match start.try_get_attribute(key.as_str()) {
            Ok(Some(attribute)) => attribute
                .unescape_value()
                .map_err(|e| self.malformed(line, format!("bad xmlns attribute: {e}")))?
                .trim()
                .to_owned(),
            Ok(None) => String::new(),
            Err(e) => return Err(self.malformed(line, format!("bad attributes: {e}"))),
        };
        match NAMESPACES.iter().find(|(uri, _)| *uri == namespace) {
            Some((_, variant)) => {
                self.variant = Some(variant);
                Ok(())
            }
            None => Err(FatalError::UnsupportedNamespace { line, namespace, expected: EXPECTED_NAMESPACES }),
        }
    }

    fn mixed_content(&self, next: &str) -> FatalError {
        let parent = self.stack.last().map_or("", |frame| frame.name);
        let sample: String = self.text.chars().filter(|c| !is_xml_whitespace(*c)).take(10).collect();
        let leading = self.text.find(|c| !is_xml_whitespace(c)).unwrap_or(0);
        let line = self.text_line + newlines(self.text.get(..leading).unwrap_or("").as_bytes());
        let nbsp = if sample.contains('\u{a0}') {
            " (U+00A0, a no-break space, is not XML whitespace: is the file indented with it?)"
        } else {
            ""
        };
        let parent = if parent.is_empty() { "an element".to_owned() } else { format!("<{parent}>") };
        let next = if next.is_empty() { String::new() } else { format!(" before <{next}>") };
        self.malformed(
            line,
            format!("character content {sample:?} inside {parent}{next}, where only child elements and whitespace are allowed{nbsp}"),
        )
    }

    fn characters(&mut self, text: &str, line: u64) -> Result<(), FatalError> {
        match self.stack.last() {
            None => {
                if !is_xml_whitespace_only(text) {
                    self.text = text.to_owned();
                    self.text_line = line;
                    return Err(self.mixed_content(""));
                }
            }
            Some(frame) if frame.has_children => {
                if !is_xml_whitespace_only(text) {
                    self.text = text.to_owned();
                    self.text_line = line;
                    return Err(self.mixed_content(""));
                }
            }
            Some(_) => {
                if is_xml_whitespace_only(&self.text) {
                    self.text_line = line;
                }
                if self.text.len().saturating_add(text.len()) > common::LINE_BYTES_MAX {
                    return Err(self.malformed(
                        line,
                        format!("the text of an element is longer than {} bytes", common::LINE_BYTES_MAX),
                    ));
                }
                self.text.push_str(text);
            }
        }
        Ok(())
    }

    fn close(&mut self, line: u64) -> Result<(), FatalError> {
        let Some(frame) = self.stack.last() else {
            return Err(self.malformed(line, "an end tag without a start tag".to_owned()));
        };
        if !frame.has_children {
            // Both lent out while the leaf is recorded, and kept with their capacity.
            let (names, text) = (std::mem::take(&mut self.names), std::mem::take(&mut self.text));
            self.leaf(&names, trim_xml_whitespace(&text));
            (self.names, self.text) = (names, text);
        }
        match self.names.as_slice() {
            [tag::DOCUMENT, tag::CSTMR_CDT_TRF_INITN, tag::PMT_INF, tag::CDT_TRF_TX_INF] => self.finish_transaction(),
            [tag::DOCUMENT, tag::CSTMR_CDT_TRF_INITN, tag::PMT_INF] => self.finish_block(),
            _ => {}
        }
        self.stack.pop();
        self.names.pop();
        self.text.clear();
        if self.stack.is_empty() {
            self.root_closed = true;
        }
        Ok(())
    }

    /// Records the value of an element without children.
    fn leaf(&mut self, path: &[u8], value: &str) {
        let line = self.text_line;
        let figure = |value: &str| Figure { text: Some(value.to_owned()), line };
        let transaction = &mut self.transaction;
        match path {
            [tag::DOCUMENT, tag::CSTMR_CDT_TRF_INITN, tag::GRP_HDR, tag::MSG_ID] => {
                self.message_id = Some(value.to_owned())
            }
            [tag::DOCUMENT, tag::CSTMR_CDT_TRF_INITN, tag::GRP_HDR, tag::NB_OF_TXS] => {
                self.group.nb_of_txs = figure(value)
            }
            [tag::DOCUMENT, tag::CSTMR_CDT_TRF_INITN, tag::GRP_HDR, tag::CTRL_SUM] => {
                self.group.ctrl_sum = figure(value)
            }
            [tag::DOCUMENT, tag::CSTMR_CDT_TRF_INITN, tag::PMT_INF, tag::PMT_INF_ID] => {
                self.block.id = Some(value.to_owned())
            }
            [tag::DOCUMENT, tag::CSTMR_CDT_TRF_INITN, tag::PMT_INF, tag::NB_OF_TXS] => {
                self.block.control.nb_of_txs = figure(value)
            }
            [tag::DOCUMENT, tag::CSTMR_CDT_TRF_INITN, tag::PMT_INF, tag::CTRL_SUM] => {
                self.block.control.ctrl_sum = figure(value)
            }
            [tag::DOCUMENT, tag::CSTMR_CDT_TRF_INITN, tag::PMT_INF, tag::REQD_EXCTN_DT]
            | [tag::DOCUMENT, tag::CSTMR_CDT_TRF_INITN, tag::PMT_INF, tag::REQD_EXCTN_DT, tag::DT | tag::DT_TM] => {
                let date = value.get(..10).filter(|_| path.last() == Some(&tag::DT_TM)).unwrap_or(value);
                if !is_date(date) {
                    self.block.date_error = Some(format!(
                        "ReqdExctnDt at line {line} is {value:?}, but it must be a date such as 2024-01-31"
                    ));
                }
            }
            [tag::DOCUMENT, tag::CSTMR_CDT_TRF_INITN, tag::PMT_INF, tag::DBTR_ACCT, tag::ID, tag::IBAN | tag::OTHR]
            | [tag::DOCUMENT, tag::CSTMR_CDT_TRF_INITN, tag::PMT_INF, tag::DBTR_ACCT, tag::ID, tag::OTHR, tag::ID] => {
                self.block.payer = Some(value.to_owned()).filter(|v| !v.is_empty());
            }
            [.., tag::CDT_TRF_TX_INF, tag::PMT_ID, tag::INSTR_ID] => {
                transaction.instruction_id = Some(value.to_owned())
            }
            [.., tag::CDT_TRF_TX_INF, tag::PMT_ID, tag::END_TO_END_ID] => {
                transaction.end_to_end_id = Some(value.to_owned())
            }
            [.., tag::CDT_TRF_TX_INF, tag::RMT_INF, tag::USTRD] if !value.is_empty() => {
                let text = transaction.remittance.get_or_insert_with(String::new);
                if text.chars().count() < REMITTANCE_MAX {
                    if !text.is_empty() {
                        text.push(' ');
                    }
                    text.push_str(value);
                    if let Some((end, _)) = text.char_indices().nth(REMITTANCE_MAX) {
                        text.truncate(end);
                    }
                }
            }
            [.., tag::CDT_TRF_TX_INF, tag::AMT, tag::INSTD_AMT]
            | [.., tag::CDT_TRF_TX_INF, tag::AMT, tag::EQVT_AMT, tag::AMT] => {
                transaction.amount = Some(refill(&mut self.spare_amount, value));
            }
            [.., tag::CDT_TRF_TX_INF, tag::AMT, tag::EQVT_AMT, tag::CCY_OF_TRF] => {
                transaction.transfer_currency = Some(value.to_owned())
            }
            [.., tag::CDT_TRF_TX_INF, tag::CDTR_ACCT, tag::ID, tag::IBAN] => {
                transaction.payee = Some(value.to_owned()).filter(|v| !v.is_empty());
                transaction.payee_is_iban = true;
            }
            [.., tag::CDT_TRF_TX_INF, tag::CDTR_ACCT, tag::ID, tag::OTHR, tag::ID] => {
                transaction.payee = Some(value.to_owned()).filter(|v| !v.is_empty());
                transaction.payee_is_iban = false;
            }
            [.., tag::CDT_TRF_TX_INF, tag::CDTR_AGT, tag::FIN_INSTN_ID, name @ (tag::BIC | tag::BICFI)] => {
                transaction.creditor_bic = Some((KNOWN[usize::from(*name) - 1], value.to_owned()));
            }
            _ => {}
        }
    }

    fn finish_transaction(&mut self) {
        let mut transaction = std::mem::take(&mut self.transaction);
        // Read here, not kept: their buffers serve the next transaction.
        let (amount, currency) = (transaction.amount.take(), transaction.currency.take());
        self.group.count += 1;
        self.block.control.count += 1;
        if let Some(value) = amount.as_deref().and_then(Decimal::parse) {
            self.group.sum.add(value);
            self.block.control.sum.add(value);
        }
        match self.item(transaction, amount.as_deref(), currency.as_deref()) {
            Ok(item) => self.out.accept(item),
            Err(diagnostic) => self.out.reject(diagnostic),
        }
        if let Some(amount) = amount {
            self.spare_amount = amount;
        }
        if let Some(currency) = currency {
            self.spare_currency = currency;
        }
    }

    /// The transaction's item, its fields moved into it (`amount` and `currency` are its
    /// own, lent); or why it is invalid.
    fn item(&self, transaction: Transaction, amount: Option<&str>, currency: Option<&str>) -> Result<Item, Diagnostic> {
        let Transaction {
            line,
            location,
            instruction_id,
            end_to_end_id,
            remittance,
            amount: _,
            currency: _,
            equivalent,
            transfer_currency,
            payee,
            payee_is_iban,
            creditor_bic,
        } = transaction;
        let problem = |field: &str, code, message: String| common::diagnostic(line, &location, field, code, message);
        if let Some(message) = &self.block.date_error {
            return Err(problem("ReqdExctnDt", "invalid_date", message.clone()));
        }
        let payee = payee.ok_or_else(|| {
            problem(
                "CdtrAcct",
                "missing_field",
                "CdtrAcct/Id (the creditor account: IBAN or Othr/Id) is missing".to_owned(),
            )
        })?;
        let text = amount.ok_or_else(|| {
            problem("InstdAmt", "missing_field", "Amt/InstdAmt (the amount and its Ccy) is missing".to_owned())
        })?;
        let field = if equivalent { "EqvtAmt" } else { "InstdAmt" };
        let code = currency.ok_or_else(|| {
            problem(
                field,
                "missing_field",
                format!("{field} has no Ccy attribute; expected Ccy=\"EUR\" or another ISO 4217 code"),
            )
        })?;
        let currency = common::currency(code, "Ccy", line, &location)?;
        let amount = common::amount(text, currency, field, line, &location)?;
        if equivalent {
            let target = transfer_currency.as_deref().unwrap_or("another currency");
            return Err(problem(
                "EqvtAmt",
                "unsupported_entry",
                format!("EqvtAmt ({text} {code} to be converted into {target}) is not supported; give the amount as InstdAmt"),
            ));
        }
        if payee_is_iban {
            if let Some(message) = iban_problem(&payee) {
                return Err(problem("IBAN", "invalid_iban", format!("CdtrAcct/Id/{message}")));
            }
        }
        if let Some((name, bic)) = &creditor_bic {
            if !is_bic(bic) {
                return Err(problem(
                    name,
                    "invalid_bic",
                    format!("CdtrAgt/FinInstnId/{name} {bic:?} is not a BIC: expected 8 or 11 letters and digits, the 5th and 6th a country code, such as DEUTDEFF or DEUTDEFF500"),
                ));
            }
        }
        let reference = end_to_end_id.filter(|id| !id.is_empty() && id != "NOTPROVIDED");
        Ok(Item {
            index: 0,
            line,
            location,
            payer: self.block.payer.clone(),
            payee,
            amount,
            currency,
            reference,
            instruction_id: instruction_id.filter(|id| !id.is_empty()),
            payment_information_id: self.block.id.clone(),
            remittance,
        })
    }

    fn finish_block(&mut self) {
        let block = std::mem::take(&mut self.block);
        if let Some(resume) = self.resume.as_mut().filter(|r| r.header.is_some() && r.straddle.is_none()) {
            // The block the cut falls in: checked once both parts' transactions are counted.
            resume.straddle = Some(block.control);
            return;
        }
        check_block(&block, &mut self.control_errors);
    }

    /// Checks that the file ended where it should.
    fn check_end(&self) -> Result<(), FatalError> {
        if let Some(frame) = self.stack.last() {
            let name = if frame.name.is_empty() { "an element" } else { frame.name };
            return Err(self.malformed(self.line, format!("the file ends inside <{name}>; it is truncated")));
        }
        Ok(())
    }

    fn finish(self, summary: &mut Summary) -> Result<(), FatalError> {
        self.check_end()?;
        if self.variant.is_none() {
            return Err(self.malformed(self.line, "the file has no <Document> element".to_owned()));
        }
        finish_group(&self.group, self.control_errors, self.message_id, self.variant, summary);
        Ok(())
    }
}

/// Checks a finished block's control figures.
fn check_block(block: &Block, errors: &mut Vec<Diagnostic>) {
    let name = format!("PmtInf[{}]", block.number);
    let location = format!("/Document/CstmrCdtTrfInitn/{name}");
    check_control(&block.control, &name, &location, "the block has", "its transactions sum", errors);
}

/// Checks the group header's figures and fills in the summary: the group's errors first, then
/// the blocks' (`block_errors`).
fn finish_group(
    group: &Control,
    mut block_errors: Vec<Diagnostic>,
    message_id: Option<String>,
    variant: Option<&'static str>,
    summary: &mut Summary,
) {
    let location = "/Document/CstmrCdtTrfInitn/GrpHdr".to_owned();
    let mut group_errors = Vec::new();
    if group.nb_of_txs.text.is_none() {
        group_errors.push(Diagnostic {
            line: 1,
            location: location.clone(),
            field: Some("NbOfTxs".to_owned()),
            code: "missing_field",
            message: "GrpHdr/NbOfTxs (the number of transactions) is missing".to_owned(),
            adjustment: None,
        });
    }
    check_control(group, "GrpHdr", &location, "the file has", "the transactions sum", &mut group_errors);
    group_errors.append(&mut block_errors);
    summary.control_errors = group_errors;
    summary.message_id = message_id;
    summary.variant = variant.map(str::to_owned);
}

/// The start tag of the root and its child that the second part of a cut file reads first,
/// standing for the file's own (the first part checks that they are written so).
const SECOND_PART_PREFIX: &[u8] = b"<Document><CstmrCdtTrfInitn>";
const PMT_INF_START: &[u8] = b"<PmtInf>";
const TRANSACTION_START: &[u8] = b"<CdtTrfTxInf>";
/// A block header longer than this is not carried to the second part: the file is read whole.
const HEADER_BYTES_MAX: usize = 1 << 20;

/// Where a pain.001 file is cut in two parts that two threads parse at once, and what the
/// second part takes up there; see [`crate::find_cut`].
#[derive(Debug)]
pub struct Cut {
    /// The offset (after a byte order mark) of the `<CdtTrfTxInf>` start tag the second part
    /// starts with.
    offset: u64,
    /// The line of that tag.
    line: u64,
    /// `<CdtTrfTxInf>` tags before it: the first part's records.
    records: u64,
    /// `<PmtInf>` tags before the block it is in.
    blocks_before: u64,
    /// `<CdtTrfTxInf>` tags of its block before it.
    in_block: u64,
    /// Where its block's `<PmtInf>` tag and first `<CdtTrfTxInf>` tag are, and the line of
    /// the former.
    header_start: u64,
    header_end: u64,
    header_line: u64,
    /// What the second part reads before the rest of the input: [`SECOND_PART_PREFIX`], the
    /// block's header (from its `<PmtInf>` tag to its first transaction) and the bytes read
    /// past the cut while looking for it.
    lead: Vec<u8>,
}

impl Cut {
    /// The records of the first part: the second part's first record has this index.
    pub fn records_before(&self) -> u64 {
        self.records
    }
}

/// Reads `input` (after a byte order mark) up to the first `<CdtTrfTxInf>` tag at or past
/// `size / 2` that is inside a `<PmtInf>`, counting lines, blocks and transactions on the way
/// by a plain search of the bytes (a tag in a comment or CDATA section counts too: the first
/// part's parser finds that out, and the parts are then not used). `None`: no such tag, or a
/// block header longer than 1 MiB.
pub(crate) fn find_cut<R: BufRead>(mut input: R, size: u64) -> std::io::Result<Option<Cut>> {
    common::skip_bom(&mut input)?;
    let target = size / 2;
    let keep = TRANSACTION_START.len() - 1;
    let mut window: Vec<u8> = Vec::with_capacity(1 << 20);
    // The offset of `window[0]`; the bytes before `done` in the window are counted.
    let mut base = 0u64;
    let mut lines = 1u64;
    let (mut records, mut blocks, mut in_block) = (0u64, 0u64, 0u64);
    let (mut header_start, mut header_end, mut header_line) = (0u64, None::<u64>, 0u64);
    let mut header: Vec<u8> = Vec::new();
    let pmt_inf = memchr::memmem::Finder::new(PMT_INF_START);
    let transaction = memchr::memmem::Finder::new(TRANSACTION_START);
    loop {
        let carried = window.len();
        window.resize(carried + (1 << 20), 0);
        let read = loop {
            match input.read(&mut window[carried..]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        window.truncate(carried + read);
        let end = read == 0;
        // Tags that start before `limit` are whole in the window.
        let limit = if end { window.len() } else { window.len().saturating_sub(keep) };
        let mut found: Vec<(usize, bool)> = pmt_inf
            .find_iter(&window)
            .map(|at| (at, true))
            .chain(transaction.find_iter(&window).map(|at| (at, false)))
            .filter(|&(at, _)| at < limit)
            .collect();
        found.sort_unstable();
        let mut counted = 0;
        for (at, is_block) in found {
            lines += newlines(&window[counted..at]);
            counted = at;
            let offset = base + at as u64;
            if is_block {
                blocks += 1;
                in_block = 0;
                header_start = offset;
                header_end = None;
                header_line = lines;
                header.clear();
                continue;
            }
            if blocks == 0 {
                continue;
            }
            if header_end.is_none() {
                header_end = Some(offset);
                let from = usize::try_from(header_start.saturating_sub(base)).unwrap_or(0);
                header.extend_from_slice(&window[from.min(at)..at]);
                if header.len() > HEADER_BYTES_MAX {
                    return Ok(None);
                }
            }
            if offset >= target {
                let mut lead = Vec::with_capacity(SECOND_PART_PREFIX.len() + header.len() + window.len() - at);
                lead.extend_from_slice(SECOND_PART_PREFIX);
                lead.extend_from_slice(&header);
                lead.extend_from_slice(&window[at..]);
                return Ok(Some(Cut {
                    offset,
                    line: lines,
                    records,
                    blocks_before: blocks - 1,
                    in_block,
                    header_start,
                    header_end: header_end.unwrap_or(offset),
                    header_line,
                    lead,
                }));
            }
            records += 1;
            in_block += 1;
        }
        if end {
            return Ok(None);
        }
        lines += newlines(&window[counted..limit]);
        if blocks > 0 && header_end.is_none() {
            // The header goes on into the next window.
            let from = usize::try_from(header_start.saturating_sub(base)).unwrap_or(0);
            header.extend_from_slice(&window[from.min(limit)..limit]);
            if header.len() > HEADER_BYTES_MAX {
                return Ok(None);
            }
        }
        window.drain(..limit);
        base += limit as u64;
    }
}

/// The first part of a cut file, parsed up to the cut: see [`crate::parse_first_part`].
pub struct FirstPart {
    result: Result<FirstState, FatalError>,
}

/// The first part's parser state at the cut.
struct FirstState {
    /// The parser stopped exactly at the cut, between two events, inside a `PmtInf` of the
    /// root's `CstmrCdtTrfInitn`, with nothing but whitespace pending.
    at_cut: bool,
    line: u64,
    records: u64,
    in_block: u64,
    header: BlockHeader,
    header_start: u64,
    header_end: Option<u64>,
    root_names: Vec<Vec<u8>>,
    group: Control,
    block_control: Control,
    control_errors: Vec<Diagnostic>,
    message_id: Option<String>,
    variant: Option<&'static str>,
    counts: common::Counts,
}

/// The second part of a cut file, parsed from the cut to the end.
pub struct SecondPart {
    result: Result<SecondState, FatalError>,
    /// The block header the second part found at the cut, when it got there.
    header: Option<BlockHeader>,
}

struct SecondState {
    group: Control,
    straddle: Option<Control>,
    control_errors: Vec<Diagnostic>,
    message_id: Option<String>,
    counts: common::Counts,
}

pub(crate) fn parse_first_part<R: BufRead>(
    cut: &Cut,
    mut input: R,
    sink: &mut dyn FnMut(Result<Item, Diagnostic>),
) -> FirstPart {
    let mut collector = Collector::new(sink);
    let mut parser = Parser::new(&mut collector);
    let stopped = common::skip_bom(&mut input)
        .map_err(FatalError::from)
        .and_then(|()| read_events(&mut parser, input, cut.offset));
    let result = stopped.map(|stopped| {
        let at_cut = stopped == cut.offset
            && parser.names.as_slice() == [tag::DOCUMENT, tag::CSTMR_CDT_TRF_INITN, tag::PMT_INF]
            && parser.text.chars().all(is_xml_whitespace);
        let Parser {
            line,
            block,
            block_start,
            block_first_transaction,
            root_names,
            group,
            control_errors,
            message_id,
            variant,
            ..
        } = parser;
        FirstState {
            at_cut,
            line,
            records: 0,
            in_block: block.transactions,
            header: block.header(),
            header_start: block_start,
            header_end: block_first_transaction,
            root_names,
            group,
            block_control: block.control,
            control_errors,
            message_id,
            variant,
            counts: common::Counts::empty(),
        }
    });
    let result = result.map(|mut state| {
        state.records = collector.sent();
        state.counts = collector.into_counts();
        state
    });
    FirstPart { result }
}

pub(crate) fn parse_second_part<R: BufRead>(
    cut: &Cut,
    rest: R,
    sink: &mut dyn FnMut(Result<Item, Diagnostic>),
) -> SecondPart {
    let mut collector = Collector::new(sink);
    collector.start_at(cut.records);
    let mut parser = Parser::new(&mut collector);
    parser.line = cut.header_line;
    parser.blocks = cut.blocks_before;
    parser.resume = Some(Resume { line: cut.line, in_block: cut.in_block, header: None, straddle: None });
    let input = std::io::Cursor::new(cut.lead.as_slice()).chain(rest);
    let read = read_events(&mut parser, input, u64::MAX).and_then(|_| parser.check_end());
    let Parser { resume, group, control_errors, message_id, .. } = parser;
    let (header, straddle) = resume.map_or((None, None), |r| (r.header, r.straddle));
    let result =
        read.map(|()| SecondState { group, straddle, control_errors, message_id, counts: common::Counts::empty() });
    let result = result.map(|mut state| {
        state.counts = collector.into_counts();
        state
    });
    SecondPart { result, header }
}

/// The two parts as one parse, or `None` when they cannot stand for it and the file must be
/// parsed whole; see [`crate::join_parts`].
pub(crate) fn join_parts(cut: &Cut, first: FirstPart, second: SecondPart) -> Option<Result<Summary, FatalError>> {
    let first = match first.result {
        // The first part is the file's own beginning: its errors are the file's.
        Err(fatal) => return Some(Err(fatal)),
        Ok(first) => first,
    };
    let cut_is_sound = first.at_cut
        && first.line == cut.line
        && first.records == cut.records
        && first.in_block == cut.in_block
        && first.header.number == cut.blocks_before + 1
        && first.header_start == cut.header_start
        // No transaction of the block before the cut: its first is the cut's.
        && first.header_end.unwrap_or(cut.offset) == cut.header_end
        && first.root_names == [b"Document".to_vec(), b"CstmrCdtTrfInitn".to_vec()]
        && second.header.as_ref() == Some(&first.header);
    if !cut_is_sound {
        return None;
    }
    let second = match second.result {
        Err(fatal) => return Some(Err(fatal)),
        Ok(second) => second,
    };
    if first.counts.shares_a_reference_with(&second.counts) {
        // A duplicate across the cut: which item is the duplicate is the whole parse's call.
        return None;
    }
    let mut straddle = second.straddle?;
    straddle.count += first.block_control.count;
    straddle.sum = first.block_control.sum.merged(straddle.sum);
    let mut block_errors = first.control_errors;
    check_block(&Block { number: first.header.number, control: straddle, ..Block::default() }, &mut block_errors);
    block_errors.extend(second.control_errors);
    // Figures the second part read (a header out of its place) replace the first part's, as
    // they would in one parse.
    let group = Control {
        nb_of_txs: if second.group.nb_of_txs.text.is_some() { second.group.nb_of_txs } else { first.group.nb_of_txs },
        ctrl_sum: if second.group.ctrl_sum.text.is_some() { second.group.ctrl_sum } else { first.group.ctrl_sum },
        count: first.group.count + second.group.count,
        sum: first.group.sum.merged(second.group.sum),
    };
    let mut summary = Summary::default();
    first.counts.finish_with(second.counts, &mut summary);
    finish_group(&group, block_errors, second.message_id.or(first.message_id), first.variant, &mut summary);
    Some(Ok(summary))
}

/// Compares `NbOfTxs` and `CtrlSum`, when present, with what the transactions add up to.
fn check_control(control: &Control, name: &str, location: &str, has: &str, sum: &str, errors: &mut Vec<Diagnostic>) {
    if let Some(text) = &control.nb_of_txs.text {
        let line = control.nb_of_txs.line;
        let plural = if control.count == 1 { "" } else { "s" };
        let message = match text.parse::<u64>() {
            Ok(n) if n == control.count && text.bytes().all(|b| b.is_ascii_digit()) => None,
            Ok(n) if text.bytes().all(|b| b.is_ascii_digit()) => {
                Some(format!("{name}/NbOfTxs is {n} but {has} {} transaction{plural}", control.count))
            }
            _ => Some(format!(
                "{name}/NbOfTxs is {text:?}, which is not a number; {has} {} transaction{plural}",
                control.count
            )),
        };
        if let Some(message) = message {
            errors.push(common::control_error(line, format!("{location}/NbOfTxs"), "NbOfTxs", message));
        }
    }
    if let Some(text) = &control.ctrl_sum.text {
        let line = control.ctrl_sum.line;
        let message = match Decimal::parse(text) {
            Some(value) if control.sum.equals(value) => None,
            Some(_) => Some(format!("{name}/CtrlSum is {text} but {sum} to {}", control.sum.to_text())),
            None => Some(format!(
                "{name}/CtrlSum is {text:?}, which is not a decimal number; {sum} to {}",
                control.sum.to_text()
            )),
        };
        if let Some(message) = message {
            errors.push(common::control_error(line, format!("{location}/CtrlSum"), "CtrlSum", message));
        }
    }
}

/// Whether `text` is an ISO 8601 calendar date `YYYY-MM-DD` that exists.
fn is_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    let shape = bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| if i == 4 || i == 7 { *b == b'-' } else { b.is_ascii_digit() });
    if !shape {
        return false;
    }
    let number = |range: std::ops::Range<usize>| text.get(range).and_then(|s| s.parse::<u32>().ok()).unwrap_or(0);
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

#[cfg(test)]
mod tests {
    use super::{is_date, read_events_in_windows, tag, tag_of, transaction_location, Parser, KNOWN};
    use crate::common::{self, Collector};
    use crate::{Diagnostic, FatalError, Item, Summary};

    type Records = Vec<Result<Item, Diagnostic>>;

    /// A whole parse of `bytes` through windows of `window_bytes`: every record, and the
    /// summary or the fatal error's text.
    fn parse_in_windows(bytes: &[u8], window_bytes: usize) -> (Records, Result<Summary, String>) {
        let mut records = Vec::new();
        let mut sink = |record| records.push(record);
        let mut collector = Collector::new(&mut sink);
        let mut summary = Summary::default();
        let mut input = bytes;
        let result = common::skip_bom(&mut input).map_err(FatalError::from).and_then(|()| {
            let mut parser = Parser::new(&mut collector);
            read_events_in_windows(&mut parser, input, u64::MAX, window_bytes)?;
            parser.finish(&mut summary)
        });
        let result = result.map_err(|e| e.to_string()).map(|()| {
            collector.finish(&mut summary);
            summary
        });
        (records, result)
    }

    /// The files to cut into windows: the samples, the test fixtures and the fuzz corpus and
    /// regressions, each whole and cut short at a few places.
    fn inputs() -> Vec<(String, Vec<u8>)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let folders = [
            root.join("../../../shared/samples/iso20022"),
            root.join("tests/fixtures/iso20022"),
            root.join("../../fuzz/corpus/pain001"),
            root.join("../../fuzz/regressions/pain001"),
        ];
        let mut inputs = Vec::new();
        for folder in folders {
            let Ok(entries) = std::fs::read_dir(&folder) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(bytes) = std::fs::read(&path) else { continue };
                for cut in [bytes.len(), bytes.len() * 2 / 3, bytes.len() / 3] {
                    inputs.push((format!("{} cut at {cut}", path.display()), bytes[..cut].to_vec()));
                }
            }
        }
        inputs
    }

    /// Windows of any size give the events one window over the whole file gives: the same
    /// records, summary and errors (with their lines), including where a window ends inside
    /// a comment, a CDATA section or an attribute value, whose `<` is not an event's start.
    #[test]
    fn any_window_gives_what_the_whole_file_gives() {
        let mut inputs = inputs();
        assert!(inputs.len() > 30, "the samples and fixtures are there: {}", inputs.len());
        let transaction = |n: usize| {
            format!(
                "<CdtTrfTxInf><PmtId><EndToEndId>E-{n}</EndToEndId></PmtId><!-- a <b> in a comment <c -->\n\
                 <Amt><InstdAmt Ccy=\"EUR\">1.{n:02}</InstdAmt></Amt><Cdtr><Nm x=\"<y>\" z='<'>P</Nm></Cdtr>\
                 <CdtrAcct><Id><Othr><Id>acct_{n}</Id></Othr></Id></CdtrAcct>\
                 <RmtInf><Ustrd><![CDATA[a <b> & <c]]> and &lt;d&gt;</Ustrd></RmtInf></CdtTrfTxInf>\n"
            )
        };
        let transactions: String = (0..40).map(transaction).collect();
        let file = format!(
            "<?xml version=\"1.0\"?>\n<?pi <x> ?><Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.001.001.09\">\
             <CstmrCdtTrfInitn><GrpHdr><MsgId>M</MsgId><NbOfTxs>40</NbOfTxs></GrpHdr><PmtInf><PmtInfId>B</PmtInfId>\
             <ReqdExctnDt><Dt>2024-01-31</Dt></ReqdExctnDt><DbtrAcct><Id><Othr><Id>acct_payer</Id></Othr></Id></DbtrAcct>\n\
             {transactions}</PmtInf></CstmrCdtTrfInitn></Document>\n"
        );
        let (records, result) = parse_in_windows(file.as_bytes(), file.len() + 1);
        assert_eq!(records.iter().filter(|r| r.is_ok()).count(), 40, "{result:?}");
        let remittance = records[0].as_ref().ok().and_then(|item| item.remittance.as_deref());
        assert_eq!(remittance, Some("a <b> & <c and <d>"));
        assert_eq!(records[1].as_ref().map(|item| item.line).ok(), Some(5));
        let mismatched = file.replacen("</Nm>", "</Mn>", 7);
        let unmatched = format!("{file}</Document>");
        for (name, bytes) in [("built", &file), ("mismatched", &mismatched), ("unmatched", &unmatched)] {
            inputs.push((name.to_owned(), bytes.as_bytes().to_vec()));
        }
        for (name, bytes) in &inputs {
            let whole = parse_in_windows(bytes, bytes.len() + 1);
            for window in [1, 2, 3, 5, 7, 11, 16, 64, 100, 257, 1000, 4096] {
                assert_eq!(parse_in_windows(bytes, window), whole, "{name}: windows of {window} bytes");
            }
        }
        let errors = |name: &str| inputs.iter().find(|(n, _)| n == name).map(|(_, b)| parse_in_windows(b, 7).1);
        assert_eq!(
            errors("mismatched"),
            Some(Err(
                "line 4: the file is not well-formed XML: ill-formed document: expected `</Nm>`, but `</Mn>` was found"
                    .to_owned()
            ))
        );
        assert_eq!(
            errors("unmatched"),
            Some(Err(
                "line 84: the file is not well-formed XML: ill-formed document: close tag `</Document>` does not \
                 match any open tag"
                    .to_owned()
            ))
        );
    }

    /// A tag, a text or a comment longer than the limit is refused with the line it starts
    /// on, whatever the windows (one that holds it whole, or many that it spans, with `<` in
    /// it that are not tags); one of exactly the limit is read.
    #[test]
    fn an_event_longer_than_the_limit_is_refused_with_its_line() {
        let max = common::LINE_BYTES_MAX;
        let head = "<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.001.001.03\">\n<CstmrCdtTrfInitn>\n<GrpHdr>";
        let tail = "<NbOfTxs>0</NbOfTxs></GrpHdr></CstmrCdtTrfInitn></Document>\n";
        let cases = [
            (format!("{head}<MsgId>{}</MsgId>{tail}", "a".repeat(max + 1)), 3),
            (format!("{head}\n<MsgId x=\"{}\">m</MsgId>{tail}", "<".repeat(max)), 4),
            (format!("{head}\n\n<!--{}-->{tail}", "<a>".repeat(max / 3 + 1)), 5),
        ];
        for (file, line) in &cases {
            for window in [1000, super::WINDOW_BYTES, file.len() + 1] {
                let expected = Err(format!("line {line}: a tag or text is longer than {max} bytes"));
                assert_eq!(parse_in_windows(file.as_bytes(), window).1.map(|_| ()), expected, "line {line}, {window}");
            }
        }
        let longest = format!("{head}<MsgId>{}</MsgId>{tail}", "a".repeat(max));
        for window in [1000, super::WINDOW_BYTES, longest.len() + 1] {
            let (_, summary) = parse_in_windows(longest.as_bytes(), window);
            assert_eq!(summary.map(|s| s.message_id.map(|id| id.len())), Ok(Some(max)), "{window}");
        }
    }

    #[test]
    fn every_known_name_has_its_own_tag_and_no_other_name_has_one() {
        for (i, name) in KNOWN.iter().enumerate() {
            assert_eq!(usize::from(tag_of(name.as_bytes())), i + 1, "{name}");
        }
        for other in ["", "A", "Am", "Amt ", "amt", "AmtX", "Nm", "CstmrCdtTrfInitnX", "CstmrCdtTrfInit", "Ustrd\0"] {
            assert_eq!(tag_of(other.as_bytes()), 0, "{other:?}");
        }
    }

    #[test]
    fn transaction_locations() {
        assert_eq!(transaction_location(1, 1), "/Document/CstmrCdtTrfInitn/PmtInf[1]/CdtTrfTxInf[1]");
        assert_eq!(
            transaction_location(u64::MAX, 1_000_000),
            format!("/Document/CstmrCdtTrfInitn/PmtInf[{}]/CdtTrfTxInf[1000000]", u64::MAX)
        );
    }

    #[test]
    fn tags_name_their_elements() {
        let tags =
            [(tag::AMT, "Amt"), (tag::BICFI, "BICFI"), (tag::CDT_TRF_TX_INF, "CdtTrfTxInf"), (tag::USTRD, "Ustrd")];
        for (tag, name) in tags {
            assert_eq!(KNOWN[usize::from(tag) - 1], name);
        }
        assert_eq!(usize::from(tag::USTRD), KNOWN.len());
    }

    #[test]
    fn dates() {
        for good in ["2024-02-29", "2000-02-29", "2010-11-25", "1999-12-31"] {
            assert!(is_date(good), "{good}");
        }
        for bad in [
            "YYYY-MM-DD",
            "2023-02-29",
            "1900-02-29",
            "2024-13-01",
            "2024-00-10",
            "2024-01-32",
            "2024-1-01",
            "2024-01-01T",
        ] {
            assert!(!is_date(bad), "{bad}");
        }
    }
}
