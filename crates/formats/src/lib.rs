//! Batch payment files in and out: CSV, JSON lines, ISO 20022 pain.001 and NACHA on the way in;
//! a CSV report and an ISO 20022 pain.002 status report on the way out.
//!
//! The crate is pure and synchronous. It reads only from the [`std::io::BufRead`] it is handed and
//! writes only to the [`std::io::Write`] it is handed; it never prints, never reads a clock and
//! never looks an account up. Money is always an integer of minor units ([`Amount`]); decimal text
//! is parsed exactly with [`paycore_ledger::parse_amount`], never through a float.
//!
//! # The streaming contract
//!
//! [`parse`] reads the file once, front to back, and calls the sink once per transaction record,
//! in file order: `Ok(Item)` for a valid one, `Err(Diagnostic)` for an invalid one (up to 16
//! records later than the parser read them: the duplicate check fetches its table slot ahead;
//! every record is sent before `parse` returns, also on a fatal error). Nothing else is
//! buffered: memory stays bounded whatever the size of the file, apart from the table used to
//! find duplicate references, which holds one 128-bit hash and one line number per reference
//! (24 bytes a slot; with the table's spare room, about 50 MB for a million lines).
//!
//! - [`Item::index`] is the number of sink calls before this one (valid and invalid records
//!   both count), so `batch id + index` is a deterministic item id. Records that are not
//!   payments (NACHA prenotes and zero-dollar entries) are sent as a `Diagnostic` whose code
//!   [`is_skipped`] recognises (`prenote`, `zero_dollar_entry`): they take an index, are
//!   counted in [`Summary::skipped`] rather than [`Summary::invalid`], and do not make a file
//!   invalid.
//! - Problems with one record are a [`Diagnostic`] sent to the sink; the parser goes on.
//! - Problems with the file's control figures (pain.001 `NbOfTxs`/`CtrlSum`, NACHA batch and file
//!   control records) are collected in [`Summary::control_errors`]: a non-empty list rejects the
//!   whole file, but every record has still been checked and reported.
//! - A file that cannot be read at all (not well-formed XML, not UTF-8 where it matters, a NACHA
//!   record of the wrong length, a missing CSV column, an I/O error) stops the parse with a
//!   [`FatalError`] that names the line. Items already sent to the sink must then be discarded
//!   by the caller.
//! - The sum of valid items per currency is in [`Summary::totals`]; the caller compares it with
//!   any expected count or total it was given (see [`check_expected`]).
//! - A later record whose reference equals the reference of an earlier *valid* item is invalid,
//!   with code `duplicate_reference` and the line of the first one. References are compared by
//!   a 128-bit hash (two 64-bit hashes with different seeds), so two different references
//!   collide with a probability of about n²/2¹²⁹ (never, in practice). NACHA trace numbers need only be unique within a batch:
//!   real files, moov's samples among them, restart them in every batch.
//!
//! # Formats
//!
//! ## CSV
//!
//! A header row names the columns, case-insensitively; unknown columns are ignored. Accepted
//! names (aliases in parentheses, so that files made for common SEPA converters work as they
//! are):
//!
//! | field | column names | required |
//! |---|---|---|
//! | payee | `payee` (`payee_account`, `creditor_iban`, `creditor_account_iban`) | column required |
//! | amount | `amount` (`payment_amount`) | column required |
//! | currency | `currency` | no: falls back to [`ParseOptions::default_currency`] |
//! | reference | `reference` (`payment_id`, `end_to_end_id`) | no |
//! | payer | `payer` (`payer_account`, `debtor_iban`, `debtor_account_iban`) | no: falls back to [`ParseOptions::default_payer`] |
//!
//! `amount` is a decimal in major units (`1234.50`): ASCII digits with at most one `.`, no sign,
//! no thousands separator, no more decimals than the currency has. Fields are trimmed of
//! surrounding spaces; an empty field counts as absent. A data row must have as many fields as
//! the header row: one with more or fewer is `field_count_mismatch` (its fields cannot be
//! trusted to be in their columns). A UTF-8 byte order mark, CRLF line ends
//! and a missing final newline are accepted; blank rows are skipped. A missing `payee` or
//! `amount` column is a [`FatalError`] naming the column. Locations are `line N`.
//!
//! ## JSON lines
//!
//! One JSON object per line; blank lines are skipped; a line that is not a JSON object is a
//! `syntax` diagnostic for that line (not fatal). Fields: `payee` (string, required), either
//! `amount` (a *string* holding a decimal in major units, as in CSV) or `amount_minor` (an
//! integer of minor units), `currency` (string, falls back to the default currency), and the
//! optional strings `reference` and `payer`. A JSON number in `amount` is rejected, because
//! JSON numbers are floats to most writers. Unknown fields are ignored. A line whose object
//! gives a key twice, at any depth (`{"amount_minor":1,"amount_minor":700}`), is invalid with
//! code `duplicate_key` naming the key: readers disagree on which of the two counts
//! ([`strict_json`]). Locations are `line N`.
//!
//! ## ISO 20022 pain.001
//!
//! Versions `pain.001.001.03`, `.09`, `.10`, `.11`, `.12` (namespaces
//! `urn:iso:std:iso:20022:tech:xsd:pain.001.001.NN`), the German DK `pain.001.003.03`
//! (`urn:iso:std:iso:20022:tech:xsd:pain.001.003.03`) and the Swiss `pain.001.001.03.ch.02`
//! (namespace `http://www.six-interbank-clearing.com/de/pain.001.001.03.ch.02.xsd`); any other
//! namespace is fatal. What paycore reads is the same in all of them, except that agents are
//! named by `BIC` in .03 and `BICFI` from .08 on, and `ReqdExctnDt` is a date in .03 and a `Dt`
//! or `DtTm` child from .08 on. Each `CdtTrfTxInf` is one item:
//!
//! - payer: the block's `PmtInf/DbtrAcct/Id/IBAN` (or `Othr/Id`); payee: `CdtrAcct/Id/IBAN`
//!   (or `Othr/Id`);
//! - amount: `Amt/InstdAmt` with its `Ccy` attribute, parsed exactly (too many decimals for the
//!   currency is a per-item `too_many_decimals`); `Amt/EqvtAmt` (an amount to be converted) is
//!   `unsupported_entry`, but still counts in the control sums;
//! - reference: `PmtId/EndToEndId` (`NOTPROVIDED` counts as absent); `PmtId/InstrId` and
//!   `PmtInfId` are kept for the pain.002 report;
//! - `PmtInf/ReqdExctnDt` (a plain date in .03, `Dt` or `DtTm` from .08 on) must be a real
//!   date; otherwise every transaction of the block is `invalid_date`;
//! - a creditor `CdtrAcct/Id/IBAN` must have the length the SWIFT IBAN registry gives its
//!   country and pass the ISO 7064 mod-97 check (`invalid_iban`, AC01 in pain.002); a
//!   `CdtrAgt/FinInstnId/BIC` or `BICFI` must be a BIC (`invalid_bic`, RC01). An account given
//!   as `Othr/Id` is not an IBAN and is not checked as one.
//!
//! Control figures: `GrpHdr/NbOfTxs` (required) and `GrpHdr/CtrlSum` against all transactions
//! of the file, each `PmtInf`'s `NbOfTxs`/`CtrlSum` (when present) against its own
//! transactions. Counts include invalid transactions; sums add the amount text of every
//! transaction exactly (fixed point, 18 decimals), whatever its currency, as ISO 20022 defines
//! `CtrlSum`. Character content other than XML whitespace between elements is fatal (ISO 20022
//! has no mixed content; this catches files indented with U+00A0). A DOCTYPE is fatal.
//! Locations are element paths such as `/Document/CstmrCdtTrfInitn/PmtInf[2]/CdtTrfTxInf[1]`;
//! the line is that of the `<CdtTrfTxInf>` start tag.
//!
//! ## NACHA
//!
//! Records of 94 characters: file header (1), batch header (5), entry detail (6), addenda (7),
//! batch control (8), file control (9), then optional lines of `9`s. **One length rule**: a
//! shorter line is padded with blanks (its trailing blanks were trimmed; a field that was cut
//! is then blank, and fails its own check); a longer line is cut to 94 characters when
//! everything past column 94 is blank, and is fatal otherwise. A file whose 95th byte is a
//! record type (`1`–`9`) rather than a line end has no line ends: it is read as back-to-back
//! 94-character records (mainframe exports), its length must be a multiple of 94 (a final line
//! end aside), and its "lines" are record numbers. Blank lines (empty or only blanks) are
//! skipped.
//!
//! The file header must have format code `1`, record size `094`, blocking factor `10`, and an
//! Immediate Destination and Origin of a blank, digit or letter then nine digits; a blank then
//! nine digits is a routing number, whose ABA check digit (weights 3, 7, 1) must be right (a
//! fatal error otherwise). A batch header's Service Class Code must be 200, 220, 225 or 280
//! (`invalid_service_class_code`, which rejects the file). Batch and file control records are
//! checked against the entries (entry and addenda count, entry hash, total debit and total
//! credit; batch count and block count in the file control; ADV batches and files in their own
//! layout, with 20-digit totals); a mismatch is a control error naming both figures.
//!
//! An entry is judged once its addenda are read, in this order:
//!
//! 1. an Addenda 99 makes it a return: `return_entry_not_matched`, naming the R-code, the
//!    original entry's trace number and RDFI (see [`return_addenda`]); an Addenda 98 makes it a
//!    notification of change: `notification_of_change` (see [`change_addenda`]). Neither is
//!    ever paid, whatever its transaction code; the diagnostic carries the addenda, the
//!    entry's amount and trace number in [`Diagnostic::adjustment`], for the caller to match
//!    to the entry it is about (paycore's engine does: `paycore_engine::returns`);
//! 2. a batch whose Standard Entry Class is not PPD, CCD, WEB, TEL, CTX, POP, BOC, ARC, RCK,
//!    CIE or IAT: `unsupported_sec_code`, naming the code and the batch header's line;
//! 3. an addenda type the SEC code does not allow (05, 98, 99; IAT: 10–18, 98, 99):
//!    `invalid_addenda`; an IAT batch header whose Foreign Exchange Indicator is not FV, VF or
//!    FF, whose destination country is not two capitals or whose originating or destination
//!    currency is not ISO 4217: `invalid_iat_header`; an IAT entry without its addenda 10 to 16
//!    in that order (then optional 17 and 18): `invalid_addenda`; a count of addenda that
//!    differs from the entry's Addenda Record Indicator (CTX: its Number of Addenda Records,
//!    positions 55–58; IAT: positions 13–16, which may count all addenda or only the seven
//!    mandatory ones, as real files do): `addenda_count_mismatch`;
//! 4. the RDFI's check digit: `invalid_routing_number`; a trace number that is not 15 digits
//!    beginning with the batch header's ODFI: `invalid_trace_number`; a debit in a batch of
//!    Service Class Code 220 (credits only) or a credit in one of 225 (debits only):
//!    `invalid_transaction_code`;
//! 5. the transaction code and amount: 22 and 32 credit the receiver, 27 and 37 debit it (TEL,
//!    POP, BOC, ARC and RCK entries only debit, CIE entries only credit, except in a batch
//!    whose Company Entry Description is `REVERSAL`: `invalid_transaction_code`); prenotes (23, 28, 33, 38, 43, 48, 53) and zero-dollar
//!    entries (24, 29, 34, 39, 44, 49, 54) must have amount zero and are reported as skipped
//!    records (`prenote`, `zero_dollar_entry`); a return/NOC code (21, 26, …) without its
//!    addenda is `invalid_transaction_code`; other codes are `unsupported_entry`; an amount of
//!    zero on a credit or debit is `zero_amount`: only prenotes may be zero.
//!
//! Items are in US dollars, amount in cents, reference = the trace number. The receiving
//! account (IAT: the foreign receiver's account number, positions 40–74) reference is written
//! **`{RDFI routing number, 9 digits including the check digit}{DFI account number, trimmed}`**,
//! for example `23138010481967038518`. Credits: payer = [`ParseOptions::default_payer`] (the
//! batch's funding account), payee = the receiving account. Debits: payer = the receiving
//! account, payee = the default payer (required: a debit without one is `missing_field`).
//!
//! ## Refunds
//!
//! CSV with a header row (the CSV rules above: case-insensitive names, unknown columns
//! ignored, trimmed fields, `field_count_mismatch`, BOM and CRLF accepted), one refund of an
//! earlier payment per row, read by [`parse_refunds`] into [`RefundLine`]s:
//!
//! | field | column names | required |
//! |---|---|---|
//! | payment | `payment` (`payment_id`): a payment id, `pay_…` (`invalid_id` otherwise) | column required |
//! | amount | `amount` (`refund_amount`): a decimal in the payment's currency's major units | no: empty = all that is left to refund |
//! | reason | `reason`: free text stored on the refund, one line, at most 140 characters (`invalid_reason`) | no |
//!
//! The amount's decimals are checked against the payment's currency once the caller has found
//! the payment ([`RefundLine::amount`]: `invalid_amount`, `too_many_decimals`,
//! `amount_not_positive`). Locations are `line N`.
//!
//! # Reports
//!
//! [`CsvReportWriter`] writes `line,reference,payer,payee,amount,currency,status,failure_code`;
//! [`Pain002Writer`] writes a pain.002.001.03 or .10 customer payment status report, streaming,
//! with ISO status reason codes from [`iso_reason`].

