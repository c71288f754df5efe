//! Pieces shared by the parsers: the collector behind the sink, bounded line reading, amount
//! diagnostics and exact decimal sums.

use crate::{Diagnostic, FatalError, Item, Summary};
use paycore_ledger::{parse_amount, Amount, AmountError, Currency};
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::io::{self, BufRead, Read};

/// The longest line the line-based parsers accept, in bytes. A longer line is fatal rather
/// than a reason to buffer without bound.
pub(crate) const LINE_BYTES_MAX: usize = 1 << 20;

/// `line N`, the location of a record of a line-based file, put together without `format!`'s
/// machinery (it is made for every record).
pub(crate) fn line_location(line: u64) -> String {
    let mut location = String::with_capacity(16);
    location.push_str("line ");
    location.push_str(crate::report::Digits::new().text(line));
    location
}

/// Consumes a UTF-8 byte order mark at the start of the input, if there is one.
pub(crate) fn skip_bom<R: BufRead>(input: &mut R) -> io::Result<()> {
    let starts_with_bom = input.fill_buf()?.starts_with(b"\xEF\xBB\xBF");
    if starts_with_bom {
        input.consume(3);
    }
    Ok(())
}

/// Hash references to 128 bits (two 64-bit hashes with different seeds) for the duplicate
/// check: with 64 bits, two different references of a 1M-line file would share a hash, and
/// the second be refused as a duplicate, about once in 40 million files; with 128, never in
/// practice. Fixed seeds, so that a file is judged the same every time it is validated.
const REFERENCE_HASHES: [foldhash::quality::FixedState; 2] = [
    foldhash::quality::FixedState::with_seed(0x7061_7963_6f72_6521),
    foldhash::quality::FixedState::with_seed(0x7265_6665_7265_6e63),
];

/// A reference's 128-bit hash within its scope, as two `u64`s rather than a `u128`: a `u128`
/// is aligned to 16 bytes, which made each entry of the duplicate map (hash and line) 32 bytes
/// instead of 24, or 69 MB instead of 52 MB for a million references.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct ReferenceHash(u64, u64);

fn reference_hash(scope: u64, reference: &str) -> ReferenceHash {
    let [high, low] = REFERENCE_HASHES.map(|state| state.hash_one((scope, reference)));
    // (0, 0) marks an empty slot of [`References`]; a reference that hashes to it (one in
    // 2^128) shares its hash with one that hashes to (0, 1).
    ReferenceHash(high, low.max(u64::from(high == 0)))
}

/// The references of the valid items seen so far, each with the line of the first item that
/// carried it: an open-addressing table (linear probing, slots of 24 bytes: the hash and the
/// line side by side, so a lookup touches one cache line where `HashMap`'s control bytes and
/// entries took two), with [`References::prefetch`] so that a lookup's miss can be started
/// ahead of it. The same memory as a `HashMap` (2^21 slots for a million references).
#[derive(Default)]
pub(crate) struct References {
    /// A power of two in length, or empty; an empty slot holds the hash (0, 0).
    slots: Vec<Slot>,
    len: usize,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    hash: (u64, u64),
    line: u64,
}

impl References {
    const INITIAL_SLOTS: usize = 1024;

    fn home(&self, hash: ReferenceHash) -> usize {
        slot_of(hash.0, self.slots.len() - 1)
    }

    /// Starts fetching the slot where `hash` would be looked up.
    fn prefetch(&self, hash: ReferenceHash) {
        if let Some(slot) = self.slots.get(slot_of(hash.0, self.slots.len().wrapping_sub(1))) {
            prefetch(slot);
        }
    }

    /// Records `hash` with `line`; or, when an earlier item had it, leaves it and returns
    /// that item's line.
    fn insert(&mut self, hash: ReferenceHash, line: u64) -> Option<u64> {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut at = self.home(hash);
        loop {
            let slot = &mut self.slots[at];
            if slot.hash == (0, 0) {
                *slot = Slot { hash: (hash.0, hash.1), line };
                self.len += 1;
                return None;
            }
            if slot.hash == (hash.0, hash.1) {
                return Some(slot.line);
            }
            at = (at + 1) & mask;
        }
    }

