//! NACHA ACH input: fixed 94-character records.
//!
//! An entry detail record is judged only once the records after it are read, because its
//! addenda decide what it is: an Addenda 99 makes it a return, an Addenda 98 a notification of
//! change, and neither is ever paid as a new entry. The parser keeps one entry (a copy of its
//! 94 characters) waiting for its addenda, so it stays streaming.

use crate::common::{self, Collector, LINE_BYTES_MAX};
use crate::{Adjustment, Diagnostic, FatalError, Item, ParseOptions, Summary};
use paycore_ledger::{format_amount, Amount, Currency};
use std::io::{BufRead, Read};

const RECORD_LENGTH: usize = 94;
/// Entry hashes keep their last ten digits.
const HASH_MODULUS: u128 = 10_000_000_000;

/// Standard Entry Class codes whose entries are paid like PPD and CCD entries: the layout of
/// the fields paycore reads (transaction code, RDFI, account, amount, trace number) is the
/// same, but for IAT's account (positions 40–74) and addenda count (13–16).
const SUPPORTED_SEC: &[&str] = &["PPD", "CCD", "WEB", "TEL", "CTX", "POP", "BOC", "ARC", "RCK", "CIE", "IAT"];
/// The addenda every IAT entry carries, in this order (NACHA Operating Rules, Appendix Three).
const IAT_MANDATORY_ADDENDA: &[&str] = &["10", "11", "12", "13", "14", "15", "16"];
/// SEC codes whose entries may only debit the receiver (NACHA Operating Rules, Appendix Three).
const DEBIT_ONLY_SEC: &[&str] = &["TEL", "POP", "BOC", "ARC", "RCK"];
/// SEC codes whose entries may only credit the receiver.
const CREDIT_ONLY_SEC: &[&str] = &["CIE"];

/// The diagnostic codes of entries that are reported but are not payments, and do not make a
/// file invalid: prenotes and zero-dollar entries (transaction codes x4 and x9).
pub(crate) const SKIPPED_CODES: &[&str] = &["prenote", "zero_dollar_entry"];

/// The return an Addenda 99 record describes: what matching a return to the entry it returns
/// needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReturnAddenda {
    /// The return reason code, `R01` to `R85`.
    pub reason_code: String,
    /// The trace number of the entry being returned (15 digits).
    pub original_trace: String,
    /// The routing number (8 digits, no check digit) of the RDFI the original entry went to.
    pub original_rdfi: String,
    /// Addenda Information (positions 36–79), trimmed.
    pub information: String,
}

/// The change an Addenda 98 record (a notification of change, NOC) asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeAddenda {
    /// The change code, `C01` to `C14`.
    pub change_code: String,
    /// The trace number of the entry the change is about.
    pub original_trace: String,
    /// The routing number (8 digits) of the RDFI of the original entry.
    pub original_rdfi: String,
    /// The corrected data (positions 36–64), trimmed.
    pub corrected_data: String,
}

/// Reads an Addenda 99 (return) record; `None` when `record` is not one.
pub fn return_addenda(record: &str) -> Option<ReturnAddenda> {
    if record.len() != RECORD_LENGTH || field(record, 1, 3) != "799" {
        return None;
    }
    Some(ReturnAddenda {
        reason_code: field(record, 4, 6).trim().to_owned(),
        original_trace: field(record, 7, 21).trim().to_owned(),
        original_rdfi: field(record, 28, 35).trim().to_owned(),
        information: field(record, 36, 79).trim().to_owned(),
    })
}

/// Reads an Addenda 98 (notification of change) record; `None` when `record` is not one.
pub fn change_addenda(record: &str) -> Option<ChangeAddenda> {
    if record.len() != RECORD_LENGTH || field(record, 1, 3) != "798" {
        return None;
    }
    Some(ChangeAddenda {
        change_code: field(record, 4, 6).trim().to_owned(),
        original_trace: field(record, 7, 21).trim().to_owned(),
        original_rdfi: field(record, 28, 35).trim().to_owned(),
        corrected_data: field(record, 36, 64).trim().to_owned(),
    })
}