mod common;
mod csv;
pub mod emvco;
mod iban;
mod jsonl;
mod nacha;
mod nacha_return;
mod pain001;
mod pain002;
mod refunds;
mod report;
mod statement;
pub mod strict_json;

pub use iban::{check_iban, is_bic};
pub use nacha::{change_addenda, is_routing_number, return_addenda, ChangeAddenda, ReturnAddenda};
pub use nacha_return::{
    return_reason, return_reason_description, write_nacha_returns, ReturnFileDate, ReturnFileError,
};
pub use pain001::{Cut, FirstPart, SecondPart};
pub use pain002::{write_pain002_header, Pain002Header, Pain002Version, Pain002Writer};
pub use refunds::{parse_refunds, RefundLine, REASON_CHARS_MAX};
pub use report::{
    group_status, iso_reason, write_csv_report, CsvReportWriter, ItemStatus, LineStatus, ReportItem, ReportLine,
};
pub use statement::{
    Camt053Writer, CsvStatementWriter, EntryTotals, JsonStatementWriter, StatementBalance, StatementEntry,
    StatementHeader, StatementWriter, CAMT053_NAMESPACE, CSV_STATEMENT_HEADER,
};

use paycore_ledger::{Amount, Currency};
use std::fmt;
use std::io::BufRead;