    fn contains(&self, hash: ReferenceHash) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        let mask = self.slots.len() - 1;
        let mut at = self.home(hash);
        loop {
            let slot = self.slots[at];
            if slot.hash == (hash.0, hash.1) {
                return true;
            }
            if slot.hash == (0, 0) {
                return false;
            }
            at = (at + 1) & mask;
        }
    }

    /// Doubles the slots, moving the entries over with their new slots fetched ahead.
    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(Self::INITIAL_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); size]);
        let mask = size - 1;
        let entries: Vec<Slot> = old.into_iter().filter(|slot| slot.hash != (0, 0)).collect();
        for (index, entry) in entries.iter().enumerate() {
            if let Some(ahead) = entries.get(index + LOOKAHEAD) {
                prefetch(&self.slots[slot_of(ahead.hash.0, mask)]);
            }
            let mut at = slot_of(entry.hash.0, mask);
            while self.slots[at].hash != (0, 0) {
                at = (at + 1) & mask;
            }
            self.slots[at] = *entry;
        }
    }

    /// Whether a reference of `later` is also one of `self`'s.
    fn shares_one_with(&self, later: &References) -> bool {
        let hashes: Vec<ReferenceHash> =
            later.slots.iter().filter(|s| s.hash != (0, 0)).map(|s| ReferenceHash(s.hash.0, s.hash.1)).collect();
        hashes.iter().enumerate().any(|(index, hash)| {
            if let Some(ahead) = hashes.get(index + LOOKAHEAD) {
                self.prefetch(*ahead);
            }
            self.contains(*hash)
        })
    }
}

/// The home slot of a hash whose high half is `high`, in a table of `mask + 1` slots: the low
/// bits of `high`, itself a 64-bit hash of the reference (the truncation to `usize` is the point).
#[allow(clippy::cast_possible_truncation)]
fn slot_of(high: u64, mask: usize) -> usize {
    (high as usize) & mask
}

/// Asks the processor to bring `slot`'s cache line in (a hint; nothing is read).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn prefetch(slot: &Slot) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: a prefetch reads nothing and cannot fault; the pointer comes from a reference.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(slot).cast::<i8>()) }
}

#[cfg(not(target_arch = "x86_64"))]
fn prefetch(_slot: &Slot) {}

/// Sits between a parser and the caller's sink: numbers the records, finds duplicate
/// references, counts, and sums valid items per currency.
///
/// A record reaches the sink [`LOOKAHEAD`] records after the parser handed it over, in the
/// same order: the duplicate check of a valid item looks its reference up in a table of a
/// million entries, which is two misses of the processor's caches (~380 ns a record, 29 % of
/// a 1M-line CSV file's validation), so the table's slot is fetched when the item arrives
/// ([`References::prefetch`]) and looked at while the parser reads the next records. Every
/// record still held is sent on when the collector finishes, or is dropped (a fatal error
/// ends the parse early: the records before it reach the sink, as they did at once before).
pub(crate) struct Collector<'s> {
    sink: &'s mut dyn FnMut(Result<Item, Diagnostic>),
    sent: u64,
    items: u64,
    invalid: u64,
    skipped: u64,
    totals: Vec<(Currency, u128)>,
    /// Reference hash to the line of the first valid item carrying it.
    references: References,
    /// Mixed into the reference hashes: references need only be unique within one scope.
    reference_scope: u64,
    /// Records handed over and not yet sent, oldest first.
    held: VecDeque<Held>,
}

/// A record waiting in the collector.
enum Held {
    /// A valid item and its reference's hash.
    Item(Item, Option<ReferenceHash>),
    Invalid(Diagnostic),
    Skipped(Diagnostic),
}

/// How many records the collector holds before it sends the oldest: enough parsed records
/// to cover a cache miss (a CSV record takes ~300 ns to parse).
const LOOKAHEAD: usize = 16;

