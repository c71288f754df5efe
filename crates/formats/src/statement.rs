//! Account statements out: ISO 20022 camt.053.001.08 (bank-to-customer statement) and CSV,
//! written as a stream.
//!
//! A statement is a header (the account, the period, the opening and closing booked balances,
//! the credit and debit totals) and then its entries, oldest first. camt.053 puts the closing
//! balance and the totals *before* the entries, so the caller works them out first (a pass of
//! sums over the same entries) and the writers check, at [`StatementWriter::finish`], that the
//! entries they were given add up to them: opening + Σ credits − Σ debits = closing, and the
//! counts and sums match. A statement that does not add up is an error, never a document.
//!
//! Amounts are integers in the account currency's minor units, written with exactly that
//! currency's decimals (JPY none, EUR two, KWD three). A balance is signed: credits minus
//! debits, the customer's view (a positive balance is money the bank owes the customer,
//! `CRDT`); a negative one is written as its absolute value with `DBIT`.

use paycore_ledger::Currency;
use quick_xml::escape::escape;
use std::io::{self, Write};

/// ISO 20022 `Max35Text`.
const TEXT_35: usize = 35;
/// ISO 20022 `Max34Text`, for a generic account identification.
const TEXT_34: usize = 34;
/// ISO 20022 `Max140Text`, for unstructured remittance information.
const TEXT_140: usize = 140;

/// The camt.053 message version written.
pub const CAMT053_NAMESPACE: &str = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08";

/// A booked balance: credits minus debits in minor units, on an ISO date (`2026-12-01`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementBalance {
    pub amount: i128,
    pub date: String,
}

/// The number and sum (minor units) of a statement's credit or debit entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryTotals {
    pub count: u64,
    pub sum: u128,
}

impl EntryTotals {
    /// Counts one more entry of `amount`; `None` on overflow (never for amounts of a ledger).
    pub fn add(&mut self, amount: u64) -> Option<()> {
        self.count = self.count.checked_add(1)?;
        self.sum = self.sum.checked_add(u128::from(amount))?;
        Some(())
    }
}

/// Everything a statement says before its entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementHeader {
    /// `GrpHdr/MsgId` (cut to 35 characters).
    pub message_id: String,
    /// `Stmt/Id` (cut to 35 characters).
    pub statement_id: String,
    /// `ElctrncSeqNb`.
    pub sequence: u64,
    /// `CreDtTm` (ISO date-time such as `2026-12-05T07:00:00Z`), passed in by the caller.
    pub created_at: String,
    /// `FrToDt`: the period's first instant (included) and last (ISO date-times).
    pub from: String,
    pub to: String,
    /// The account's own id (`acct_…`), `Acct/Id/Othr/Id` when it has no IBAN.
    pub account_id: String,
    /// The account's IBAN, when its reference is one: `Acct/Id/IBAN`.
    pub iban: Option<String>,
    pub currency: Currency,
    /// `OPBD`, at the start of the period, and `CLBD`, at its end.
    pub opening: StatementBalance,
    pub closing: StatementBalance,
    /// `TxsSummry`: totals of the entries that follow.
    pub credits: EntryTotals,
    pub debits: EntryTotals,
}

/// One booked entry: a transfer that moved money on the account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatementEntry<'a> {
    /// The transfer's id: `NtryRef` and `AcctSvcrRef`.
    pub transfer_id: &'a str,
    /// The other account of the transfer (`acct_…`).
    pub counterparty: &'a str,
    /// Minor units, more than zero.
    pub amount: u64,
    /// Whether the account was credited (`CRDT`) or debited (`DBIT`).
    pub credit: bool,
    /// `BookgDt/DtTm`: when the transfer was applied (ISO date-time).
    pub booked_at: &'a str,
    /// `ValDt/Dt` (ISO date).
    pub value_date: &'a str,
    /// The payment's end-to-end id, where one was given (`NOTPROVIDED` otherwise, as ISO does).
    pub end_to_end_id: Option<&'a str>,
    /// Unstructured remittance information, where one was given.
    pub remittance: Option<&'a str>,
}

