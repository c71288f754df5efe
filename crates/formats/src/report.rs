//! Per-item results and the CSV report.

use paycore_ledger::Currency;
use std::io::{self, Write};

/// What happened to one item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemStatus {
    Succeeded,
    /// Failed with a paycore result code such as `insufficient_funds` or a diagnostic code
    /// such as `too_many_decimals`.
    Failed {
        code: String,
    },
    /// Not processed yet.
    Pending,
    /// Paid, then returned by the receiving bank (a NACHA return) with this R-code.
    Returned {
        code: String,
    },
    /// A record that is not a payment and not a refusal, reported with its code: a NACHA
    /// prenote (`prenote`), zero-dollar entry (`zero_dollar_entry`) or recorded notification of
    /// change (`notification_recorded`). The CSV report writes it as `failed` with its code, as
    /// before; pain.002 accepts it (`ACCP`, the code as its reason), and it counts as neither a
    /// success nor a rejection in the group status.
    Skipped {
        code: String,
    },
}

impl ItemStatus {
    /// The status as the CSV report writes it.
    pub fn name(&self) -> &'static str {
        self.as_line().name()
    }

    /// The same status, its code borrowed.
    pub fn as_line(&self) -> LineStatus<'_> {
        match self {
            ItemStatus::Succeeded => LineStatus::Succeeded,
            ItemStatus::Failed { code } => LineStatus::Failed { code },
            ItemStatus::Pending => LineStatus::Pending,
            ItemStatus::Returned { code } => LineStatus::Returned { code },
            ItemStatus::Skipped { code } => LineStatus::Skipped { code },
        }
    }
}

/// [`ItemStatus`] with its code borrowed, as a [`ReportLine`] carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineStatus<'a> {
    Succeeded,
    Failed { code: &'a str },
    Pending,
    Returned { code: &'a str },
    Skipped { code: &'a str },
}

impl<'a> LineStatus<'a> {
    /// The status as the CSV report writes it.
    pub fn name(self) -> &'static str {
        let stored = match self {
            LineStatus::Succeeded => paycore_ledger::ItemStatus::Succeeded,
            LineStatus::Failed { .. } | LineStatus::Skipped { .. } => paycore_ledger::ItemStatus::Failed,
            LineStatus::Pending => paycore_ledger::ItemStatus::Pending,
            LineStatus::Returned { .. } => paycore_ledger::ItemStatus::Returned,
        };
        stored.as_str()
    }

    /// The code of a failed, returned or skipped item.
    pub fn code(self) -> Option<&'a str> {
        match self {
            LineStatus::Failed { code } | LineStatus::Returned { code } | LineStatus::Skipped { code } => Some(code),
            LineStatus::Succeeded | LineStatus::Pending => None,
        }
    }
}

/// One line of a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportItem {
    pub line: u64,
    pub location: String,
    pub reference: Option<String>,
    pub instruction_id: Option<String>,
    pub payment_information_id: Option<String>,
    pub payer: Option<String>,
    pub payee: String,
    /// Minor units; 0 when the file's amount could not be read.
    pub amount: u64,
    /// `None` when the file's currency could not be read.
    pub currency: Option<Currency>,
    pub status: ItemStatus,
}

impl ReportItem {
    /// The line as the writers take it, borrowed from the item.
    pub fn as_line(&self) -> ReportLine<'_> {
        ReportLine {
            line: self.line,
            reference: self.reference.as_deref(),
            instruction_id: self.instruction_id.as_deref(),
            payment_information_id: self.payment_information_id.as_deref(),
            payer: self.payer.as_deref(),
            payee: &self.payee,
            amount: self.amount,
            currency: self.currency,
            status: self.status.as_line(),
        }
    }
}

/// One line of a report, its texts borrowed: what [`CsvReportWriter::line`] and
/// [`crate::Pain002Writer::line`] write, from a [`ReportItem`] ([`ReportItem::as_line`]) or
/// straight from where the item is stored, without copying its texts. An item's `location` is
/// not here: neither report writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportLine<'a> {
    pub line: u64,
    pub reference: Option<&'a str>,
    pub instruction_id: Option<&'a str>,
    pub payment_information_id: Option<&'a str>,
    pub payer: Option<&'a str>,
    pub payee: &'a str,
    /// Minor units; 0 when the file's amount could not be read.
    pub amount: u64,
    /// `None` when the file's currency could not be read.
    pub currency: Option<Currency>,
    pub status: LineStatus<'a>,
}

