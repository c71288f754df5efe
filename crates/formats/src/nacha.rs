//! NACHA ACH input: fixed 94-character records.

use crate::common::{self, Collector, Lines};
use crate::{Diagnostic, FatalError, Item, ParseOptions, Summary};
use paycore_ledger::{format_amount, Amount, Currency};
use std::io::BufRead;

const RECORD_LENGTH: usize = 94;
/// Entry hashes keep their last ten digits.
const HASH_MODULUS: u128 = 10_000_000_000;

/// Counts and sums of a batch or of the whole file, computed from the entries.
#[derive(Default, Clone, Copy)]
struct Totals {
    entries_and_addenda: u64,
    hash: u128,
    debit: u128,
    credit: u128,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.entries_and_addenda += other.entries_and_addenda;
        self.hash += other.hash;
        self.debit += other.debit;
        self.credit += other.credit;
    }
}

struct Batch {
    number: u64,
    line: u64,
    sec: String,
    totals: Totals,
    /// Whether the last record was an entry (so an addenda may follow).
    in_entry: bool,
}

struct Parser<'c, 's, 'o> {
    out: &'c mut Collector<'s>,
    options: &'o ParseOptions,
    usd: Currency,
    /// Records read, not counting the 9-padding after the file control.
    records: u64,
    header_seen: bool,
    control_seen: bool,
    batches: u64,
    batch: Option<Batch>,
    file: Totals,
    control_errors: Vec<Diagnostic>,
}

pub(crate) fn parse<R: BufRead>(
    input: R,
    options: &ParseOptions,
    out: &mut Collector<'_>,
    summary: &mut Summary,
) -> Result<(), FatalError> {
    let usd = Currency::from_code("USD")
        .ok_or_else(|| FatalError::Malformed { line: 0, message: "the currency table has no USD".to_owned() })?;
    let mut parser = Parser {
        out,
        options,
        usd,
        records: 0,
        header_seen: false,
        control_seen: false,
        batches: 0,
        batch: None,
        file: Totals::default(),
        control_errors: Vec::new(),
    };
    let mut lines = Lines::new(input);
    let mut padded = String::with_capacity(RECORD_LENGTH);
    let mut last_line = 0;
    while let Some((line, bytes)) = lines.next_line()? {
        last_line = line;
        if bytes.is_empty() {
            continue;
        }
        let record = record(bytes, line, &mut padded)?;
        parser.record(record, line)?;
    }
    parser.finish(last_line, summary)
}

/// Checks a line's characters and length, padding a trimmed header or file control record.
fn record<'a>(bytes: &'a [u8], line: u64, padded: &'a mut String) -> Result<&'a str, FatalError> {
    let text = std::str::from_utf8(bytes).ok().filter(|t| t.is_ascii()).ok_or_else(|| FatalError::Malformed {
        line,
        message: "the line has a character outside ASCII; NACHA files are ASCII".to_owned(),
    })?;
    if text.len() == RECORD_LENGTH {
        return Ok(text);
    }
    // A header or file control record whose trailing blanks were trimmed is still whole: the
    // fields after position 40 (header) or 55 (file control) are optional or reserved blanks.
    let minimum = match text.as_bytes().first() {
        Some(b'1') => 40,
        Some(b'9') if !text.bytes().all(|b| b == b'9') => 55,
        _ => usize::MAX,
    };
    if text.len() < RECORD_LENGTH && text.len() >= minimum && !text.ends_with(' ') {
        padded.clear();
        padded.push_str(text);
        padded.extend(std::iter::repeat_n(' ', RECORD_LENGTH - text.len()));
        return Ok(padded.as_str());
    }
    Err(FatalError::RecordLength { line, length: text.len() })
}

/// The characters at 1-based positions `from..=to`, as the NACHA tables number them.
fn field(record: &str, from: usize, to: usize) -> &str {
    record.get(from - 1..to).unwrap_or("")
}

fn number(text: &str) -> Option<u128> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The check digit of an 8-digit routing number prefix (weights 3, 7, 1).
fn routing_check_digit(routing: &str) -> Option<u32> {
    let mut sum = 0;
    for (i, c) in routing.chars().enumerate() {
        sum += c.to_digit(10)? * [3, 7, 1][i % 3];
    }
    Some((10 - sum % 10) % 10)
}