/// A statement format, written header first, then entry by entry, without buffering entries.
pub trait StatementWriter {
    fn entry(&mut self, entry: &StatementEntry<'_>) -> io::Result<()>;
    /// Checks that the entries add up to the header's totals and closing balance, closes the
    /// document and flushes.
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// What the entries written so far add up to, checked against the header at the end.
#[derive(Debug)]
struct Tally {
    opening: i128,
    closing: i128,
    expected: (EntryTotals, EntryTotals),
    balance: i128,
    credits: EntryTotals,
    debits: EntryTotals,
}

impl Tally {
    fn new(header: &StatementHeader) -> Tally {
        Tally {
            opening: header.opening.amount,
            closing: header.closing.amount,
            expected: (header.credits, header.debits),
            balance: header.opening.amount,
            credits: EntryTotals::default(),
            debits: EntryTotals::default(),
        }
    }

    fn add(&mut self, entry: &StatementEntry<'_>) -> io::Result<()> {
        let (totals, signed) = if entry.credit {
            (&mut self.credits, i128::from(entry.amount))
        } else {
            (&mut self.debits, -i128::from(entry.amount))
        };
        totals.add(entry.amount).ok_or_else(|| unbalanced("the entries' totals overflow"))?;
        self.balance = self.balance.checked_add(signed).ok_or_else(|| unbalanced("the balance overflows"))?;
        Ok(())
    }

    fn check(&self) -> io::Result<()> {
        if (self.credits, self.debits) != self.expected {
            return Err(unbalanced(&format!(
                "the entries ({} credits, {} debits) are not the header's ({} credits, {} debits)",
                self.credits.count, self.debits.count, self.expected.0.count, self.expected.1.count
            )));
        }
        if self.balance != self.closing {
            return Err(unbalanced(&format!(
                "opening {} plus the entries is {}, not the closing balance {}",
                self.opening, self.balance, self.closing
            )));
        }
        Ok(())
    }
}

fn unbalanced(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("statement does not add up: {what}"))
}

/// Writes a camt.053.001.08 statement, valid against the official schema.
///
/// One `Stmt` per document. Each entry is `BOOK`ed, with the transfer id as `NtryRef` and
/// `AcctSvcrRef`, a proprietary bank transaction code (`PMNT/RCDT` for credits, `PMNT/ICDT`
/// for debits, in the ISO domain/family codes), and one `TxDtls` carrying the end-to-end id
/// and the remittance information.
pub struct Camt053Writer<W: Write> {
    out: W,
    currency: Currency,
    tally: Tally,
}

impl<W: Write> Camt053Writer<W> {
    /// Writes everything up to the first entry.
    pub fn begin(mut out: W, header: &StatementHeader) -> io::Result<Self> {
        let ccy = header.currency.code();
        let units = header.currency.minor_units();
        writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
        writeln!(out, r#"<Document xmlns="{CAMT053_NAMESPACE}">"#)?;
        writeln!(out, "  <BkToCstmrStmt>")?;
        writeln!(out, "    <GrpHdr>")?;
        leaf(&mut out, 6, "MsgId", id_text(&header.message_id, TEXT_35))?;
        leaf(&mut out, 6, "CreDtTm", &header.created_at)?;
        writeln!(out, "    </GrpHdr>")?;
        writeln!(out, "    <Stmt>")?;
        leaf(&mut out, 6, "Id", id_text(&header.statement_id, TEXT_35))?;
        writeln!(out, "      <ElctrncSeqNb>{}</ElctrncSeqNb>", header.sequence)?;
        leaf(&mut out, 6, "CreDtTm", &header.created_at)?;
        writeln!(out, "      <FrToDt>")?;
        leaf(&mut out, 8, "FrDtTm", &header.from)?;
        leaf(&mut out, 8, "ToDtTm", &header.to)?;
        writeln!(out, "      </FrToDt>")?;
        writeln!(out, "      <Acct>")?;
        writeln!(out, "        <Id>")?;
        match &header.iban {
            Some(iban) => leaf(&mut out, 10, "IBAN", iban)?,
            None => {
                writeln!(out, "          <Othr>")?;
                leaf(&mut out, 12, "Id", id_text(&header.account_id, TEXT_34))?;
                writeln!(out, "          </Othr>")?;
            }
        }
        writeln!(out, "        </Id>")?;
        leaf(&mut out, 8, "Ccy", ccy)?;
        writeln!(out, "      </Acct>")?;
        balance(&mut out, "OPBD", &header.opening, header.currency)?;
        balance(&mut out, "CLBD", &header.closing, header.currency)?;
        let (credits, debits) = (header.credits, header.debits);
        let entries = credits.count.saturating_add(debits.count);
        let net = i128::try_from(credits.sum)
            .unwrap_or(i128::MAX)
            .saturating_sub(i128::try_from(debits.sum).unwrap_or(i128::MAX));
        writeln!(out, "      <TxsSummry>")?;
        writeln!(out, "        <TtlNtries>")?;
        writeln!(out, "          <NbOfNtries>{entries}</NbOfNtries>")?;
        writeln!(out, "          <Sum>{}</Sum>", decimal(credits.sum.saturating_add(debits.sum), units))?;
        writeln!(out, "          <TtlNetNtry>")?;
        writeln!(out, "            <Amt>{}</Amt>", decimal(net.unsigned_abs(), units))?;
        writeln!(out, "            <CdtDbtInd>{}</CdtDbtInd>", indicator(net >= 0))?;
        writeln!(out, "          </TtlNetNtry>")?;
        writeln!(out, "        </TtlNtries>")?;
        for (name, totals) in [("TtlCdtNtries", credits), ("TtlDbtNtries", debits)] {
            writeln!(out, "        <{name}>")?;
            writeln!(out, "          <NbOfNtries>{}</NbOfNtries>", totals.count)?;
            writeln!(out, "          <Sum>{}</Sum>", decimal(totals.sum, units))?;
            writeln!(out, "        </{name}>")?;
        }
        writeln!(out, "      </TxsSummry>")?;
        Ok(Camt053Writer { out, currency: header.currency, tally: Tally::new(header) })
    }
}

impl<W: Write> StatementWriter for Camt053Writer<W> {
    fn entry(&mut self, entry: &StatementEntry<'_>) -> io::Result<()> {
        self.tally.add(entry)?;
        let out = &mut self.out;
        let reference = id_text(entry.transfer_id, TEXT_35);
        let indicator = indicator(entry.credit);
        writeln!(out, "      <Ntry>")?;
        leaf(out, 8, "NtryRef", reference)?;
        writeln!(
            out,
            r#"        <Amt Ccy="{}">{}</Amt>"#,
            self.currency.code(),
            decimal(u128::from(entry.amount), self.currency.minor_units())
        )?;
        writeln!(out, "        <CdtDbtInd>{indicator}</CdtDbtInd>")?;
        writeln!(out, "        <Sts>")?;
        writeln!(out, "          <Cd>BOOK</Cd>")?;
        writeln!(out, "        </Sts>")?;
        writeln!(out, "        <BookgDt>")?;
        leaf(out, 10, "DtTm", entry.booked_at)?;
        writeln!(out, "        </BookgDt>")?;
        writeln!(out, "        <ValDt>")?;
        leaf(out, 10, "Dt", entry.value_date)?;
        writeln!(out, "        </ValDt>")?;
        leaf(out, 8, "AcctSvcrRef", reference)?;
        writeln!(out, "        <BkTxCd>")?;
        writeln!(out, "          <Domn>")?;
        writeln!(out, "            <Cd>PMNT</Cd>")?;
        writeln!(out, "            <Fmly>")?;
        writeln!(out, "              <Cd>{}</Cd>", if entry.credit { "RCDT" } else { "ICDT" })?;
        writeln!(out, "              <SubFmlyCd>OTHR</SubFmlyCd>")?;
        writeln!(out, "            </Fmly>")?;
        writeln!(out, "          </Domn>")?;
        writeln!(out, "        </BkTxCd>")?;
        writeln!(out, "        <NtryDtls>")?;
        writeln!(out, "          <TxDtls>")?;
        writeln!(out, "            <Refs>")?;
        leaf(out, 14, "AcctSvcrRef", reference)?;
        let end_to_end = entry.end_to_end_id.map(str::trim).filter(|id| !id.is_empty());
        leaf(out, 14, "EndToEndId", end_to_end.map_or("NOTPROVIDED", |id| cut(id, TEXT_35)))?;
        writeln!(out, "            </Refs>")?;
        if let Some(text) = entry.remittance.map(str::trim).filter(|t| !t.is_empty()) {
            writeln!(out, "            <RmtInf>")?;
            leaf(out, 14, "Ustrd", cut(text, TEXT_140))?;
            writeln!(out, "            </RmtInf>")?;
        }
        writeln!(out, "          </TxDtls>")?;
        writeln!(out, "        </NtryDtls>")?;
        writeln!(out, "      </Ntry>")
    }

    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.tally.check()?;
        writeln!(self.out, "    </Stmt>")?;
        writeln!(self.out, "  </BkToCstmrStmt>")?;
        writeln!(self.out, "</Document>")?;
        self.out.flush()
    }
}

/// The CSV statement's columns.
pub const CSV_STATEMENT_HEADER: [&str; 10] = [
    "type",
    "booked_at",
    "transfer",
    "counterparty",
    "credit_debit",
    "amount",
    "currency",
    "balance",
    "end_to_end_id",
    "remittance_information",
];

/// Writes a CSV statement: an `opening_balance` row, one `entry` row per entry with the
/// running balance after it, and a `closing_balance` row; `\n` line ends, fields quoted only
/// when they need it, amounts in major units with the currency's decimals (a negative balance
/// with a leading `-`).
pub struct CsvStatementWriter<W: Write> {
    writer: csv::Writer<W>,
    currency: Currency,
    closing_date: String,
    tally: Tally,
}

impl<W: Write> CsvStatementWriter<W> {
    /// Writes the header row and the opening balance.
    pub fn begin(out: W, header: &StatementHeader) -> io::Result<Self> {
        let mut writer = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(out);
        writer.write_record(CSV_STATEMENT_HEADER).map_err(io::Error::other)?;
        let mut this = CsvStatementWriter {
            writer,
            currency: header.currency,
            closing_date: header.closing.date.clone(),
            tally: Tally::new(header),
        };
        this.balance_row("opening_balance", &header.opening.date, header.opening.amount)?;
        Ok(this)
    }