/// The format of an input file (one name each: `csv`, `jsonl`, `pain.001`, `nacha`).
pub use paycore_ledger::BatchFormat as Format;

/// Guesses the format from an HTTP `Content-Type`, ignoring parameters such as `charset`.
/// `text/plain` and `application/octet-stream` say nothing about the format, so they give
/// `None` and the caller must ask for `?format=`.
pub fn format_from_content_type(content_type: &str) -> Option<Format> {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "text/csv" | "application/csv" => Some(Format::Csv),
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines"
        | "application/jsonlines" => Some(Format::Jsonl),
        "application/xml" | "text/xml" => Some(Format::Pain001),
        "application/x-nacha" | "application/vnd.nacha" => Some(Format::Nacha),
        _ => None,
    }
}

/// Why a text is not a [`Format`] name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format {0:?}; expected csv, jsonl, pain.001, nacha or refunds")]
pub struct UnknownFormat(pub String);

/// The format a user names (`?format=`, `--format`): its name in any case, or a common alias
/// (`ndjson`, `ach`, a pain.001 version). Stored names are read with [`Format::parse`].
pub fn format_named(text: &str) -> Result<Format, UnknownFormat> {
    match text.trim().to_ascii_lowercase().as_str() {
        "csv" => Ok(Format::Csv),
        "jsonl" | "ndjson" | "json-lines" => Ok(Format::Jsonl),
        "pain.001"
        | "pain001"
        | "pain.001.001.03"
        | "pain.001.001.09"
        | "pain.001.001.10"
        | "pain.001.001.11"
        | "pain.001.001.12"
        | "pain.001.003.03"
        | "pain.001.001.03.ch.02" => Ok(Format::Pain001),
        "nacha" | "ach" => Ok(Format::Nacha),
        "refunds" => Ok(Format::Refunds),
        _ => Err(UnknownFormat(text.to_owned())),
    }
}

