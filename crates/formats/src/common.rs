//! Pieces shared by the parsers: the collector behind the sink, bounded line reading, amount
//! diagnostics and exact decimal sums.

use crate::{Diagnostic, FatalError, Item, Summary};
use paycore_ledger::{parse_amount, Amount, AmountError, Currency};
use std::collections::HashMap;
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
    ReferenceHash(high, low)
}

/// Sits between a parser and the caller's sink: numbers the records, finds duplicate
/// references, counts, and sums valid items per currency.
pub(crate) struct Collector<'s> {
    sink: &'s mut dyn FnMut(Result<Item, Diagnostic>),
    sent: u64,
    items: u64,
    invalid: u64,
    skipped: u64,
    totals: Vec<(Currency, u128)>,
    /// Reference hash to the line of the first valid item carrying it. Keys are hashes
    /// already: foldhash's fast mixing rather than SipHash a second time.
    references: HashMap<ReferenceHash, u64, foldhash::fast::FixedState>,
    /// Mixed into the reference hashes: references need only be unique within one scope.
    reference_scope: u64,
}

impl<'s> Collector<'s> {
    pub(crate) fn new(sink: &'s mut dyn FnMut(Result<Item, Diagnostic>)) -> Self {
        Collector {
            sink,
            sent: 0,
            items: 0,
            invalid: 0,
            skipped: 0,
            totals: Vec::new(),
            references: HashMap::with_hasher(foldhash::fast::FixedState::default()),
            reference_scope: 0,
        }
    }

    /// Sends a valid item on, unless its reference repeats an earlier item's.
    pub(crate) fn accept(&mut self, mut item: Item) {
        if let Some(reference) = &item.reference {
            let hash = reference_hash(self.reference_scope, reference);
            let first = *self.references.entry(hash).or_insert(item.line);
            if first != item.line {
                let message = format!(
                    "reference {reference:?} was already used by the item at line {first}; references must be unique within a file"
                );
                let field = reference_field(&item.location);
                self.reject(Diagnostic {
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

    /// Starts a new scope for duplicate references: NACHA trace numbers need only be unique
    /// within a batch.
    pub(crate) fn set_reference_scope(&mut self, scope: u64) {
        self.reference_scope = scope;
    }

    /// Sends an invalid record on.
    pub(crate) fn reject(&mut self, diagnostic: Diagnostic) {
        self.sent += 1;
        self.invalid += 1;
        (self.sink)(Err(diagnostic));
    }

    /// Sends on a record that is not a payment (a NACHA prenote or zero-dollar entry): it
    /// takes an index like any record, and counts as skipped, not invalid.
    pub(crate) fn skip(&mut self, diagnostic: Diagnostic) {
        self.sent += 1;
        self.skipped += 1;
        (self.sink)(Err(diagnostic));
    }

    pub(crate) fn finish(self, summary: &mut Summary) {
        summary.items = self.items;
        summary.invalid = self.invalid;
        summary.skipped = self.skipped;
        summary.totals = self.totals;
    }

    /// Records sent to the sink so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }

    /// Numbers the records from `sent` on: the second part of a file cut in two starts after
    /// the records of the first.
    pub(crate) fn start_at(&mut self, sent: u64) {
        self.sent = sent;
    }

    /// What the collector found, without its sink: one part of a file cut in two.
    pub(crate) fn into_counts(self) -> Counts {
        Counts {
            items: self.items,
            invalid: self.invalid,
            skipped: self.skipped,
            totals: self.totals,
            references: self.references,
        }
    }
}

/// A [`Collector`]'s findings for one part of a file parsed in two parts.
pub(crate) struct Counts {
    items: u64,
    invalid: u64,
    skipped: u64,
    totals: Vec<(Currency, u128)>,
    references: HashMap<ReferenceHash, u64, foldhash::fast::FixedState>,
}

impl Counts {
    /// Nothing counted.
    pub(crate) fn empty() -> Counts {
        Counts {
            items: 0,
            invalid: 0,
            skipped: 0,
            totals: Vec::new(),
            references: HashMap::with_hasher(foldhash::fast::FixedState::default()),
        }
    }

    /// Whether a reference of `later` was also the reference of a valid item of `self`: the
    /// later one is then a duplicate that `later`'s own collector could not see.
    pub(crate) fn shares_a_reference_with(&self, later: &Counts) -> bool {
        later.references.keys().any(|hash| self.references.contains_key(hash))
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
    fn a_reference_map_entry_is_24_bytes() {
        assert_eq!(std::mem::size_of::<(ReferenceHash, u64)>(), 24);
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