impl<'s> Collector<'s> {
    pub(crate) fn new(sink: &'s mut dyn FnMut(Result<Item, Diagnostic>)) -> Self {
        Collector {
            sink,
            sent: 0,
            items: 0,
            invalid: 0,
            skipped: 0,
            totals: Vec::new(),
            references: References::default(),
            reference_scope: 0,
            held: VecDeque::with_capacity(LOOKAHEAD + 1),
        }
    }

    /// Sends a valid item on, unless its reference repeats an earlier item's.
    pub(crate) fn accept(&mut self, item: Item) {
        let hash = item.reference.as_deref().map(|reference| reference_hash(self.reference_scope, reference));
        if let Some(hash) = hash {
            self.references.prefetch(hash);
        }
        self.hold(Held::Item(item, hash));
    }

    fn hold(&mut self, record: Held) {
        self.held.push_back(record);
        if self.held.len() > LOOKAHEAD {
            self.send_oldest();
        }
    }

    /// Sends every record held.
    fn send_held(&mut self) {
        while !self.held.is_empty() {
            self.send_oldest();
        }
    }

    fn send_oldest(&mut self) {
        match self.held.pop_front() {
            Some(Held::Item(item, hash)) => self.send_item(item, hash),
            Some(Held::Invalid(diagnostic)) => self.send_invalid(diagnostic),
            Some(Held::Skipped(diagnostic)) => {
                self.sent += 1;
                self.skipped += 1;
                (self.sink)(Err(diagnostic));
            }
            None => {}
        }
    }

    fn send_item(&mut self, mut item: Item, hash: Option<ReferenceHash>) {
        if let (Some(hash), Some(reference)) = (hash, &item.reference) {
            // Told by the table, not by comparing lines: items of a file written on one line
            // (a pain.001 without line breaks) all have line 1, and a repeated reference
            // among them went through as new until session 16.
            if let Some(first) = self.references.insert(hash, item.line) {
                let message = format!(
                    "reference {reference:?} was already used by the item at line {first}; references must be unique within a file"
                );
                let field = reference_field(&item.location);
                self.send_invalid(Diagnostic {
                    line: item.line,
                    location: item.location,
                    field: Some(field.to_owned()),
                    code: "duplicate_reference",
                    message,
                    adjustment: None,
                });
                return;
            }
        }
        item.index = self.sent;
        self.sent += 1;
        self.items += 1;
        let amount = u128::from(item.amount.get());
        match self.totals.iter_mut().find(|(c, _)| *c == item.currency) {
            Some((_, sum)) => *sum = sum.saturating_add(amount),
            None => self.totals.push((item.currency, amount)),
        }
        (self.sink)(Ok(item));
    }

    fn send_invalid(&mut self, diagnostic: Diagnostic) {
        self.sent += 1;
        self.invalid += 1;
        (self.sink)(Err(diagnostic));
    }

    /// Starts a new scope for duplicate references: NACHA trace numbers need only be unique
    /// within a batch.
    pub(crate) fn set_reference_scope(&mut self, scope: u64) {
        self.reference_scope = scope;
    }

    /// Sends an invalid record on.
    pub(crate) fn reject(&mut self, diagnostic: Diagnostic) {
        self.hold(Held::Invalid(diagnostic));
    }

    /// Sends on a record that is not a payment (a NACHA prenote or zero-dollar entry): it
    /// takes an index like any record, and counts as skipped, not invalid.
    pub(crate) fn skip(&mut self, diagnostic: Diagnostic) {
        self.hold(Held::Skipped(diagnostic));
    }

    pub(crate) fn finish(mut self, summary: &mut Summary) {
        self.send_held();
        summary.items = self.items;
        summary.invalid = self.invalid;
        summary.skipped = self.skipped;
        summary.totals = std::mem::take(&mut self.totals);
    }

    /// Records handed to the collector so far (each is sent, once, in this order).
    pub(crate) fn sent(&self) -> u64 {
        self.sent + self.held.len() as u64
    }

    /// Numbers the records from `sent` on: the second part of a file cut in two starts after
    /// the records of the first.
    pub(crate) fn start_at(&mut self, sent: u64) {
        self.send_held();
        self.sent = sent;
    }