/// Batch-level values that apply where the file does not say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// The funding account: the payer of items without one (CSV, JSON lines, NACHA credits) and
    /// the payee of NACHA debits.
    pub default_payer: Option<String>,
    /// The currency of CSV and JSON-lines rows without a `currency` field.
    pub default_currency: Option<Currency>,
}

/// One valid transaction of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The number of records sent to the sink before this one; see the crate documentation.
    pub index: u64,
    /// The 1-based line where the record starts (for XML, the line of `<CdtTrfTxInf>`).
    pub line: u64,
    /// A human pointer: `line 7`, or an element path for XML.
    pub location: String,
    /// The payer's account id or reference (IBAN, other id); `None` when neither the file nor
    /// the options name one, so the batch-level payer applies.
    pub payer: Option<String>,
    /// The payee's account id or reference.
    pub payee: String,
    pub amount: Amount,
    pub currency: Currency,
    /// CSV `reference`, pain.001 `EndToEndId`, NACHA trace number.
    pub reference: Option<String>,
    /// pain.001 `InstrId`, echoed as `OrgnlInstrId` in pain.002.
    pub instruction_id: Option<String>,
    /// pain.001 unstructured remittance information (`RmtInf/Ustrd`, its lines joined by a
    /// space, at most 140 characters), written on account statements.
    pub remittance: Option<String>,
    /// pain.001 `PmtInfId`, the grouping key of pain.002 `OrgnlPmtInfAndSts`.
    pub payment_information_id: Option<String>,
}

