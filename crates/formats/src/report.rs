//! Per-item results and the CSV report.

use paycore_ledger::{format_amount, Currency};
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
        let stored = match self {
            ItemStatus::Succeeded => paycore_ledger::ItemStatus::Succeeded,
            ItemStatus::Failed { .. } | ItemStatus::Skipped { .. } => paycore_ledger::ItemStatus::Failed,
            ItemStatus::Pending => paycore_ledger::ItemStatus::Pending,
            ItemStatus::Returned { .. } => paycore_ledger::ItemStatus::Returned,
        };
        stored.as_str()
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
pub struct CsvReportWriter<W: Write> {
    writer: csv::Writer<W>,
}

impl<W: Write> CsvReportWriter<W> {
    /// Writes the header row.
    pub fn new(out: W) -> io::Result<Self> {
        let mut writer = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(out);
        writer
            .write_record(["line", "reference", "payer", "payee", "amount", "currency", "status", "failure_code"])
            .map_err(io::Error::other)?;
        Ok(CsvReportWriter { writer })
    }

    pub fn item(&mut self, item: &ReportItem) -> io::Result<()> {
        let failure_code = match &item.status {
            ItemStatus::Failed { code } | ItemStatus::Returned { code } | ItemStatus::Skipped { code } => code.as_str(),
            _ => "",
        };
        self.writer
            .write_record([
                item.line.to_string().as_str(),
                item.reference.as_deref().unwrap_or(""),
                item.payer.as_deref().unwrap_or(""),
                item.payee.as_str(),
                item.currency.map(|c| format_amount(item.amount, c)).unwrap_or_default().as_str(),
                item.currency.map_or("", Currency::code),
                item.status.name(),
                failure_code,
            ])
            .map_err(io::Error::other)
    }

    /// Flushes and returns the output.
    pub fn finish(self) -> io::Result<W> {
        self.writer.into_inner().map_err(|e| io::Error::other(e.to_string()))
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