    /// What the collector found, without its sink: one part of a file cut in two.
    pub(crate) fn into_counts(mut self) -> Counts {
        self.send_held();
        Counts {
            items: self.items,
            invalid: self.invalid,
            skipped: self.skipped,
            totals: std::mem::take(&mut self.totals),
            references: std::mem::take(&mut self.references),
        }
    }
}

impl Drop for Collector<'_> {
    /// A parse that ends early (a fatal error) still sends every record it handed over.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.send_held();
        }
    }
}

/// A [`Collector`]'s findings for one part of a file parsed in two parts.
pub(crate) struct Counts {
    items: u64,
    invalid: u64,
    skipped: u64,
    totals: Vec<(Currency, u128)>,
    references: References,
}

impl Counts {
    /// Nothing counted.
    pub(crate) fn empty() -> Counts {
        Counts { items: 0, invalid: 0, skipped: 0, totals: Vec::new(), references: References::default() }
    }

    /// Whether a reference of `later` was also the reference of a valid item of `self`: the
    /// later one is then a duplicate that `later`'s own collector could not see.
    pub(crate) fn shares_a_reference_with(&self, later: &Counts) -> bool {
        self.references.shares_one_with(&later.references)
    }

    /// Adds the counts of `self` and then `later` into `summary`, as one collector reading both
    /// parts in order would have (totals in order of first appearance).
    pub(crate) fn finish_with(self, later: Counts, summary: &mut Summary) {
        summary.items = self.items + later.items;
        summary.invalid = self.invalid + later.invalid;
        summary.skipped = self.skipped + later.skipped;
        let mut totals = self.totals;
        for (currency, amount) in later.totals {
            match totals.iter_mut().find(|(c, _)| *c == currency) {
                Some((_, sum)) => *sum = sum.saturating_add(amount),
                None => totals.push((currency, amount)),
            }
        }
        summary.totals = totals;
    }
}

/// The name the file gives the reference field, guessed from the location's shape.
fn reference_field(location: &str) -> &'static str {
    if location.starts_with('/') {
        "EndToEndId"
    } else {
        "reference"
    }
}

/// Builds a per-record diagnostic.
pub(crate) fn diagnostic(line: u64, location: &str, field: &str, code: &'static str, message: String) -> Diagnostic {
    Diagnostic { line, location: location.to_owned(), field: Some(field.to_owned()), code, message, adjustment: None }
}

/// Builds a control-figure error.
pub(crate) fn control_error(line: u64, location: String, field: &str, message: String) -> Diagnostic {
    Diagnostic {
        line,
        location,
        field: Some(field.to_owned()),
        code: "control_total_mismatch",
        message,
        adjustment: None,
    }
}

/// Parses a decimal amount text exactly, turning a failure into a diagnostic that names the
/// field and says what was expected.
pub(crate) fn amount(
    text: &str,
    currency: Currency,
    field: &str,
    line: u64,
    location: &str,
) -> Result<Amount, Diagnostic> {
    parse_amount(text, currency).map_err(|error| {
        let (code, message) = amount_problem(field, text, &error);
        diagnostic(line, location, field, code, message)
    })
}

fn amount_problem(field: &str, text: &str, error: &AmountError) -> (&'static str, String) {
    match error {
        AmountError::Empty => ("missing_field", format!("{field} is empty; expected a decimal amount such as 1234.50")),
        AmountError::Syntax(_) if text.starts_with('-') => {
            ("amount_not_positive", format!("{field} {text:?} is negative; amounts must be greater than zero"))
        }
        AmountError::Syntax(_) => (
            "invalid_amount",
            format!("{field} {text:?} is not a decimal amount; expected digits with at most one '.', such as 1234.50"),
        ),
        AmountError::TooManyDecimals { currency, found, allowed, .. } => (
            "too_many_decimals",
            format!("{field} {text:?} has {found} decimals but {currency} allows at most {allowed}"),
        ),
        AmountError::NotPositive => {
            ("amount_not_positive", format!("{field} {text:?} is zero; amounts must be greater than zero"))
        }
        AmountError::TooLarge(_) => {
            ("invalid_amount", format!("{field} {text:?} is too large; at most 9223372036854775807 minor units"))
        }
    }
}