/// Why one record (or one control figure) is invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The 1-based line of the record or figure.
    pub line: u64,
    /// `line 7` or an element path.
    pub location: String,
    /// The field at fault, as the file names it (`amount`, `InstdAmt`, `NbOfTxs`...).
    pub field: Option<String>,
    /// A stable machine code: `syntax`, `missing_field`, `invalid_amount`, `too_many_decimals`,
    /// `amount_not_positive`, `invalid_currency`, `invalid_date`, `invalid_routing_number`,
    /// `duplicate_reference`, `duplicate_key`, `unsupported_entry`, `control_total_mismatch`,
    /// `field_count_mismatch` (CSV), `invalid_iban`, `invalid_bic` (pain.001),
    /// `unsupported_sec_code`, `return_entry_not_matched`, `notification_of_change`,
    /// `invalid_addenda`, `addenda_count_mismatch`, `invalid_trace_number`,
    /// `invalid_transaction_code`, `zero_amount`, `invalid_iat_header`,
    /// `invalid_service_class_code` (NACHA), and the
    /// skipped records' `prenote` and `zero_dollar_entry` (see [`is_skipped`]).
    pub code: &'static str,
    /// An English sentence naming the field and the expected and actual values.
    pub message: String,
    /// A NACHA return (Addenda 99) or notification of change (Addenda 98): what matching it
    /// to the entry it is about needs. The parser never pays one; the caller may match it.
    /// Boxed: most diagnostics have none, and they travel in `Result`s.
    pub adjustment: Option<Box<Adjustment>>,
}

/// What a NACHA entry that is not a new payment says about an earlier entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Adjustment {
    /// An Addenda 99: the entry returns the entry with `addenda.original_trace`.
    Return {
        addenda: ReturnAddenda,
        /// The return entry's own amount, in cents (it must be the original's).
        amount: u64,
        /// The return entry's own trace number.
        trace: String,
    },
    /// An Addenda 98: a notification of change about the entry with `addenda.original_trace`.
    Change { addenda: ChangeAddenda, trace: String },
}