    fn balance_row(&mut self, kind: &str, date: &str, amount: i128) -> io::Result<()> {
        let units = self.currency.minor_units();
        self.writer
            .write_record([
                kind,
                date,
                "",
                "",
                indicator(amount >= 0),
                decimal(amount.unsigned_abs(), units).as_str(),
                self.currency.code(),
                signed_decimal(amount, units).as_str(),
                "",
                "",
            ])
            .map_err(io::Error::other)
    }
}

impl<W: Write> StatementWriter for CsvStatementWriter<W> {
    fn entry(&mut self, entry: &StatementEntry<'_>) -> io::Result<()> {
        self.tally.add(entry)?;
        let units = self.currency.minor_units();
        self.writer
            .write_record([
                "entry",
                entry.booked_at,
                entry.transfer_id,
                entry.counterparty,
                indicator(entry.credit),
                decimal(u128::from(entry.amount), units).as_str(),
                self.currency.code(),
                signed_decimal(self.tally.balance, units).as_str(),
                entry.end_to_end_id.unwrap_or(""),
                entry.remittance.unwrap_or(""),
            ])
            .map_err(io::Error::other)
    }

    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.tally.check()?;
        let (date, closing) = (std::mem::take(&mut self.closing_date), self.tally.closing);
        self.balance_row("closing_balance", &date, closing)?;
        self.writer.flush()
    }
}