/// Whether a routing number of 9 digits has the right ABA check digit (weights 3, 7, 1).
pub fn is_routing_number(text: &str) -> bool {
    let (first, check) = text.split_at(8.min(text.len()));
    text.len() == 9
        && text.bytes().all(|b| b.is_ascii_digit())
        && routing_check_digit(first).is_some_and(|d| check.chars().next().and_then(|c| c.to_digit(10)) == Some(d))
}

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
    /// Originating DFI Identification (batch header positions 80–87): every trace number of
    /// the batch begins with it.
    odfi: String,
    totals: Totals,
    /// Whether the last record was an entry or one of its addenda (so an addenda may follow).
    in_entry: bool,
    /// IAT: what is wrong with the batch header's IAT fields, if anything.
    iat_problem: Option<String>,
    /// Service Class Code: 220 admits only credits, 225 only debits.
    service_class: String,
    /// Company Entry Description `REVERSAL`: the batch reverses earlier entries, so a TEL or
    /// ARC batch may credit and a CIE batch may debit.
    reversal: bool,
}

/// The entry detail record waiting for its addenda.
#[derive(Default)]
struct Pending {
    line: u64,
    record: String,
    addenda: u64,
    returned: Option<ReturnAddenda>,
    change: Option<ChangeAddenda>,
    /// An addenda type the entry's SEC code does not allow, with its line.
    foreign_addenda: Option<(String, u64)>,
    /// IAT: how many of the addenda so far are the mandatory 10–16 in their order, and the
    /// first addenda that breaks the order (with its line).
    iat_in_order: usize,
    iat_out_of_order: Option<(String, u64)>,
}

struct Parser<'c, 's, 'o> {
    out: &'c mut Collector<'s>,
    options: &'o ParseOptions,
    usd: Currency,
    /// Records read, not counting the 9-padding after the file control.
    records: u64,
    header_seen: bool,
    control_seen: bool,
    /// The file's first batch is ADV, so its control records have the ADV layout.
    adv_file: bool,
    batches: u64,
    batch: Option<Batch>,
    pending: Option<Pending>,
    /// A spare `Pending` whose buffer is reused for the next entry.
    spare: Pending,
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
        adv_file: false,
        batches: 0,
        batch: None,
        pending: None,
        spare: Pending::default(),
        file: Totals::default(),
        control_errors: Vec::new(),
    };
    let mut records = Records::new(input);
    let mut padded = String::with_capacity(RECORD_LENGTH);
    let mut last_line = 0;
    while let Some((line, bytes)) = records.next_record()? {
        last_line = line;
        // Blank lines (empty, or blanks only) carry no record.
        if bytes.iter().all(|&b| b == b' ') {
            continue;
        }
        let record = record(bytes, line, &mut padded)?;
        parser.record(record, line)?;
    }
    parser.finish(last_line, summary)
}

/// Reads the file's records: one a line, or, in a file without line ends whose second record
/// starts right after the first one's 94th character, 94 characters each (mainframe exports).
pub(crate) struct Records<R> {
    input: R,
    buffer: Vec<u8>,
    line: u64,
    /// `Some` once the layout is known: whether records are back to back, without line ends.
    back_to_back: Option<bool>,
    /// The first byte of the next record, read while telling the layouts apart.
    carry: Option<u8>,
}

impl<R: BufRead> Records<R> {
    pub(crate) fn new(input: R) -> Self {
        Records { input, buffer: Vec::new(), line: 0, back_to_back: None, carry: None }
    }

    /// The next record (or line) without its line end, with its 1-based number.
    pub(crate) fn next_record(&mut self) -> Result<Option<(u64, &[u8])>, FatalError> {
        self.buffer.clear();
        match self.back_to_back {
            None => self.first()?,
            Some(true) => self.fixed()?,
            Some(false) => self.rest_of_line(0)?,
        }
        if self.buffer.is_empty() {
            return Ok(None);
        }
        self.line += 1;
        let mut content = self.buffer.as_slice();
        if let Some(rest) = content.strip_suffix(b"\n") {
            content = rest;
        }
        if let Some(rest) = content.strip_suffix(b"\r") {
            content = rest;
        }
        Ok(Some((self.line, content)))
    }