impl Adjustment {
    /// The trace number of the entry the return or notification is about.
    pub fn original_trace(&self) -> &str {
        match self {
            Adjustment::Return { addenda, .. } => &addenda.original_trace,
            Adjustment::Change { addenda, .. } => &addenda.original_trace,
        }
    }

    /// The RDFI routing number (8 digits) of the entry it is about.
    pub fn original_rdfi(&self) -> &str {
        match self {
            Adjustment::Return { addenda, .. } => &addenda.original_rdfi,
            Adjustment::Change { addenda, .. } => &addenda.original_rdfi,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.location, self.message, self.code)
    }
}

/// What a parse found, besides the records sent to the sink.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Valid items sent to the sink.
    pub items: u64,
    /// Invalid records sent to the sink (skipped records not included).
    pub invalid: u64,
    /// Records that are not payments, sent to the sink as diagnostics that [`is_skipped`]
    /// recognises (NACHA prenotes, zero-dollar entries); not counted in `invalid`.
    pub skipped: u64,
    /// The sum of the valid items per currency, in minor units, in order of first appearance.
    pub totals: Vec<(Currency, u128)>,
    /// pain.001 `GrpHdr/MsgId`.
    pub message_id: Option<String>,
    /// The exact message variant, such as `pain.001.001.03` or `pain.001.001.03.ch.02`.
    pub variant: Option<String>,
    /// Control-figure mismatches; a non-empty list rejects the whole file.
    pub control_errors: Vec<Diagnostic>,
}

/// The file cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum FatalError {
    #[error("the file could not be read: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {message}")]
    Malformed { line: u64, message: String },
    #[error("the header row has no {column} column (accepted names: {accepted})")]
    MissingColumn { column: &'static str, accepted: &'static str },
    #[error("line {line}: the XML namespace {namespace:?} is not supported; expected one of {expected}")]
    UnsupportedNamespace { line: u64, namespace: String, expected: &'static str },
    #[error("line {line} is {length} characters long, but NACHA records are 94 characters (a shorter record is padded with blanks, a longer one may only have blanks past column 94)")]
    RecordLength { line: u64, length: usize },
}

impl FatalError {
    /// The line the error is about, when there is one.
    pub fn line(&self) -> Option<u64> {
        match self {
            FatalError::Malformed { line, .. }
            | FatalError::UnsupportedNamespace { line, .. }
            | FatalError::RecordLength { line, .. } => Some(*line),
            FatalError::MissingColumn { .. } => Some(1),
            FatalError::Io(_) => None,
        }
    }
}

/// Whether a diagnostic code marks a record that is reported but is not a payment and does
/// not make the file invalid: a NACHA prenote (`prenote`) or zero-dollar entry
/// (`zero_dollar_entry`). [`Summary::skipped`] counts them.
pub fn is_skipped(code: &str) -> bool {
    nacha::SKIPPED_CODES.contains(&code)
}

/// Parses a whole file, calling `sink` once per record in file order; see the crate
/// documentation for the contract and the rules of each format.
pub fn parse<R: BufRead>(
    format: Format,
    mut input: R,
    options: &ParseOptions,
    sink: &mut dyn FnMut(Result<Item, Diagnostic>),
) -> Result<Summary, FatalError> {
    common::skip_bom(&mut input)?;
    let mut collector = common::Collector::new(sink);
    let mut summary = Summary::default();
    match format {
        Format::Csv => csv::parse(input, options, &mut collector)?,
        Format::Jsonl => jsonl::parse(input, options, &mut collector)?,
        Format::Pain001 => pain001::parse(input, &mut collector, &mut summary)?,
        Format::Nacha => nacha::parse(input, options, &mut collector, &mut summary)?,
        // An interest run's items are made by the run (`POST /v1/interest/runs`), never parsed.
        Format::Interest => {
            return Err(FatalError::Malformed { line: 0, message: "an interest run has no file to parse".into() })
        }
        // A refunds file's rows are refunds, not payments: `parse_refunds` reads them.
        Format::Refunds => {
            return Err(FatalError::Malformed { line: 0, message: "a refunds file is read with parse_refunds".into() })
        }
    }
    collector.finish(&mut summary);
    Ok(summary)
}