impl Parser<'_, '_, '_> {
    fn fatal(line: u64, message: String) -> FatalError {
        FatalError::Malformed { line, message }
    }

    fn record(&mut self, record: &str, line: u64) -> Result<(), FatalError> {
        let kind = record.as_bytes().first().copied().unwrap_or(b' ');
        if self.control_seen {
            if record.bytes().all(|b| b == b'9') {
                return Ok(());
            }
            return Err(Self::fatal(
                line,
                "a record after the file control record; only lines of 9s may follow it".to_owned(),
            ));
        }
        if !self.header_seen && kind != b'1' {
            return Err(Self::fatal(
                line,
                format!("the file starts with a record of type {:?}; expected the file header (1)", char::from(kind)),
            ));
        }
        self.records += 1;
        match kind {
            b'1' => self.file_header(record, line),
            b'5' => self.batch_header(record, line),
            b'6' => self.entry(record, line),
            b'7' => self.addenda(line),
            b'8' => self.batch_control(record, line),
            b'9' => self.file_control(record, line),
            other => Err(Self::fatal(
                line,
                format!("unknown record type {:?}; expected 1, 5, 6, 7, 8 or 9", char::from(other)),
            )),
        }
    }

    fn file_header(&mut self, record: &str, line: u64) -> Result<(), FatalError> {
        if self.header_seen {
            return Err(Self::fatal(line, "a second file header (1) record".to_owned()));
        }
        self.header_seen = true;
        let check = |name: &str, from, to, expected: &str| {
            let actual = field(record, from, to);
            if actual == expected {
                Ok(())
            } else {
                Err(Self::fatal(line, format!("file header {name} is {actual:?}; expected {expected:?}")))
            }
        };
        check("Record Size", 35, 37, "094")?;
        check("Blocking Factor", 38, 39, "10")?;
        check("Format Code", 40, 40, "1")?;
        for (name, from) in [("Immediate Destination", 4), ("Immediate Origin", 14)] {
            let value = field(record, from, from + 9);
            let (first, rest) = value.split_at(1.min(value.len()));
            let valid = rest.len() == 9
                && rest.bytes().all(|b| b.is_ascii_digit())
                && first.bytes().all(|b| b == b' ' || b.is_ascii_alphanumeric());
            if !valid {
                return Err(Self::fatal(
                    line,
                    format!("file header {name} is {value:?}; expected a routing number or company id: a blank, digit or letter, then 9 digits"),
                ));
            }
        }
        Ok(())
    }

    fn batch_header(&mut self, record: &str, line: u64) -> Result<(), FatalError> {
        if let Some(batch) = &self.batch {
            return Err(Self::fatal(
                line,
                format!(
                    "a batch header while batch {} (line {}) has no batch control record",
                    batch.number, batch.line
                ),
            ));
        }
        self.batches += 1;
        let service_class = field(record, 2, 4);
        if !matches!(service_class, "200" | "220" | "225" | "280") {
            self.control_errors.push(common::control_error(
                line,
                format!("line {line}"),
                "Service Class Code",
                format!(
                    "batch {} Service Class Code is {service_class:?}; expected 200, 220, 225 or 280",
                    self.batches
                ),
            ));
        }
        self.out.set_reference_scope(self.batches);
        self.batch = Some(Batch {
            number: self.batches,
            line,
            sec: field(record, 51, 53).to_owned(),
            totals: Totals::default(),
            in_entry: false,
        });
        Ok(())
    }

    fn current_batch(&mut self, line: u64, what: &str) -> Result<&mut Batch, FatalError> {
        self.batch
            .as_mut()
            .ok_or_else(|| Self::fatal(line, format!("{what} outside a batch (no batch header before it)")))
    }

    fn entry(&mut self, record: &str, line: u64) -> Result<(), FatalError> {
        let batch = self.current_batch(line, "an entry detail record")?;
        batch.in_entry = true;
        batch.totals.entries_and_addenda += 1;
        let code = field(record, 2, 3);
        let routing = field(record, 4, 11);
        let amount = number(field(record, 30, 39));
        batch.totals.hash += number(routing).unwrap_or(0);
        let is_credit = code.as_bytes().get(1).is_some_and(|d| (b'0'..=b'4').contains(d));
        let sum = if is_credit { &mut batch.totals.credit } else { &mut batch.totals.debit };
        *sum += amount.unwrap_or(0);
        let sec = batch.sec.clone();
        let location = format!("line {line}");
        match self.entry_item(record, line, &location, &sec, amount) {
            Ok(Some(item)) => self.out.accept(item),
            Ok(None) => self.out.skip(),
            Err(diagnostic) => self.out.reject(diagnostic),
        }
        Ok(())
    }

    /// Turns an entry into an item, or `None` for prenotes and zero-dollar entries.
    // Long on purpose: one entry record's fields in column order, each checked where it is read.
    fn entry_item(
        &self,
        record: &str,
        line: u64,
        location: &str,
        sec: &str,
        amount: Option<u128>,
    ) -> Result<Option<Item>, Diagnostic> {
        let problem = |field: &str, code, message: String| common::diagnostic(line, location, field, code, message);
        if !matches!(sec, "PPD" | "CCD") {
            return Err(problem(
                "Standard Entry Class Code",
                "unsupported_entry",
                format!(
                    "the entry is in a batch with Standard Entry Class {sec:?}; only PPD and CCD entries are supported"
                ),
            ));
        }
        let routing = field(record, 4, 11);
        let check = field(record, 12, 12);
        let expected = routing_check_digit(routing);
        if routing.len() != 8 || expected.is_none() || check.chars().next().and_then(|c| c.to_digit(10)) != expected {
            let expected = expected.map_or_else(|| "a digit".to_owned(), |d| d.to_string());
            return Err(problem(
                "Receiving DFI Identification",
                "invalid_routing_number",
                format!("the RDFI routing number {routing}{check} has check digit {check:?} but its first 8 digits give {expected}"),
            ));
        }
        let amount_text = field(record, 30, 39);
        let Some(cents) = amount else {
            return Err(problem(
                "Amount",
                "invalid_amount",
                format!("Amount is {amount_text:?}; expected 10 digits of cents"),
            ));
        };
        let code = field(record, 2, 3);
        let direction = match code {
            "22" | "32" => Direction::Credit,
            "27" | "37" => Direction::Debit,
            "23" | "24" | "28" | "29" | "33" | "34" | "38" | "39" => return Ok(None),
            _ => {
                return Err(problem(
                    "Transaction Code",
                    "unsupported_entry",
                    format!(
                        "Transaction Code {code:?} is not supported; expected 22 or 32 (credit) or 27 or 37 (debit)"
                    ),
                ))
            }
        };
        let Some(amount) = u64::try_from(cents).ok().and_then(Amount::new) else {
            return Ok(None);
        };
        let account_number = field(record, 13, 29).trim();
        if account_number.is_empty() {
            return Err(problem("DFI Account Number", "missing_field", "DFI Account Number is blank".to_owned()));
        }
        let receiver = format!("{routing}{check}{account_number}");
        let funding = self.options.default_payer.clone();
        let (payer, payee) = match direction {
            Direction::Credit => (funding, receiver),
            Direction::Debit => {
                let payee = funding.ok_or_else(|| {
                    problem(
                        "payer",
                        "missing_field",
                        "a debit entry pays into the batch's funding account, but no batch-level payer was given"
                            .to_owned(),
                    )
                })?;
                (Some(receiver), payee)
            }
        };
        let trace = field(record, 80, 94).trim();
        Ok(Some(Item {
            index: 0,
            line,
            location: location.to_owned(),
            payer,
            payee,
            amount,
            currency: self.usd,
            reference: Some(trace.to_owned()).filter(|t| !t.is_empty()),
            instruction_id: None,
            payment_information_id: None,
        }))
    }

    fn addenda(&mut self, line: u64) -> Result<(), FatalError> {
        let batch = self.current_batch(line, "an addenda record")?;
        if !batch.in_entry {
            return Err(Self::fatal(line, "an addenda record that does not follow an entry detail record".to_owned()));
        }
        batch.totals.entries_and_addenda += 1;
        Ok(())
    }

    fn batch_control(&mut self, record: &str, line: u64) -> Result<(), FatalError> {
        let Some(batch) = self.batch.take() else {
            return Err(Self::fatal(line, "a batch control record without a batch header".to_owned()));
        };
        let name = format!("batch {} (header at line {}) control", batch.number, batch.line);
        let mut check = Check { line, name: &name, record, errors: &mut self.control_errors, usd: self.usd };
        check.count(
            "Entry/Addenda Count",
            5,
            10,
            batch.totals.entries_and_addenda,
            "the batch has",
            "entry and addenda records",
        );
        check.hash(11, 20, batch.totals.hash);
        check.dollars("Total Debit Entry Dollar Amount", 21, 32, batch.totals.debit, "debit");
        check.dollars("Total Credit Entry Dollar Amount", 33, 44, batch.totals.credit, "credit");
        self.file.add(&batch.totals);
        Ok(())
    }

    fn file_control(&mut self, record: &str, line: u64) -> Result<(), FatalError> {
        if let Some(batch) = &self.batch {
            return Err(Self::fatal(
                line,
                format!(
                    "the file control record comes before the control record of batch {} (line {})",
                    batch.number, batch.line
                ),
            ));
        }
        self.control_seen = true;
        let blocks = self.records.div_ceil(10);
        let file = self.file;
        let mut check = Check { line, name: "file control", record, errors: &mut self.control_errors, usd: self.usd };
        check.count("Batch Count", 2, 7, u128::from(self.batches), "the file has", "batches");
        check.count("Block Count", 8, 13, u128::from(blocks), "the file's", "records fill that many blocks of 10");
        check.count(
            "Entry/Addenda Count",
            14,
            21,
            file.entries_and_addenda,
            "the file has",
            "entry and addenda records",
        );
        check.hash(22, 31, file.hash);
        check.dollars("Total Debit Entry Dollar Amount in File", 32, 43, file.debit, "debit");
        check.dollars("Total Credit Entry Dollar Amount in File", 44, 55, file.credit, "credit");
        Ok(())
    }

    fn finish(self, last_line: u64, summary: &mut Summary) -> Result<(), FatalError> {
        if !self.header_seen {
            return Err(Self::fatal(
                last_line.max(1),
                "the file is empty; expected a file header (1) record".to_owned(),
            ));
        }
        if let Some(batch) = &self.batch {
            return Err(Self::fatal(
                last_line,
                format!("the file ends inside batch {} (line {}): no batch control record", batch.number, batch.line),
            ));
        }
        if !self.control_seen {
            return Err(Self::fatal(last_line, "the file ends without a file control (9) record".to_owned()));
        }
        summary.control_errors = self.control_errors;
        Ok(())
    }
}