    /// Reads up to 95 bytes of the first record: a 95th byte that is a record type (`1`–`9`)
    /// rather than a line end or a blank means the records are back to back.
    fn first(&mut self) -> Result<(), FatalError> {
        let limit = u64::try_from(RECORD_LENGTH + 1).unwrap_or(u64::MAX);
        (&mut self.input).take(limit).read_until(b'\n', &mut self.buffer)?;
        let back_to_back =
            self.buffer.len() == RECORD_LENGTH + 1 && self.buffer.last().is_some_and(|b| (b'1'..=b'9').contains(b));
        self.back_to_back = Some(back_to_back);
        if back_to_back {
            self.carry = self.buffer.pop();
        } else if self.buffer.len() == RECORD_LENGTH + 1 && !self.buffer.ends_with(b"\n") {
            let read = self.buffer.len();
            self.rest_of_line(read)?;
        }
        Ok(())
    }

    /// Reads the rest of a line into the buffer, which holds `already` bytes of it.
    fn rest_of_line(&mut self, already: usize) -> Result<(), FatalError> {
        let limit = u64::try_from(LINE_BYTES_MAX.saturating_sub(already)).unwrap_or(u64::MAX).saturating_add(1);
        (&mut self.input).take(limit).read_until(b'\n', &mut self.buffer)?;
        if self.buffer.len() > LINE_BYTES_MAX {
            return Err(FatalError::Malformed {
                line: self.line + 1,
                message: format!("the line is longer than {LINE_BYTES_MAX} bytes"),
            });
        }
        Ok(())
    }

    /// Reads the next 94-byte record of a file without line ends; a last piece that is only
    /// line ends is the end of the file, any other shorter piece is fatal.
    fn fixed(&mut self) -> Result<(), FatalError> {
        self.buffer.extend(self.carry.take());
        let wanted = u64::try_from(RECORD_LENGTH - self.buffer.len()).unwrap_or(0);
        (&mut self.input).take(wanted).read_to_end(&mut self.buffer)?;
        if self.buffer.len() == RECORD_LENGTH {
            return Ok(());
        }
        if self.buffer.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            self.buffer.clear();
            return Ok(());
        }
        Err(FatalError::Malformed {
            line: self.line + 1,
            message: format!(
                "the file has no line ends, so it is read as back-to-back records of 94 characters, but its last record is {} characters long",
                self.buffer.len()
            ),
        })
    }
}

/// Checks a line's characters and length. The one rule: a record is 94 characters; a shorter
/// line is padded with blanks (its trailing blanks were trimmed), and a longer one is cut to
/// 94 when everything past column 94 is blank.
pub(crate) fn record<'a>(bytes: &'a [u8], line: u64, padded: &'a mut String) -> Result<&'a str, FatalError> {
    let text = std::str::from_utf8(bytes).ok().filter(|t| t.is_ascii()).ok_or_else(|| FatalError::Malformed {
        line,
        message: "the line has a character outside ASCII; NACHA files are ASCII".to_owned(),
    })?;
    match text.len() {
        RECORD_LENGTH => Ok(text),
        length if length < RECORD_LENGTH => {
            padded.clear();
            padded.push_str(text);
            padded.extend(std::iter::repeat_n(' ', RECORD_LENGTH - length));
            Ok(padded.as_str())
        }
        length => {
            let (record, excess) = text.split_at(RECORD_LENGTH);
            if excess.bytes().all(|b| b == b' ') {
                Ok(record)
            } else {
                Err(FatalError::RecordLength { line, length })
            }
        }
    }
}

/// What is wrong with an IAT batch header's own fields: the Foreign Exchange Indicator, the
/// ISO Destination Country Code and the ISO Originating and Destination Currency Codes.
fn iat_header_problem(record: &str) -> Option<String> {
    let indicator = field(record, 21, 22);
    if !matches!(indicator, "FV" | "VF" | "FF") {
        return Some(format!("Foreign Exchange Indicator is {indicator:?}; expected FV, VF or FF"));
    }
    let country = field(record, 39, 40);
    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
        return Some(format!("ISO Destination Country Code is {country:?}; expected two capital letters such as CA"));
    }
    for (name, from) in [("ISO Originating Currency Code", 64), ("ISO Destination Currency Code", 67)] {
        let code = field(record, from, from + 2);
        if Currency::from_code(code).is_none() {
            return Some(format!("{name} is {code:?}; expected an ISO 4217 currency code such as USD"));
        }
    }
    None
}