/// Writes a JSON statement, paycore's API shape (amounts as integers in minor units):
/// `{"object":"statement","account","currency","from","to","opening_balance","closing_balance",
/// "credits","debits","entries":[…]}`, each entry with the balance after it. Streamed: the
/// entries are written one by one into the open array.
pub struct JsonStatementWriter<W: Write> {
    out: W,
    currency: Currency,
    tally: Tally,
    first: bool,
}

impl<W: Write> JsonStatementWriter<W> {
    /// Writes everything up to the first entry.
    pub fn begin(mut out: W, header: &StatementHeader) -> io::Result<Self> {
        let balance = |b: &StatementBalance| serde_json::json!({ "amount": b.amount, "date": b.date });
        let totals = |t: EntryTotals| serde_json::json!({ "count": t.count, "sum": t.sum });
        let head = serde_json::json!({
            "object": "statement",
            "id": header.statement_id,
            "sequence": header.sequence,
            "created_at": header.created_at,
            "account": header.account_id,
            "currency": header.currency.code(),
            "from": header.from,
            "to": header.to,
            "opening_balance": balance(&header.opening),
            "closing_balance": balance(&header.closing),
            "credits": totals(header.credits),
            "debits": totals(header.debits),
        });
        let text = serde_json::to_string(&head).map_err(io::Error::other)?;
        // The header object, reopened to append the entries' array.
        out.write_all(text.strip_suffix('}').unwrap_or(&text).as_bytes())?;
        out.write_all(br#","entries":["#)?;
        Ok(JsonStatementWriter { out, currency: header.currency, tally: Tally::new(header), first: true })
    }
}

impl<W: Write> StatementWriter for JsonStatementWriter<W> {
    fn entry(&mut self, entry: &StatementEntry<'_>) -> io::Result<()> {
        self.tally.add(entry)?;
        if !std::mem::take(&mut self.first) {
            self.out.write_all(b",")?;
        }
        let json = serde_json::json!({
            "transfer": entry.transfer_id,
            "booked_at": entry.booked_at,
            "value_date": entry.value_date,
            "counterparty": entry.counterparty,
            "credit_debit": if entry.credit { "credit" } else { "debit" },
            "amount": entry.amount,
            "currency": self.currency.code(),
            "balance_after": self.tally.balance,
            "end_to_end_id": entry.end_to_end_id,
            "remittance_information": entry.remittance,
        });
        serde_json::to_writer(&mut self.out, &json).map_err(io::Error::other)
    }

    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.tally.check()?;
        self.out.write_all(b"]}")?;
        self.out.flush()
    }
}