/// Maps a paycore result or diagnostic code to an ISO 20022 `ExternalStatusReason1Code`.
///
/// | paycore code | ISO code | ISO name |
/// |---|---|---|
/// | `insufficient_funds` | AM04 | InsufficientFunds |
/// | `account_not_found`, `invalid_iban` | AC01 | IncorrectAccountNumber (the account does not exist, on either side, or its IBAN is not valid) |
/// | `payer_account_not_found` | AC02 | InvalidDebtorAccountNumber |
/// | `payee_account_not_found` | AC03 | InvalidCreditorAccountNumber |
/// | `account_closed` | AC04 | ClosedAccountNumber |
/// | `account_frozen`, `account_blocked` | AC06 | BlockedAccount |
/// | `currency_mismatch`, `invalid_currency` | AM03 | NotAllowedCurrency |
/// | `duplicate_reference` | AM05 | Duplication |
/// | `invalid_amount`, `too_many_decimals`, `amount_not_positive` | AM12 | InvalidAmount |
/// | `overflow`, `limit_exceeded` | AM02 | NotAllowedAmount |
/// | `control_total_mismatch` | AM10 | InvalidControlSum |
/// | `invalid_date` | DT01 | InvalidDate |
/// | `invalid_routing_number`, `invalid_bic` | RC01 | BankIdentifierIncorrect |
/// | `syntax`, `missing_field`, `field_count_mismatch` | FF01 | InvalidFileFormat |
/// | `cancelled` | DS02 | OrderCancelled |
/// | anything else | NARR | Narrative (the paycore code goes in `AddtlInf`) |
pub fn iso_reason(code: &str) -> &'static str {
    match code {
        "insufficient_funds" => "AM04",
        "account_not_found" | "invalid_iban" => "AC01",
        "payer_account_not_found" => "AC02",
        "payee_account_not_found" => "AC03",
        "account_closed" => "AC04",
        "account_frozen" | "account_blocked" => "AC06",
        "currency_mismatch" | "invalid_currency" => "AM03",
        "duplicate_reference" => "AM05",
        "invalid_amount" | "too_many_decimals" | "amount_not_positive" => "AM12",
        "overflow" | "limit_exceeded" => "AM02",
        "control_total_mismatch" => "AM10",
        "invalid_date" => "DT01",
        "invalid_routing_number" | "invalid_bic" => "RC01",
        "syntax" | "missing_field" | "field_count_mismatch" => "FF01",
        "cancelled" => "DS02",
        _ => "NARR",
    }
}

/// The pain.002 group status for a finished batch: `ACCP` when nothing failed, `RJCT` when
/// nothing succeeded (and something failed), `PART` otherwise. Skipped records
/// ([`ItemStatus::Skipped`]) are counted in neither.
pub fn group_status(succeeded: u64, failed: u64) -> &'static str {
    match (succeeded, failed) {
        (_, 0) => "ACCP",
        (0, _) => "RJCT",
        _ => "PART",
    }
}

/// Writes the CSV report one item at a time: a header row, then
/// `line,reference,payer,payee,amount,currency,status,failure_code` per item, `\n` line ends,
/// fields quoted only when they need it, amounts in major units with the currency's decimals.
///
/// The bytes are the `csv` crate's (`QuoteStyle::Necessary`, `\n` terminator: a field is
/// quoted when it holds `,` `"` `\r` or `\n`, and a quote in it is doubled), written by hand:
/// the crate's writer took ~1 900 instructions a line, most of the report follower's, for
/// eight short fields that almost never need quotes (session 16). A test compares the two on
/// any text.
pub struct CsvReportWriter<W: Write> {
    out: W,
    /// Lines not yet handed to `out`: up to [`CSV_BUFFER`] bytes, as the crate's writer kept.
    buffer: Vec<u8>,
}

/// The bytes [`CsvReportWriter`] gathers before it writes them out.
const CSV_BUFFER: usize = 8 * 1024;

const CSV_HEADER: &[u8] = b"line,reference,payer,payee,amount,currency,status,failure_code\n";

impl<W: Write> CsvReportWriter<W> {
    /// Writes the header row.
    pub fn new(out: W) -> io::Result<Self> {
        let mut buffer = Vec::with_capacity(CSV_BUFFER + 1024);
        buffer.extend_from_slice(CSV_HEADER);
        Ok(CsvReportWriter { out, buffer })
    }

    /// Writes one item's line.
    pub fn item(&mut self, item: &ReportItem) -> io::Result<()> {
        self.line(&item.as_line())
    }