/// The characters at 1-based positions `from..=to`, as the NACHA tables number them.
pub(crate) fn field(record: &str, from: usize, to: usize) -> &str {
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
    if routing.len() != 8 {
        return None;
    }
    let mut sum = 0;
    for (i, c) in routing.chars().enumerate() {
        sum += c.to_digit(10)? * [3, 7, 1][i % 3];
    }
    Some((10 - sum % 10) % 10)
}

/// What a transaction code asks for.
enum Kind {
    Credit,
    Debit,
    /// A prenote (x3, x8): a zero-dollar test of the account.
    Prenote,
    /// A zero-dollar entry carrying remittance data (x4, x9).
    ZeroDollar,
    /// An automated return or notification of change (x1, x6).
    ReturnOrChange,
    Other,
}

fn kind(code: &str) -> Kind {
    match code {
        "22" | "32" => Kind::Credit,
        "27" | "37" => Kind::Debit,
        "23" | "28" | "33" | "38" | "43" | "48" | "53" => Kind::Prenote,
        "24" | "29" | "34" | "39" | "44" | "49" | "54" => Kind::ZeroDollar,
        "21" | "26" | "31" | "36" | "41" | "46" | "51" | "56" => Kind::ReturnOrChange,
        _ => Kind::Other,
    }
}

/// What became of an entry.
enum Verdict {
    Pay(Item),
    Skip(Diagnostic),
    Invalid(Diagnostic),
}

