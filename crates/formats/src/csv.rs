//! CSV input: a header row naming the columns, then one payment per row.

use crate::common::{self, Collector};
use crate::{Diagnostic, FatalError, Item, ParseOptions};
use ::csv::{ByteRecord, ReaderBuilder, StringRecord};
use std::io::BufRead;

const PAYEE: &[&str] = &["payee", "payee_account", "creditor_iban", "creditor_account_iban"];
const AMOUNT: &[&str] = &["amount", "payment_amount"];
const CURRENCY: &[&str] = &["currency"];
const REFERENCE: &[&str] = &["reference", "payment_id", "end_to_end_id"];
const PAYER: &[&str] = &["payer", "payer_account", "debtor_iban", "debtor_account_iban"];

/// The positions of the known columns in the header row.
struct Columns {
    payee: usize,
    amount: usize,
    currency: Option<usize>,
    reference: Option<usize>,
    payer: Option<usize>,
}

impl Columns {
    fn from_header(header: &ByteRecord) -> Result<Columns, FatalError> {
        let names: Vec<String> =
            header.iter().map(|name| String::from_utf8_lossy(name).trim().to_ascii_lowercase()).collect();
        let find = |aliases: &[&str]| names.iter().position(|name| aliases.contains(&name.as_str()));
        Ok(Columns {
            payee: find(PAYEE).ok_or(FatalError::MissingColumn {
                column: "payee",
                accepted: "payee, payee_account, creditor_iban, creditor_account_iban",
            })?,
            amount: find(AMOUNT)
                .ok_or(FatalError::MissingColumn { column: "amount", accepted: "amount, payment_amount" })?,
            currency: find(CURRENCY),
            reference: find(REFERENCE),
            payer: find(PAYER),
        })
    }
}

pub(crate) fn parse<R: BufRead>(input: R, options: &ParseOptions, out: &mut Collector<'_>) -> Result<(), FatalError> {
    // Records end at '\n' only, so that a record's position is the line it starts on also in
    // CRLF files; the '\r' left at the end of the last field is trimmed with the other blanks.
    let mut reader = ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .terminator(::csv::Terminator::Any(b'\n'))
        .from_reader(common::Bounded::new(input));
    let mut record = ByteRecord::new();
    if !read_record(&mut reader, &mut record)? {
        return Err(FatalError::Malformed {
            line: 1,
            message: "the file is empty; expected a header row naming the columns".to_owned(),
        });
    }
    let columns = Columns::from_header(&record)?;
    let width = record.len();
    // Each record is checked as UTF-8 once, whole, and handed back to be read into again.
    while read_record(&mut reader, &mut record)? {
        if record.iter().all(|field| field.trim_ascii().is_empty()) {
            continue;
        }
        let line = record.position().map_or(0, ::csv::Position::line);
        if record.len() != width {
            // A row with more or fewer fields than the header has its fields in the wrong
            // columns, or is two rows run together: which field is the amount is a guess.
            out.reject(common::diagnostic(
                line,
                &format!("line {line}"),
                "row",
                "field_count_mismatch",
                format!(
                    "the row has {} fields but the header has {width}; every row needs one field per column",
                    record.len()
                ),
            ));
            continue;
        }
        // One UTF-8 check of the whole record rather than one per field (a third of the
        // parse's own cost was those checks); a record that fails it is read field by field,
        // so that the diagnostic names the field, as before.
        let checked = match StringRecord::from_byte_record(record) {
            Ok(text) => {
                let checked = row(&text, &columns, options, line);
                record = text.into_byte_record();
                checked
            }
            Err(error) => {
                record = error.into_byte_record();
                row(&record, &columns, options, line)
            }
        };
        match checked {
            Ok(item) => out.accept(item),
            Err(diagnostic) => out.reject(diagnostic),
        }
    }
    Ok(())
}

/// A record's fields as text, checked as UTF-8 field by field ([`ByteRecord`]) or already
/// checked whole ([`StringRecord`]).
pub(crate) trait Fields {
    /// Field `index`: `None` when the record has no such field, `Err` when it is not UTF-8.
    fn text(&self, index: usize) -> Option<Result<&str, std::str::Utf8Error>>;
}

impl Fields for ByteRecord {
    fn text(&self, index: usize) -> Option<Result<&str, std::str::Utf8Error>> {
        self.get(index).map(std::str::from_utf8)
    }
}

impl Fields for StringRecord {
    fn text(&self, index: usize) -> Option<Result<&str, std::str::Utf8Error>> {
        self.get(index).map(Ok)
    }
}

/// The next record; one longer than [`common::LINE_BYTES_MAX`] (a quote that never closes) is
/// fatal.
pub(crate) fn read_record<R: BufRead>(
    reader: &mut ::csv::Reader<common::Bounded<R>>,
    record: &mut ByteRecord,
) -> Result<bool, FatalError> {
    reader.get_mut().mark();
    let line = reader.position().line();
    reader.read_byte_record(record).map_err(|error| {
        if reader.get_ref().exceeded() {
            FatalError::Malformed {
                line,
                message: format!("the record is longer than {} bytes (is a quote not closed?)", common::LINE_BYTES_MAX),
            }
        } else {
            fatal(error)
        }
    })
}

fn fatal(error: ::csv::Error) -> FatalError {
    let line = error.position().map_or(0, ::csv::Position::line);
    match error.into_kind() {
        ::csv::ErrorKind::Io(error) => FatalError::Io(error),
        kind => FatalError::Malformed { line, message: format!("{kind:?}") },
    }
}

/// Validates one data row.
fn row(record: &impl Fields, columns: &Columns, options: &ParseOptions, line: u64) -> Result<Item, Diagnostic> {
    let location = common::line_location(line);
    let field = |index: Option<usize>, name: &str| field(record, index, name, line, &location);
    let payee = field(Some(columns.payee), "payee")?.ok_or_else(|| missing(line, &location, "payee"))?;
    let currency = match field(columns.currency, "currency")? {
        Some(code) => common::currency(code, "currency", line, &location)?,
        None => options.default_currency.ok_or_else(|| {
            common::diagnostic(
                line,
                &location,
                "currency",
                "missing_field",
                "currency is missing: the row has no currency and the batch has no default currency".to_owned(),
            )
        })?,
    };
    let amount_text = field(Some(columns.amount), "amount")?.ok_or_else(|| missing(line, &location, "amount"))?;
    let amount = common::amount(amount_text, currency, "amount", line, &location)?;
    let reference = field(columns.reference, "reference")?.map(str::to_owned);
    let payer = field(columns.payer, "payer")?.map(str::to_owned).or_else(|| options.default_payer.clone());
    Ok(Item {
        index: 0,
        line,
        location,
        payer,
        payee: payee.to_owned(),
        amount,
        currency,
        reference,
        instruction_id: None,
        remittance: None,
        payment_information_id: None,
    })
}

/// One field, trimmed; `None` when the column is absent or the field is empty.
pub(crate) fn field<'r>(
    record: &'r impl Fields,
    index: Option<usize>,
    name: &str,
    line: u64,
    location: &str,
) -> Result<Option<&'r str>, Diagnostic> {
    let Some(text) = index.and_then(|i| record.text(i)) else {
        return Ok(None);
    };
    let text = text
        .map_err(|_| common::diagnostic(line, location, name, "syntax", format!("{name} is not valid UTF-8 text")))?;
    let text = text.trim();
    Ok((!text.is_empty()).then_some(text))
}

pub(crate) fn missing(line: u64, location: &str, name: &str) -> Diagnostic {
    common::diagnostic(line, location, name, "missing_field", format!("{name} is missing; every row needs one"))
}