    /// Writes one line; its number and amount are written on the stack, not allocated.
    pub fn line(&mut self, item: &ReportLine<'_>) -> io::Result<()> {
        let (mut line, mut amount) = (Digits::new(), Amount::new());
        let fields: [&[u8]; 8] = [
            line.of(item.line),
            item.reference.unwrap_or("").as_bytes(),
            item.payer.unwrap_or("").as_bytes(),
            item.payee.as_bytes(),
            item.currency.map_or(&[][..], |c| amount.of(item.amount, c)),
            item.currency.map_or("", Currency::code).as_bytes(),
            item.status.name().as_bytes(),
            item.status.code().unwrap_or("").as_bytes(),
        ];
        for (index, field) in fields.into_iter().enumerate() {
            if index > 0 {
                self.buffer.push(b',');
            }
            csv_field(&mut self.buffer, field);
        }
        self.buffer.push(b'\n');
        if self.buffer.len() >= CSV_BUFFER {
            self.out.write_all(&self.buffer)?;
            self.buffer.clear();
        }
        Ok(())
    }

    /// Hands what the writer holds to the output and flushes it (the writer keeps up to
    /// 8 KiB of lines of its own).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.write_all(&self.buffer)?;
        self.buffer.clear();
        self.out.flush()
    }

    /// Flushes and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush()?;
        Ok(self.out)
    }
}

/// The bytes that make a CSV field quoted. (Four comparisons a byte were ~400 instructions a
/// line, a lookup a byte as many; memchr's vector search more, on fields this short.)
const QUOTED: [bool; 256] = {
    let mut table = [false; 256];
    table[b',' as usize] = true;
    table[b'"' as usize] = true;
    table[b'\n' as usize] = true;
    table[b'\r' as usize] = true;
    table
};

/// Whether `field` holds a byte of [`QUOTED`]: eight bytes at a time (each compared with the
/// four at once, the bit trick that finds a zero byte in a word), then the rest by table.
fn needs_quotes(field: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Whether a byte of `word` equals `byte`: exact (a byte of `x` is zero iff it matched).
    let holds = |word: u64, byte: u8| {
        let x = word ^ (ONES * u64::from(byte));
        x.wrapping_sub(ONES) & !x & HIGH != 0
    };
    let mut words = field.chunks_exact(8);
    for word in &mut words {
        let Ok(bytes) = <[u8; 8]>::try_from(word) else { return true };
        let word = u64::from_le_bytes(bytes);
        if holds(word, b',') | holds(word, b'"') | holds(word, b'\n') | holds(word, b'\r') {
            return true;
        }
    }
    words.remainder().iter().any(|b| QUOTED[usize::from(*b)])
}

/// Appends one CSV field: as it is, or in quotes with its quotes doubled when it holds a
/// delimiter, a quote or a line end.
fn csv_field(out: &mut Vec<u8>, field: &[u8]) {
    if !needs_quotes(field) {
        out.extend_from_slice(field);
        return;
    }
    out.push(b'"');
    for piece in field.split_inclusive(|b| *b == b'"') {
        out.extend_from_slice(piece);
        if piece.ends_with(b"\"") {
            out.push(b'"');
        }
    }
    out.push(b'"');
}

/// The decimal digits of a number, written into a buffer on the stack.
pub(crate) struct Digits([u8; 20]);

impl Digits {
    pub(crate) fn new() -> Digits {
        Digits([0; 20])
    }

    /// `n` in decimal, as text.
    pub(crate) fn text(&mut self, n: u64) -> &str {
        // Only ASCII digits were written.
        std::str::from_utf8(self.of(n)).unwrap_or_default()
    }

    /// `n` in decimal.
    pub(crate) fn of(&mut self, n: u64) -> &[u8] {
        let mut start = self.0.len();
        let mut n = n;
        loop {
            start -= 1;
            self.0[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                return &self.0[start..];
            }
        }
    }
}

/// An amount of minor units in major units with the currency's decimals, exactly as
/// [`paycore_ledger::format_amount`] writes it, in a buffer on the stack.
pub(crate) struct Amount([u8; 24]);

impl Amount {
    pub(crate) fn new() -> Amount {
        Amount([0; 24])
    }