impl Parser<'_, '_, '_> {
    fn fatal(line: u64, message: String) -> FatalError {
        FatalError::Malformed { line, message }
    }

    fn record(&mut self, record: &str, line: u64) -> Result<(), FatalError> {
        let kind = record.as_bytes().first().copied().unwrap_or(b' ');
        if self.control_seen {
            if record.trim_end_matches(' ').bytes().all(|b| b == b'9') {
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
        if kind != b'7' {
            self.judge_pending();
        }
        self.records += 1;
        match kind {
            b'1' => self.file_header(record, line),
            b'5' => self.batch_header(record, line),
            b'6' => self.entry(record, line),
            b'7' => self.addenda(record, line),
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
            // A blank then nine digits is a routing number (a company id has ten characters).
            if first == " " && !is_routing_number(rest) {
                let expected = routing_check_digit(rest.get(..8).unwrap_or("")).map_or(0, |d| d);
                return Err(Self::fatal(
                    line,
                    format!(
                        "file header {name} is the routing number {rest}, whose check digit should be {expected} (ABA weights 3, 7, 1 on its first 8 digits)"
                    ),
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
        let sec = field(record, 51, 53);
        if self.batches == 1 && sec == "ADV" {
            self.adv_file = true;
        }
        let service_class = field(record, 2, 4);
        if !matches!(service_class, "200" | "220" | "225" | "280") {
            self.control_errors.push(Diagnostic {
                line,
                location: format!("line {line}"),
                field: Some("Service Class Code".to_owned()),
                code: "invalid_service_class_code",
                message: format!(
                    "batch {} Service Class Code is {service_class:?}; expected 200 (mixed), 220 (credits), 225 (debits) or 280 (ADV)",
                    self.batches
                ),
                adjustment: None,
            });
        }
        self.out.set_reference_scope(self.batches);
        let iat_problem = if sec == "IAT" { iat_header_problem(record) } else { None };
        self.batch = Some(Batch {
            number: self.batches,
            line,
            sec: sec.to_owned(),
            odfi: field(record, 80, 87).to_owned(),
            totals: Totals::default(),
            in_entry: false,
            iat_problem,
            service_class: service_class.to_owned(),
            reversal: field(record, 54, 63).trim() == "REVERSAL",
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
        batch.totals.hash += number(routing).unwrap_or(0);
        // ADV entries have a 15-character account and a 12-digit amount after it, and odd
        // transaction codes are its credits.
        let (amount, is_credit) = if batch.sec == "ADV" {
            (number(field(record, 28, 39)), code.as_bytes().get(1).is_some_and(|d| d % 2 == 1))
        } else {
            (number(field(record, 30, 39)), code.as_bytes().get(1).is_some_and(|d| (b'0'..=b'4').contains(d)))
        };
        let sum = if is_credit { &mut batch.totals.credit } else { &mut batch.totals.debit };
        *sum += amount.unwrap_or(0);
        let mut pending = std::mem::take(&mut self.spare);
        pending.line = line;
        pending.record.clear();
        pending.record.push_str(record);
        pending.addenda = 0;
        pending.returned = None;
        pending.change = None;
        pending.foreign_addenda = None;
        pending.iat_in_order = 0;
        pending.iat_out_of_order = None;
        self.pending = Some(pending);
        Ok(())
    }

    fn addenda(&mut self, record: &str, line: u64) -> Result<(), FatalError> {
        let batch = self.current_batch(line, "an addenda record")?;
        if !batch.in_entry {
            return Err(Self::fatal(line, "an addenda record that does not follow an entry detail record".to_owned()));
        }
        batch.totals.entries_and_addenda += 1;
        let allowed: &[&str] = match batch.sec.as_str() {
            "IAT" => &["10", "11", "12", "13", "14", "15", "16", "17", "18", "98", "99"],
            "POS" | "SHR" | "MTE" => &["02", "98", "99"],
            _ => &["05", "98", "99"],
        };
        let type_code = field(record, 2, 3);
        let allowed = allowed.contains(&type_code);
        let sec_is_iat = batch.sec == "IAT";
        if let Some(pending) = self.pending.as_mut() {
            pending.addenda += 1;
            match type_code {
                "99" => pending.returned = return_addenda(record),
                "98" => pending.change = change_addenda(record),
                _ if !allowed && pending.foreign_addenda.is_none() => {
                    pending.foreign_addenda = Some((type_code.to_owned(), line));
                }
                _ => {}
            }
            if sec_is_iat && !matches!(type_code, "98" | "99") && pending.iat_out_of_order.is_none() {
                let expected = IAT_MANDATORY_ADDENDA.get(pending.iat_in_order).copied();
                let optional = pending.iat_in_order == IAT_MANDATORY_ADDENDA.len() && matches!(type_code, "17" | "18");
                if expected == Some(type_code) {
                    pending.iat_in_order += 1;
                } else if !optional {
                    pending.iat_out_of_order = Some((type_code.to_owned(), line));
                }
            }
        }
        Ok(())
    }

    /// Decides the waiting entry, if any, now that its addenda are read.
    fn judge_pending(&mut self) {
        let Some(pending) = self.pending.take() else { return };
        let (sec, odfi) = match &self.batch {
            Some(batch) => (batch.sec.as_str(), batch.odfi.as_str()),
            None => ("", ""),
        };
        let verdict = self.verdict(&pending, sec, odfi);
        match verdict {
            Verdict::Pay(item) => self.out.accept(item),
            Verdict::Skip(diagnostic) => self.out.skip(diagnostic),
            Verdict::Invalid(diagnostic) => self.out.reject(diagnostic),
        }
        self.spare = pending;
    }

    /// Turns an entry into an item, a skipped record (prenotes, zero-dollar entries) or an
    /// invalid one. The checks, in order: return, notification of change, SEC code, addenda,
    /// RDFI, trace number, transaction code and amount, account.
    // Long on purpose: one entry record's fields in the order of the checks.
    fn verdict(&self, pending: &Pending, sec: &str, odfi: &str) -> Verdict {
        let (record, line) = (pending.record.as_str(), pending.line);
        let location = format!("line {line}");
        let problem = |field: &str, code, message: String| {
            Verdict::Invalid(common::diagnostic(line, &location, field, code, message))
        };
        let trace = field(record, 80, 94).trim();
        let with = |verdict: Verdict, adjustment: Adjustment| match verdict {
            Verdict::Invalid(diagnostic) => {
                Verdict::Invalid(Diagnostic { adjustment: Some(Box::new(adjustment)), ..diagnostic })
            }
            other => other,
        };
        if let Some(r) = &pending.returned {
            let amount = number(field(record, 30, 39)).and_then(|c| u64::try_from(c).ok()).unwrap_or(0);
            let adjustment = Adjustment::Return { addenda: r.clone(), amount, trace: trace.to_owned() };
            return with(problem(
                "Addenda 99",
                "return_entry_not_matched",
                format!(
                    "the entry is a return (Addenda 99, reason {}) of the entry with trace number {} sent to RDFI {}; a return is never paid as a new entry, and no paid item of this file matches it",
                    r.reason_code, r.original_trace, r.original_rdfi
                ),
            ), adjustment);
        }
        if let Some(c) = &pending.change {
            let adjustment = Adjustment::Change { addenda: c.clone(), trace: trace.to_owned() };
            return with(problem(
                "Addenda 98",
                "notification_of_change",
                format!(
                    "the entry is a notification of change (Addenda 98, change code {}, corrected data {:?}) for the entry with trace number {} sent to RDFI {}; it moves no money",
                    c.change_code, c.corrected_data, c.original_trace, c.original_rdfi
                ),
            ), adjustment);
        }
        if !SUPPORTED_SEC.contains(&sec) {
            let header = self.batch.as_ref().map_or(0, |b| b.line);
            return problem(
                "Standard Entry Class Code",
                "unsupported_sec_code",
                format!(
                    "the entry is in a batch (header at line {header}) with Standard Entry Class Code {sec:?}, which is not supported; supported: {}",
                    SUPPORTED_SEC.join(", ")
                ),
            );
        }
        if let Some((type_code, at)) = &pending.foreign_addenda {
            return problem(
                "Addenda Type Code",
                "invalid_addenda",
                format!("the addenda at line {at} has Addenda Type Code {type_code:?}, which a {sec} entry cannot have; expected 05"),
            );
        }
        if sec == "IAT" {
            if let Some(problem_text) = self.batch.as_ref().and_then(|b| b.iat_problem.clone()) {
                return problem("IAT batch header", "invalid_iat_header", problem_text);
            }
            if let Some((type_code, at)) = &pending.iat_out_of_order {
                let expected = IAT_MANDATORY_ADDENDA.get(pending.iat_in_order).map_or("17 or 18", |c| c);
                return problem(
                    "Addenda Type Code",
                    "invalid_addenda",
                    format!("the addenda at line {at} has Addenda Type Code {type_code:?} where the IAT entry needs {expected}; an IAT entry carries addenda 10 to 16 in order, then optional 17 and 18"),
                );
            }
            if pending.iat_in_order < IAT_MANDATORY_ADDENDA.len() {
                let missing = IAT_MANDATORY_ADDENDA[pending.iat_in_order..].join(", ");
                return problem(
                    "Addenda Type Code",
                    "invalid_addenda",
                    format!(
                        "the IAT entry lacks its mandatory addenda {missing}; every IAT entry carries addenda 10 to 16"
                    ),
                );
            }
        }
        let (declared, declared_field, stated) = match sec {
            "CTX" => (number(field(record, 55, 58)), "Number of Addenda Records", field(record, 55, 58)),
            "IAT" => (number(field(record, 13, 16)), "Number of Addenda Records", field(record, 13, 16)),
            _ => (number(field(record, 79, 79)), "Addenda Record Indicator", field(record, 79, 79)),
        };
        let addenda = u128::from(pending.addenda);
        // IAT files in the wild count only the seven mandatory addenda; both counts are taken.
        let iat_mandatory = u128::try_from(IAT_MANDATORY_ADDENDA.len()).unwrap_or(7);
        let counted = declared == Some(addenda) || (sec == "IAT" && declared == Some(iat_mandatory));
        if !counted {
            return problem(
                declared_field,
                "addenda_count_mismatch",
                format!("{declared_field} is {stated:?} but {} addenda records follow the entry", pending.addenda),
            );
        }
        let routing = field(record, 4, 11);
        let check = field(record, 12, 12);
        let expected = routing_check_digit(routing);
        if expected.is_none() || check.chars().next().and_then(|c| c.to_digit(10)) != expected {
            let expected = expected.map_or_else(|| "none: they are not 8 digits".to_owned(), |d| d.to_string());
            return problem(
                "Receiving DFI Identification",
                "invalid_routing_number",
                format!("the RDFI routing number {routing}{check} has check digit {check:?} but its first 8 digits give {expected}"),
            );
        }
        if trace.len() != 15 || !trace.bytes().all(|b| b.is_ascii_digit()) || trace.get(..8) != Some(odfi) {
            return problem(
                "Trace Number",
                "invalid_trace_number",
                format!(
                    "Trace Number {trace:?} must be 15 digits beginning with the batch's ODFI {odfi:?} (Originating DFI Identification of the batch header)"
                ),
            );
        }
        let code = field(record, 2, 3);
        let credit = code.as_bytes().get(1).is_some_and(|d| (b'0'..=b'4').contains(d));
        let service_class = self.batch.as_ref().map_or("", |b| b.service_class.as_str());
        let (allowed, what) = match service_class {
            "220" => (credit, "credits"),
            "225" => (!credit, "debits"),
            _ => (true, ""),
        };
        if !allowed {
            let kind = if credit { "a credit" } else { "a debit" };
            return problem(
                "Transaction Code",
                "invalid_transaction_code",
                format!("Transaction Code {code} is {kind}, but the batch's Service Class Code {service_class} admits only {what}"),
            );
        }
        let amount_text = field(record, 30, 39);
        let Some(cents) = number(amount_text) else {
            return problem(
                "Amount",
                "invalid_amount",
                format!("Amount is {amount_text:?}; expected 10 digits of cents"),
            );
        };
        let direction = match kind(code) {
            Kind::Credit => Direction::Credit,
            Kind::Debit => Direction::Debit,
            Kind::Prenote | Kind::ZeroDollar if cents != 0 => {
                return problem(
                    "Amount",
                    "invalid_amount",
                    format!("Transaction Code {code} is a prenote or zero-dollar entry, so its Amount must be zero, but it is {amount_text}"),
                );
            }
            Kind::Prenote => {
                return Verdict::Skip(common::diagnostic(
                    line,
                    &location,
                    "Transaction Code",
                    "prenote",
                    format!(
                        "Transaction Code {code} is a prenote (a zero-dollar test of the account): reported, not paid"
                    ),
                ));
            }
            Kind::ZeroDollar => {
                return Verdict::Skip(common::diagnostic(
                    line,
                    &location,
                    "Transaction Code",
                    "zero_dollar_entry",
                    format!(
                        "Transaction Code {code} is a zero-dollar entry (remittance data only): reported, not paid"
                    ),
                ));
            }
            Kind::ReturnOrChange => {
                return problem(
                    "Transaction Code",
                    "invalid_transaction_code",
                    format!("Transaction Code {code} marks an automated return or notification of change, but the entry has no Addenda 99 or 98"),
                );
            }
            Kind::Other => {
                return problem(
                    "Transaction Code",
                    "unsupported_entry",
                    format!(
                        "Transaction Code {code:?} is not supported; expected 22 or 32 (credit), 27 or 37 (debit), or a prenote"
                    ),
                );
            }
        };
        let reversal = self.batch.as_ref().is_some_and(|b| b.reversal);
        match direction {
            _ if reversal => {}
            Direction::Credit if DEBIT_ONLY_SEC.contains(&sec) => {
                return problem(
                    "Transaction Code",
                    "invalid_transaction_code",
                    format!("Transaction Code {code} is a credit, but {sec} entries can only debit the receiver"),
                );
            }
            Direction::Debit if CREDIT_ONLY_SEC.contains(&sec) => {
                return problem(
                    "Transaction Code",
                    "invalid_transaction_code",
                    format!("Transaction Code {code} is a debit, but {sec} entries can only credit the receiver"),
                );
            }
            _ => {}
        }
        let Some(amount) = u64::try_from(cents).ok().and_then(Amount::new) else {
            return problem(
                "Amount",
                "zero_amount",
                format!("Amount is zero, but Transaction Code {code} moves money; only prenotes may be zero"),
            );
        };
        // IAT entries keep the foreign receiver's account in positions 40–74.
        let account_number = if sec == "IAT" { field(record, 40, 74) } else { field(record, 13, 29) }.trim();
        if account_number.is_empty() {
            return problem("DFI Account Number", "missing_field", "DFI Account Number is blank".to_owned());
        }
        let receiver = format!("{routing}{check}{account_number}");
        let funding = self.options.default_payer.clone();
        let (payer, payee) = match direction {
            Direction::Credit => (funding, receiver),
            Direction::Debit => match funding {
                Some(payee) => (Some(receiver), payee),
                None => {
                    return problem(
                        "payer",
                        "missing_field",
                        "a debit entry pays into the batch's funding account, but no batch-level payer was given"
                            .to_owned(),
                    )
                }
            },
        };
        Verdict::Pay(Item {
            index: 0,
            line,
            location,
            payer,
            payee,
            amount,
            currency: self.usd,
            reference: Some(trace.to_owned()),
            instruction_id: None,
            remittance: None,
            payment_information_id: None,
        })
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
        // ADV batch controls have 20-digit totals.
        let (debit, credit) = if batch.sec == "ADV" { ((21, 40), (41, 60)) } else { ((21, 32), (33, 44)) };
        check.dollars("Total Debit Entry Dollar Amount", debit, batch.totals.debit, "debit");
        check.dollars("Total Credit Entry Dollar Amount", credit, batch.totals.credit, "credit");
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
        let records = self.records;
        let mut check = Check { line, name: "file control", record, errors: &mut self.control_errors, usd: self.usd };
        check.count("Batch Count", 2, 7, u128::from(self.batches), "the file has", "batches");
        check.blocks(blocks, records);
        check.count(
            "Entry/Addenda Count",
            14,
            21,
            file.entries_and_addenda,
            "the file has",
            "entry and addenda records",
        );
        check.hash(22, 31, file.hash);
        let (debit, credit) = if self.adv_file { ((32, 51), (52, 71)) } else { ((32, 43), (44, 55)) };
        check.dollars("Total Debit Entry Dollar Amount in File", debit, file.debit, "debit");
        check.dollars("Total Credit Entry Dollar Amount in File", credit, file.credit, "credit");
        Ok(())
    }

    fn finish(mut self, last_line: u64, summary: &mut Summary) -> Result<(), FatalError> {
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
        self.judge_pending();
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

    /// Block Count: the records before any 9-padding, in blocks of 10.
    fn blocks(&mut self, blocks: u64, records: u64) {
        let text = field(self.record, 8, 13);
        let plural = |n: u64, word: &str| if n == 1 { format!("{n} {word}") } else { format!("{n} {word}s") };
        let counted = format!(
            "the file's {} (not counting the 9-padding) fill {} of 10 records",
            plural(records, "record"),
            plural(blocks, "block")
        );
        match number(text) {
            Some(stated) if stated == u128::from(blocks) => {}
            Some(stated) => self.push("Block Count", format!("{stated} but {counted}")),
            None => self.push("Block Count", format!("{text:?}, which is not a number; {counted}")),
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

    fn dollars(&mut self, name: &str, (from, to): (usize, usize), cents: u128, kind: &str) {
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
    use super::{is_routing_number, routing_check_digit};

    #[test]
    fn check_digits() {
        assert_eq!(routing_check_digit("23138010"), Some(4));
        assert_eq!(routing_check_digit("12104288"), Some(2));
        assert_eq!(routing_check_digit("0116000x"), None);
        assert_eq!(routing_check_digit("1210428"), None);
        assert!(is_routing_number("231380104"));
        assert!(is_routing_number("091400606"));
        assert!(!is_routing_number("231380105"));
        assert!(!is_routing_number("23138010"));
        assert!(!is_routing_number("2313801040"));
        assert!(!is_routing_number("23138010x"));
    }
}
