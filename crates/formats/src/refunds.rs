//! Refunds files (`format=refunds`): CSV with a header row, one refund of an earlier payment
//! per row. The parser checks what the file alone can tell (the columns, the payment id's
//! syntax, the reason's length); the payment's currency — and so whether the amount has the
//! right number of decimals — is known only once the payment is looked up, which is the
//! caller's job ([`RefundLine::amount`]).

use crate::common;
use crate::csv::{field, missing, read_record};
use crate::{Diagnostic, FatalError, Summary};
use ::csv::{ByteRecord, ReaderBuilder};
use paycore_ledger::{Amount, Currency, PaymentId};
use std::io::BufRead;

const PAYMENT: &[&str] = &["payment", "payment_id"];
const AMOUNT: &[&str] = &["amount", "refund_amount"];
const REASON: &[&str] = &["reason"];

/// The longest `reason`, in characters ([`paycore_ledger::REFUND_REASON_CHARS_MAX`]).
pub const REASON_CHARS_MAX: usize = paycore_ledger::REFUND_REASON_CHARS_MAX;

/// One row of a refunds file that the file alone finds valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundLine {
    /// The number of records sent to the sink before this one (valid and invalid).
    pub index: u64,
    /// The 1-based line of the row.
    pub line: u64,
    /// `line N`.
    pub location: String,
    /// The payment to refund (`pay_…`).
    pub payment: PaymentId,
    /// The amount as written, a decimal in major units; `None` (empty or no column): all that
    /// is left to refund.
    pub amount_text: Option<String>,
    /// Free text stored on the refund.
    pub reason: Option<String>,
}

impl RefundLine {
    /// The amount in minor units of the payment's `currency`, parsed exactly as the other
    /// formats' amounts (`invalid_amount`, `too_many_decimals`, `amount_not_positive`, naming
    /// the field `amount` and the line); `None`: the row asks for all that is left.
    pub fn amount(&self, currency: Currency) -> Result<Option<Amount>, Diagnostic> {
        self.amount_text
            .as_deref()
            .map(|text| common::amount(text, currency, "amount", self.line, &self.location))
            .transpose()
    }
}

/// The positions of the known columns in the header row.
struct Columns {
    payment: usize,
    amount: Option<usize>,
    reason: Option<usize>,
}

impl Columns {
    fn from_header(header: &ByteRecord) -> Result<Columns, FatalError> {
        let names: Vec<String> =
            header.iter().map(|name| String::from_utf8_lossy(name).trim().to_ascii_lowercase()).collect();
        let find = |aliases: &[&str]| names.iter().position(|name| aliases.contains(&name.as_str()));
        Ok(Columns {
            payment: find(PAYMENT)
                .ok_or(FatalError::MissingColumn { column: "payment", accepted: "payment, payment_id" })?,
            amount: find(AMOUNT),
            reason: find(REASON),
        })
    }
}

/// Parses a refunds file, calling `sink` once per row in file order (blank rows skipped), as
/// [`crate::parse`] does for payments: a row's index is the number of calls before it. The
/// summary counts valid and invalid rows; its `totals` are empty (amounts have no currency
/// until their payment is found).
pub fn parse_refunds<R: BufRead>(
    mut input: R,
    sink: &mut dyn FnMut(Result<RefundLine, Diagnostic>),
) -> Result<Summary, FatalError> {
    common::skip_bom(&mut input)?;
    let mut reader = ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .terminator(::csv::Terminator::Any(b'\n'))
        .from_reader(common::Bounded::new(input));
    let mut record = ByteRecord::new();
    if !read_record(&mut reader, &mut record)? {
        return Err(FatalError::Malformed {
            line: 1,
            message: "the file is empty; expected a header row naming the columns payment, amount, reason".to_owned(),
        });
    }
    let columns = Columns::from_header(&record)?;
    let width = record.len();
    let mut summary = Summary::default();
    while read_record(&mut reader, &mut record)? {
        if record.iter().all(|field| field.trim_ascii().is_empty()) {
            continue;
        }
        let line = record.position().map_or(0, ::csv::Position::line);
        let index = summary.items + summary.invalid;
        let row = if record.len() == width {
            row(&record, &columns, index, line)
        } else {
            Err(common::diagnostic(
                line,
                &format!("line {line}"),
                "row",
                "field_count_mismatch",
                format!(
                    "the row has {} fields but the header has {width}; every row needs one field per column",
                    record.len()
                ),
            ))
        };
        match row {
            Ok(_) => summary.items += 1,
            Err(_) => summary.invalid += 1,
        }
        sink(row);
    }
    Ok(summary)
}