/// Looks a currency code up, with a diagnostic naming the field when it is unknown.
pub(crate) fn currency(code: &str, field: &str, line: u64, location: &str) -> Result<Currency, Diagnostic> {
    Currency::from_code(code).ok_or_else(|| {
        let hint = if Currency::from_code(&code.to_ascii_uppercase()).is_some() {
            " (currency codes are upper case)"
        } else {
            ""
        };
        diagnostic(
            line,
            location,
            field,
            "invalid_currency",
            format!("{field} {code:?} is not an ISO 4217 currency code; expected three upper-case letters such as EUR{hint}"),
        )
    })
}

/// Formats a sum of minor units with the currency's decimals and code: `1234.50 EUR`.
pub(crate) fn format_minor(minor: u128, currency: Currency) -> String {
    format!("{} {currency}", Decimal { scaled: minor, scale: currency.minor_units() }.to_text())
}

/// A non-negative decimal number, exact: `scaled / 10^scale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Decimal {
    scaled: u128,
    scale: u8,
}

/// The number of decimals every [`DecimalSum`] is kept in; more than any amount carries.
const SUM_SCALE: u8 = 18;

impl Decimal {
    /// Parses `digits[.digits]` with at most 18 decimals (no sign, no exponent).
    pub(crate) fn parse(text: &str) -> Option<Decimal> {
        let (whole, fraction) = match text.split_once('.') {
            Some((w, f)) => (w, f),
            None => (text, ""),
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > usize::from(SUM_SCALE) {
            return None;
        }
        if text.ends_with('.') {
            return None;
        }
        let mut scaled: u128 = 0;
        for b in whole.bytes().chain(fraction.bytes()) {
            scaled = scaled.checked_mul(10)?.checked_add(u128::from(b - b'0'))?;
        }
        Some(Decimal { scaled, scale: u8::try_from(fraction.len()).ok()? })
    }

    fn at_scale(self, scale: u8) -> Option<u128> {
        self.scaled.checked_mul(10u128.checked_pow(u32::from(scale.checked_sub(self.scale)?))?)
    }

    /// The number as decimal text with exactly `scale` decimals.
    pub(crate) fn to_text(self) -> String {
        let digits = self.scaled.to_string();
        let scale = usize::from(self.scale);
        if scale == 0 {
            return digits;
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (whole, fraction) = padded.split_at(padded.len() - scale);
        format!("{whole}.{fraction}")
    }
}

/// An exact running sum of decimal texts, remembering the most decimals seen so that it prints
/// the way the file wrote its amounts (`150.00`, not `150`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DecimalSum {
    scaled: u128,
    scale: u8,
    overflowed: bool,
}

impl DecimalSum {
    pub(crate) fn add(&mut self, value: Decimal) {
        match value.at_scale(SUM_SCALE).and_then(|v| self.scaled.checked_add(v)) {
            Some(sum) => self.scaled = sum,
            None => self.overflowed = true,
        }
        self.scale = self.scale.max(value.scale);
    }

    /// The sum of `self` and `other`, as if one sum had added both's values.
    pub(crate) fn merged(self, other: DecimalSum) -> DecimalSum {
        let scaled = self.scaled.checked_add(other.scaled);
        DecimalSum {
            scaled: scaled.unwrap_or(0),
            scale: self.scale.max(other.scale),
            overflowed: self.overflowed || other.overflowed || scaled.is_none(),
        }
    }

    /// Whether the sum equals `value` exactly.
    pub(crate) fn equals(&self, value: Decimal) -> bool {
        !self.overflowed && value.at_scale(SUM_SCALE) == Some(self.scaled)
    }