enum Direction {
    Credit,
    Debit,
}

/// Compares the figures of one control record with the computed ones.
struct Check<'a> {
    line: u64,
    name: &'a str,
    record: &'a str,
    errors: &'a mut Vec<Diagnostic>,
    usd: Currency,
}

impl Check<'_> {
    fn push(&mut self, field: &str, message: String) {
        let message = format!("{} {field} is {message}", self.name);
        self.errors.push(common::control_error(self.line, format!("line {}", self.line), field, message));
    }

    fn count<T: Into<u128>>(&mut self, name: &str, from: usize, to: usize, actual: T, has: &str, what: &str) {
        let (text, actual) = (field(self.record, from, to), actual.into());
        match number(text) {
            Some(stated) if stated == actual => {}
            Some(stated) => self.push(name, format!("{stated} but {has} {actual} {what}")),
            None => self.push(name, format!("{text:?}, which is not a number; {has} {actual} {what}")),
        }
    }

    fn hash(&mut self, from: usize, to: usize, sum: u128) {
        let text = field(self.record, from, to);
        let actual = sum % HASH_MODULUS;
        if number(text) != Some(actual) {
            self.push(
                "Entry Hash",
                format!("{text:?} but the entries' RDFI routing numbers sum to {actual:010} (last 10 digits)"),
            );
        }
    }

    fn dollars(&mut self, name: &str, from: usize, to: usize, cents: u128, kind: &str) {
        let text = field(self.record, from, to);
        let dollars = |c: u128| u64::try_from(c).map_or_else(|_| format!("{c} cents"), |c| format_amount(c, self.usd));
        match number(text) {
            Some(stated) if stated == cents => {}
            Some(stated) => {
                let message = format!("{} but the {kind} entries sum to {}", dollars(stated), dollars(cents));
                self.push(name, message);
            }
            None => self.push(name, format!("{text:?}, which is not a number of cents")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::routing_check_digit;

    #[test]
    fn check_digits() {
        assert_eq!(routing_check_digit("23138010"), Some(4));
        assert_eq!(routing_check_digit("12104288"), Some(2));
        assert_eq!(routing_check_digit("0116000x"), None);
    }
}