    pub(crate) fn of(&mut self, minor: u64, currency: Currency) -> &[u8] {
        let units = usize::from(currency.minor_units());
        let mut start = self.0.len();
        let mut n = minor;
        // The decimals (zeros in front), the point, then at least one digit of the units.
        for written in 0.. {
            if written == units && units > 0 {
                start -= 1;
                self.0[start] = b'.';
            }
            start -= 1;
            self.0[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 && written >= units {
                break;
            }
        }
        &self.0[start..]
    }
}

/// Writes a whole CSV report; see [`CsvReportWriter`].
pub fn write_csv_report<W: Write>(items: impl IntoIterator<Item = ReportItem>, out: W) -> io::Result<W> {
    let mut writer = CsvReportWriter::new(out)?;
    for item in items {
        writer.item(&item)?;
    }
    writer.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{Amount, CsvReportWriter, Digits, LineStatus, ReportLine};
    use paycore_ledger::{format_amount, Currency};
    use proptest::prelude::*;

    /// What the `csv` crate writes for the same lines: the writer the report used until
    /// session 16, kept as the oracle of the hand-written one.
    fn csv_crate(lines: &[ReportLine<'_>]) -> Vec<u8> {
        let mut writer = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
        writer
            .write_record(["line", "reference", "payer", "payee", "amount", "currency", "status", "failure_code"])
            .unwrap();
        for item in lines {
            let (mut line, mut amount) = (Digits::new(), Amount::new());
            writer
                .write_record([
                    line.of(item.line),
                    item.reference.unwrap_or("").as_bytes(),
                    item.payer.unwrap_or("").as_bytes(),
                    item.payee.as_bytes(),
                    item.currency.map_or(&[][..], |c| amount.of(item.amount, c)),
                    item.currency.map_or("", Currency::code).as_bytes(),
                    item.status.name().as_bytes(),
                    item.status.code().unwrap_or("").as_bytes(),
                ])
                .unwrap();
        }
        writer.into_inner().unwrap()
    }

    fn by_hand(lines: &[ReportLine<'_>], flush_every: usize) -> Vec<u8> {
        let mut writer = CsvReportWriter::new(Vec::new()).unwrap();
        for (index, line) in lines.iter().enumerate() {
            writer.line(line).unwrap();
            if flush_every > 0 && index % flush_every == 0 {
                writer.flush().unwrap();
            }
        }
        writer.finish().unwrap()
    }

    /// Texts made of the characters that decide quoting, and others.
    fn text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just(","),
                Just("\""),
                Just("\n"),
                Just("\r"),
                Just(" "),
                Just("a"),
                Just("\u{e9}"),
                Just("\u{4e2d}"),
                Just("#"),
                Just("'")
            ],
            0..12,
        )
        .prop_map(|pieces| pieces.concat())
    }

    proptest! {
        /// The hand-written CSV lines are the csv crate's, byte for byte, whatever the texts,
        /// and whenever the writer is flushed.
        #[test]
        fn csv_lines_are_the_csv_crates_bytes(
            texts in proptest::collection::vec((proptest::option::of(text()), proptest::option::of(text()), text(), text()), 1..40),
            numbers in proptest::collection::vec((any::<u64>(), any::<u64>(), 0usize..6), 40),
            flush_every in 0usize..5,
        ) {
            let currencies = [None, Currency::from_code("EUR"), Currency::from_code("JPY"), Currency::from_code("KWD")];
            let lines: Vec<ReportLine<'_>> = texts
                .iter()
                .zip(&numbers)
                .map(|((reference, payer, payee, code), &(line, amount, kind))| ReportLine {
                    line,
                    reference: reference.as_deref(),
                    instruction_id: None,
                    payment_information_id: None,
                    payer: payer.as_deref(),
                    payee,
                    amount,
                    currency: currencies[kind % currencies.len()],
                    status: match kind {
                        0 => LineStatus::Succeeded,
                        1 => LineStatus::Pending,
                        2 => LineStatus::Failed { code },
                        3 => LineStatus::Returned { code },
                        _ => LineStatus::Skipped { code },
                    },
                })
                .collect();
            prop_assert_eq!(by_hand(&lines, flush_every), csv_crate(&lines));
        }
    }

    fn check(minor: u64) {
        assert_eq!(Digits::new().of(minor), minor.to_string().as_bytes());
        assert_eq!(Digits::new().text(minor), minor.to_string());
        for code in ["JPY", "EUR", "KWD", "CLF"] {
            let currency = Currency::from_code(code).unwrap();
            assert_eq!(Amount::new().of(minor, currency), format_amount(minor, currency).as_bytes(), "{minor} {code}");
        }
    }

    #[test]
    fn numbers_on_the_stack_read_as_format_amount_writes_them() {
        for minor in [0, 1, 9, 10, 99, 100, 101, 999, 1000, 1001, 10_000, 123_450, u64::MAX - 1, u64::MAX] {
            check(minor);
        }
    }

    proptest! {
        #[test]
        fn any_amount_reads_as_format_amount_writes_it(minor in any::<u64>()) {
            check(minor);
        }
    }
}