/// Checks one data row.
fn row(record: &ByteRecord, columns: &Columns, index: u64, line: u64) -> Result<RefundLine, Diagnostic> {
    let location = format!("line {line}");
    let field = |index: Option<usize>, name: &str| field(record, index, name, line, &location);
    let text = field(Some(columns.payment), "payment")?.ok_or_else(|| missing(line, &location, "payment"))?;
    let payment: PaymentId = text.parse().map_err(|_| {
        let message = format!("payment {text:?} is not a payment id; expected pay_ followed by the id");
        common::diagnostic(line, &location, "payment", "invalid_id", message)
    })?;
    let amount_text = field(columns.amount, "amount")?.map(str::to_owned);
    let reason = field(columns.reason, "reason")?.map(str::to_owned);
    if let Some(reason) = &reason {
        let chars = reason.chars().count();
        if chars > REASON_CHARS_MAX || reason.chars().any(char::is_control) {
            let message = if chars > REASON_CHARS_MAX {
                format!("reason has {chars} characters; at most {REASON_CHARS_MAX} are allowed")
            } else {
                "reason has a control character (a line break, a tab...); it must be one line of text".to_owned()
            };
            return Err(common::diagnostic(line, &location, "reason", "invalid_reason", message));
        }
    }
    Ok(RefundLine { index, line, location, payment, amount_text, reason })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// Every record of `text`, in order.
    fn records(text: &str) -> (Vec<Result<RefundLine, Diagnostic>>, Summary) {
        let mut out = Vec::new();
        let summary = parse_refunds(text.as_bytes(), &mut |record| out.push(record)).unwrap();
        (out, summary)
    }

    fn pay(n: u128) -> String {
        PaymentId(n).to_string()
    }

    fn currency(code: &str) -> Currency {
        Currency::from_code(code).unwrap()
    }

    #[test]
    fn rows_become_refund_lines_in_file_order() {
        let text = format!(
            "\u{feff}Payment,Amount,Reason,ignored\r\n{},10.50,damaged in transit,x\r\n\r\n{},,,y\r\n {} , 3 , late ,z",
            pay(1),
            pay(2),
            pay(1)
        );
        let (out, summary) = records(&text);
        let lines: Vec<RefundLine> = out.into_iter().map(Result::unwrap).collect();
        let expected = [
            (0, 2, PaymentId(1), Some("10.50"), Some("damaged in transit")),
            (1, 4, PaymentId(2), None, None),
            (2, 5, PaymentId(1), Some("3"), Some("late")),
        ];
        assert_eq!(lines.len(), expected.len());
        for (line, (index, at, payment, amount, reason)) in lines.iter().zip(expected) {
            assert_eq!(line.index, index);
            assert_eq!((line.line, line.location.clone()), (at, format!("line {at}")));
            assert_eq!(line.payment, payment);
            assert_eq!(line.amount_text.as_deref(), amount);
            assert_eq!(line.reason.as_deref(), reason);
        }
        assert_eq!((summary.items, summary.invalid), (3, 0));
        assert!(summary.totals.is_empty() && summary.control_errors.is_empty());
    }

    #[test]
    fn the_amount_and_reason_columns_are_optional_and_payment_id_is_an_alias() {
        let (out, _) = records(&format!("payment_id\n{}\n", pay(7)));
        let line = out[0].as_ref().unwrap();
        assert_eq!((line.payment, line.amount_text.as_deref(), line.reason.as_deref()), (PaymentId(7), None, None));
        assert_eq!(line.amount(currency("EUR")).unwrap(), None);
    }

    #[test]
    fn row_problems_name_the_field_and_line_and_take_an_index() {
        let long = "x".repeat(REASON_CHARS_MAX + 1);
        let rows = [
            (",1.00,r".to_owned(), "missing_field", "payment", "payment is missing; every row needs one".to_owned()),
            (
                "acct_1,1.00,r".to_owned(),
                "invalid_id",
                "payment",
                "payment \"acct_1\" is not a payment id; expected pay_ followed by the id".to_owned(),
            ),
            (
                format!("{},1.00", pay(1)),
                "field_count_mismatch",
                "row",
                "the row has 2 fields but the header has 3; every row needs one field per column".to_owned(),
            ),
            (
                format!("{},1.00,{long}", pay(1)),
                "invalid_reason",
                "reason",
                format!("reason has {} characters; at most {REASON_CHARS_MAX} are allowed", REASON_CHARS_MAX + 1),
            ),
            (
                format!("{},1.00,\"two\nlines\"", pay(1)),
                "invalid_reason",
                "reason",
                "reason has a control character (a line break, a tab...); it must be one line of text".to_owned(),
            ),
        ];
        for (row, code, field, message) in rows {
            let (out, summary) = records(&format!("payment,amount,reason\n{},2,ok\n{row}\n", pay(9)));
            assert_eq!((summary.items, summary.invalid), (1, 1), "{row}");
            let Err(d) = &out[1] else { panic!("{row}: {:?}", out[1]) };
            assert_eq!((d.line, d.location.as_str()), (3, "line 3"), "{row}");
            assert_eq!((d.code, d.field.as_deref(), d.message.clone()), (code, Some(field), message), "{row}");
        }
    }

    #[test]
    fn an_amount_is_checked_against_its_payments_currency() {
        let (out, _) = records(&format!("payment,amount\n{0},10.5\n{0},1.005\n{0},1.5\n{0},0\n{0},1;5\n", pay(1)));
        let lines: Vec<RefundLine> = out.into_iter().map(Result::unwrap).collect();
        assert_eq!(lines[0].amount(currency("EUR")).unwrap().map(Amount::get), Some(1050));
        assert_eq!(lines[0].amount(currency("KWD")).unwrap().map(Amount::get), Some(10_500));
        let problem = |line: &RefundLine, code: &str| {
            let d = line.amount(currency(code)).unwrap_err();
            assert_eq!((d.line, d.field.as_deref()), (line.line, Some("amount")));
            (d.code, d.message)
        };
        assert_eq!(
            problem(&lines[1], "EUR"),
            ("too_many_decimals", "amount \"1.005\" has 3 decimals but EUR allows at most 2".to_owned())
        );
        assert_eq!(lines[1].amount(currency("KWD")).unwrap().map(Amount::get), Some(1005));
        assert_eq!(
            problem(&lines[2], "JPY"),
            ("too_many_decimals", "amount \"1.5\" has 1 decimals but JPY allows at most 0".to_owned())
        );
        assert_eq!(problem(&lines[3], "EUR").0, "amount_not_positive");
        assert_eq!(problem(&lines[4], "EUR").0, "invalid_amount");
    }

    #[test]
    fn a_file_without_a_payment_column_or_a_header_cannot_be_read() {
        let missing = parse_refunds("amount,reason\n1,x\n".as_bytes(), &mut |_| panic!("no record")).unwrap_err();
        assert!(matches!(missing, FatalError::MissingColumn { column: "payment", .. }), "{missing}");
        assert_eq!(missing.line(), Some(1));
        let empty = parse_refunds("".as_bytes(), &mut |_| panic!("no record")).unwrap_err();
        assert!(matches!(empty, FatalError::Malformed { line: 1, .. }), "{empty}");
    }

    #[test]
    fn refunds_is_a_format_name_read_by_its_own_parser() {
        assert_eq!(crate::format_named("Refunds").unwrap(), crate::Format::Refunds);
        assert_eq!(crate::Format::parse("refunds"), Some(crate::Format::Refunds));
        let options = crate::ParseOptions::default();
        let error = crate::parse(crate::Format::Refunds, "payment\n".as_bytes(), &options, &mut |_| {}).unwrap_err();
        assert!(error.to_string().contains("parse_refunds"), "{error}");
    }
}