fn indicator(credit: bool) -> &'static str {
    if credit {
        "CRDT"
    } else {
        "DBIT"
    }
}

/// `OPBD` or `CLBD` with its amount, indicator and date.
fn balance(out: &mut impl Write, code: &str, balance: &StatementBalance, currency: Currency) -> io::Result<()> {
    writeln!(out, "      <Bal>")?;
    writeln!(out, "        <Tp>")?;
    writeln!(out, "          <CdOrPrtry>")?;
    writeln!(out, "            <Cd>{code}</Cd>")?;
    writeln!(out, "          </CdOrPrtry>")?;
    writeln!(out, "        </Tp>")?;
    writeln!(
        out,
        r#"        <Amt Ccy="{}">{}</Amt>"#,
        currency.code(),
        decimal(balance.amount.unsigned_abs(), currency.minor_units())
    )?;
    writeln!(out, "        <CdtDbtInd>{}</CdtDbtInd>", indicator(balance.amount >= 0))?;
    writeln!(out, "        <Dt>")?;
    leaf(out, 10, "Dt", &balance.date)?;
    writeln!(out, "        </Dt>")?;
    writeln!(out, "      </Bal>")
}

/// `minor` in major units with exactly `units` decimals: `12345` with 2 is `123.45`.
pub fn decimal(minor: u128, units: u8) -> String {
    if units == 0 {
        return minor.to_string();
    }
    let scale = 10u128.pow(u32::from(units));
    format!("{}.{:0width$}", minor / scale, minor % scale, width = usize::from(units))
}

/// A signed amount in major units: `-1.50`.
fn signed_decimal(minor: i128, units: u8) -> String {
    let text = decimal(minor.unsigned_abs(), units);
    if minor < 0 {
        format!("-{text}")
    } else {
        text
    }
}

fn leaf(out: &mut impl Write, indent: usize, name: &str, text: &str) -> io::Result<()> {
    writeln!(out, "{:indent$}<{name}>{}</{name}>", "", escape(text))
}

/// At most `max` characters of `text`.
fn cut(text: &str, max: usize) -> &str {
    text.char_indices().nth(max).map_or(text, |(end, _)| &text[..end])
}

/// An identifier cut to `max` characters, `NOTPROVIDED` when blank.
fn id_text(text: &str, max: usize) -> &str {
    let text = text.trim();
    if text.is_empty() {
        "NOTPROVIDED"
    } else {
        cut(text, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_follow_the_currency() {
        assert_eq!(decimal(0, 2), "0.00");
        assert_eq!(decimal(5, 3), "0.005");
        assert_eq!(decimal(1234, 0), "1234");
        assert_eq!(decimal(u128::from(u64::MAX), 2), "184467440737095516.15");
        assert_eq!(signed_decimal(-150, 2), "-1.50");
        assert_eq!(signed_decimal(-7, 0), "-7");
        assert_eq!(signed_decimal(0, 3), "0.000");
    }
}