    pub(crate) fn to_text(self) -> String {
        if self.overflowed {
            return "more than 3.4e20".to_owned();
        }
        let divisor = 10u128.pow(u32::from(SUM_SCALE - self.scale));
        Decimal { scaled: self.scaled / divisor, scale: self.scale }.to_text()
    }
}

/// The input of a parser that does not read line by line (CSV and refunds files, whose quoted
/// fields may span lines): refuses to hand out more than [`LINE_BYTES_MAX`] bytes between two
/// calls of [`Bounded::mark`], so that one endless record is fatal rather than a reason to
/// buffer without bound. (pain.001 reads windows of its own and limits each event's length:
/// `pain001::read_events`.)
pub(crate) struct Bounded<R> {
    input: R,
    since_mark: usize,
    exceeded: bool,
}

impl<R> Bounded<R> {
    pub(crate) fn new(input: R) -> Self {
        Bounded { input, since_mark: 0, exceeded: false }
    }

    /// A record or event starts here.
    pub(crate) fn mark(&mut self) {
        self.since_mark = 0;
    }

    /// Whether reading stopped because a record was too long.
    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded
    }
}

impl<R: BufRead> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Bounded<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.since_mark > LINE_BYTES_MAX {
            self.exceeded = true;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a record is longer than {LINE_BYTES_MAX} bytes"),
            ));
        }
        self.input.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.since_mark = self.since_mark.saturating_add(amount);
        self.input.consume(amount);
    }
}

/// Reads a file line by line into a reused buffer, refusing lines longer than
/// [`LINE_BYTES_MAX`], so memory stays bounded.
pub(crate) struct Lines<R> {
    input: R,
    buffer: Vec<u8>,
    line: u64,
}

impl<R: BufRead> Lines<R> {
    pub(crate) fn new(input: R) -> Self {
        Lines { input, buffer: Vec::new(), line: 0 }
    }