/// Finds where a pain.001 file can be cut in two parts for two threads to parse at once:
/// reads `input` up to the first `<CdtTrfTxInf>` start tag at or past the middle of its
/// `size` bytes. The caller then parses the first part with [`parse_first_part`] on a fresh
/// reader of the file, the second with [`parse_second_part`] on `input` as this left it, and
/// puts them together with [`join_parts`].
///
/// Both parts send records to their sinks as [`parse`] does: every record once, each part's
/// in file order; the second part's records come after the first part's
/// ([`Cut::records_before`]). Duplicate references are found within each part, and across
/// the cut by [`join_parts`]. `None`: no cut was found (a file with one transaction, a block
/// header longer than 1 MiB, element names with a namespace prefix): parse the file whole.
pub fn find_cut<R: BufRead>(input: R, size: u64) -> std::io::Result<Option<Cut>> {
    pain001::find_cut(input, size)
}

/// Parses the first part of a pain.001 file cut at `cut`, from the file's start (`input`).
pub fn parse_first_part<R: BufRead>(cut: &Cut, input: R, sink: &mut dyn FnMut(Result<Item, Diagnostic>)) -> FirstPart {
    pain001::parse_first_part(cut, input, sink)
}

/// Parses the second part of a pain.001 file cut at `cut`: `rest` is the reader
/// [`find_cut`] read from, where it left it.
pub fn parse_second_part<R: BufRead>(cut: &Cut, rest: R, sink: &mut dyn FnMut(Result<Item, Diagnostic>)) -> SecondPart {
    pain001::parse_second_part(cut, rest, sink)
}

/// What [`parse`] would have returned for the whole file, from its two parts; or `None`
/// when the parts cannot stand for one parse, and the caller must discard every record both
/// sent and [`parse`] the file whole. That is the case when the first part's parser did not
/// stop exactly at the cut in the state the second part started from (the cut's tag was in a
/// comment or a CDATA section, the root's names have a prefix, a block's header elements
/// come after its transactions), and when a reference of the second part was also one of
/// the first part's valid items (a duplicate across the cut). An error of the first part is
/// the file's; an error of the second part is the file's when the cut was sound.
pub fn join_parts(cut: &Cut, first: FirstPart, second: SecondPart) -> Option<Result<Summary, FatalError>> {
    pain001::join_parts(cut, first, second)
}

/// Checks a CSV or JSON-lines file against the `expected_count` / `expected_total` a caller
/// gave with it. The count is of all records (valid and invalid); the total is the sum of the
/// valid items, and only makes sense for a single-currency file, so a file with several
/// currencies fails an expected total. Returns the control errors to add to the summary.
pub fn check_expected(
    summary: &Summary,
    expected_count: Option<u64>,
    expected_total: Option<(Currency, u128)>,
) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    let records = summary.items + summary.invalid;
    if let Some(expected) = expected_count.filter(|&n| n != records) {
        errors.push(common::control_error(
            0,
            "file".to_owned(),
            "expected_count",
            format!("expected_count is {expected} but the file has {records} records"),
        ));
    }
    if let Some((currency, expected)) = expected_total {
        let actual: Vec<String> = summary.totals.iter().map(|(c, sum)| common::format_minor(*sum, *c)).collect();
        let matches = summary.totals.len() <= 1
            && summary.totals.first().map_or(0, |&(c, sum)| if c == currency { sum } else { u128::MAX }) == expected;
        if !matches {
            let actual = if actual.is_empty() { "nothing".to_owned() } else { actual.join(" + ") };
            errors.push(common::control_error(
                0,
                "file".to_owned(),
                "expected_total",
                format!(
                    "expected_total is {} but the amounts in the file sum to {actual}",
                    common::format_minor(expected, currency)
                ),
            ));
        }
    }
    errors
}