    /// The next line without its `\n` or `\r\n`, with its 1-based number.
    pub(crate) fn next_line(&mut self) -> Result<Option<(u64, &[u8])>, FatalError> {
        self.buffer.clear();
        let limit = u64::try_from(LINE_BYTES_MAX).unwrap_or(u64::MAX).saturating_add(1);
        let read = (&mut self.input).take(limit).read_until(b'\n', &mut self.buffer)?;
        if read == 0 {
            return Ok(None);
        }
        self.line += 1;
        if self.buffer.len() > LINE_BYTES_MAX {
            return Err(FatalError::Malformed {
                line: self.line,
                message: format!("the line is longer than {LINE_BYTES_MAX} bytes"),
            });
        }
        let mut content = self.buffer.as_slice();
        if let Some(rest) = content.strip_suffix(b"\n") {
            content = rest;
        }
        if let Some(rest) = content.strip_suffix(b"\r") {
            content = rest;
        }
        Ok(Some((self.line, content)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The reference table answers as a map from hash to first line would, through its
        /// growth (a few hundred to a few thousand references, several doublings), including
        /// hashes whose home slots collide (few distinct low bits) and the hash (0, 0).
        #[test]
        fn the_reference_table_keeps_the_first_line_of_each_hash(
            hashes in proptest::collection::vec((0u64..64, any::<u64>(), 0u64..4), 1..3000),
            probe in proptest::collection::vec((0u64..64, any::<u64>()), 0..50),
        ) {
            let mut table = References::default();
            let mut oracle = std::collections::HashMap::new();
            for (line, &(high, low, shift)) in (1u64..).zip(&hashes) {
                // `shift` makes some hashes repeat earlier ones: duplicates.
                let hash = if shift == 0 && line > 1 { hashes[usize::try_from(line - 2).unwrap() / 2] } else { (high, low, shift) };
                let key = reference_hash_parts(hash.0 << 20, hash.1);
                let earlier = oracle.get(&(key.0, key.1)).copied();
                oracle.entry((key.0, key.1)).or_insert(line);
                prop_assert_eq!(table.insert(key, line), earlier);
            }
            prop_assert_eq!(table.len, oracle.len());
            for (high, low) in probe {
                let key = reference_hash_parts(high << 20, low);
                prop_assert_eq!(table.contains(key), oracle.contains_key(&(key.0, key.1)));
            }
            // Split in two, the later half shares a hash with the earlier one exactly when
            // the oracle says so.
            let (mut earlier, mut later) = (References::default(), References::default());
            let keys: Vec<_> = oracle.keys().copied().collect();
            for (line, key) in (1u64..).zip(&keys) {
                let target = if line % 2 == 0 { &mut earlier } else { &mut later };
                target.insert(ReferenceHash(key.0, key.1), line);
            }
            prop_assert!(!earlier.shares_one_with(&later));
            if let Some(key) = keys.first() {
                earlier.insert(ReferenceHash(key.0, key.1), 0);
                prop_assert!(earlier.shares_one_with(&later));
            }
        }
    }

    /// A hash as [`reference_hash`] makes it, from its two halves.
    fn reference_hash_parts(high: u64, low: u64) -> ReferenceHash {
        ReferenceHash(high, low.max(u64::from(high == 0)))
    }

    /// Records reach the sink in the order they were handed over, each once, also when the
    /// parse ends early; a duplicate is refused with the first item's line.
    #[test]
    fn held_records_reach_the_sink_in_order_even_when_the_parse_stops_early() {
        let item = |line: u64, reference: &str| Item {
            index: 0,
            line,
            location: line_location(line),
            payer: None,
            payee: "acc".into(),
            amount: Amount::new(100).unwrap(),
            currency: Currency::from_code("EUR").unwrap(),
            reference: Some(reference.into()),
            instruction_id: None,
            remittance: None,
            payment_information_id: None,
        };
        let invalid = |line: u64| diagnostic(line, &line_location(line), "amount", "invalid_amount", "bad".into());
        for stop_early in [false, true] {
            let mut seen = Vec::new();
            let mut sink = |record: Result<Item, Diagnostic>| {
                seen.push(match record {
                    Ok(item) => (item.line, item.index, "ok"),
                    Err(diagnostic) => (diagnostic.line, u64::MAX, diagnostic.code),
                })
            };
            let mut collector = Collector::new(&mut sink);
            for line in 1..=100u64 {
                if line % 7 == 0 {
                    collector.reject(invalid(line));
                } else if line == 50 {
                    collector.accept(item(line, "ref-3"));
                } else {
                    collector.accept(item(line, &format!("ref-{line}")));
                }
            }
            assert_eq!(collector.sent(), 100);
            if stop_early {
                drop(collector);
            } else {
                let mut summary = Summary::default();
                collector.finish(&mut summary);
                assert_eq!((summary.items, summary.invalid), (100 - 14 - 1, 15));
            }
            let lines: Vec<u64> = seen.iter().map(|(line, _, _)| *line).collect();
            assert_eq!(lines, (1..=100).collect::<Vec<_>>());
            assert_eq!(seen[49], (50, u64::MAX, "duplicate_reference"));
            // Indexes count every record before, valid or not.
            assert_eq!(seen[98], (99, 98, "ok"));
        }
    }

    #[test]
    fn decimal_sums_are_exact() {
        let mut sum = DecimalSum::default();
        for text in ["0.1", "0.2", "150.00"] {
            sum.add(Decimal::parse(text).unwrap());
        }
        assert_eq!(sum.to_text(), "150.30");
        assert!(sum.equals(Decimal::parse("150.3").unwrap()));
        assert!(sum.equals(Decimal::parse("150.300000").unwrap()));
        assert!(!sum.equals(Decimal::parse("150.31").unwrap()));
        for bad in ["", ".5", "5.", "-1", "1e3", "1.2.3", " 1", "1.0000000000000000000"] {
            assert_eq!(Decimal::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_reference_table_slot_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 24);
    }

    #[test]
    fn line_locations_are_written_as_format_writes_them() {
        for line in [0, 1, 9, 10, 1_000_000, u64::MAX] {
            assert_eq!(line_location(line), format!("line {line}"));
        }
    }

    #[test]
    fn formats_sums_in_minor_units() {
        let eur = Currency::from_code("EUR").unwrap();
        assert_eq!(format_minor(665586, eur), "6655.86 EUR");
        assert_eq!(format_minor(5, eur), "0.05 EUR");
        assert_eq!(format_minor(500, Currency::from_code("JPY").unwrap()), "500 JPY");
    }
}
