//! ISO 20022 pain.002 customer payment status reports, written as a stream.

use crate::report::{iso_reason, Amount, Digits, LineStatus, ReportItem, ReportLine};
use quick_xml::escape::escape;
use std::io::{self, Write};

/// ISO 20022 `Max35Text`: identifiers longer than this are cut to fit.
const TEXT_35: usize = 35;
/// ISO 20022 `Max105Text`, for `AddtlInf`.
const TEXT_105: usize = 105;

/// The pain.002 message version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pain002Version {
    /// pain.002.001.03, the answer to pain.001.001.03 (and its Swiss variant).
    V03,
    /// pain.002.001.10, the answer to pain.001.001.09 and later and to files that are not
    /// ISO 20022.
    V10,
    /// pain.002.001.11, on request (`version=001.001.11`): what a .10 report says, in the
    /// namespace of the 2020 release.
    V11,
}

impl Pain002Version {
    /// The version that answers an input of the given [`crate::Summary::variant`].
    pub fn answering(variant: Option<&str>) -> Pain002Version {
        match variant {
            Some(v) if v.starts_with("pain.001.001.03") || v == "pain.001.003.03" => Pain002Version::V03,
            _ => Pain002Version::V10,
        }
    }

    /// The message name, such as `pain.002.001.10`.
    pub fn name(self) -> &'static str {
        match self {
            Pain002Version::V03 => "pain.002.001.03",
            Pain002Version::V10 => "pain.002.001.10",
            Pain002Version::V11 => "pain.002.001.11",
        }
    }

    /// The XML namespace of the message.
    pub fn namespace(self) -> &'static str {
        match self {
            Pain002Version::V03 => "urn:iso:std:iso:20022:tech:xsd:pain.002.001.03",
            Pain002Version::V10 => "urn:iso:std:iso:20022:tech:xsd:pain.002.001.10",
            Pain002Version::V11 => "urn:iso:std:iso:20022:tech:xsd:pain.002.001.11",
        }
    }
}

/// The report's group header and original-group information.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pain002Header {
    /// This report's `MsgId`.
    pub message_id: String,
    /// `CreDtTm`, an ISO 8601 date-time such as `2024-05-01T12:00:00Z`, passed in by the caller.
    pub created_at: String,
    /// The input's `MsgId` (for files without one, the batch id).
    pub original_message_id: String,
    /// `pain.001.001.03`, `pain.001.001.09`, `CSV`, `NACHA`...
    pub original_message_name_id: String,
    /// The number of transactions in the input, if known.
    pub original_count: Option<u64>,
    /// The input's control sum as decimal text, if known.
    pub original_ctrl_sum: Option<String>,
    /// `ACCP`, `PART` or `RJCT`; see [`crate::group_status`].
    pub group_status: String,
    /// A paycore code for a rejection of the whole file (such as `control_total_mismatch`),
    /// written as the group's status reason.
    pub group_reason: Option<String>,
    /// The `OrgnlPmtInfId` of items without a payment information id (CSV, JSON lines,
    /// NACHA): usually the batch id.
    pub default_payment_information_id: String,
}

/// Writes a pain.002 report item by item, without buffering the items.
///
/// Items are grouped into `OrgnlPmtInfAndSts` blocks by their payment information id, in the
/// order they arrive: a new block starts whenever the id changes, so items should arrive in
/// file order. Identifiers longer than 35 characters are cut to 35, as the schema requires.
///
/// The output follows the official pain.002.001.10 schema, and for .03 the ISO 20022 element
/// order. With .03 it also stays inside the German DK subset schema when that is possible: no
/// `InitgPty`, no `AddtlInf`, and an `OrgnlTxRef` in every transaction. That subset only knows
/// rejections in EUR, so a report with accepted items or other currencies fails it.
pub struct Pain002Writer<W: Write> {
    out: W,
    version: Pain002Version,
    default_block: String,
    open_block: Option<String>,
    statuses: u64,
}

impl<W: Write> Pain002Writer<W> {
    /// Writes everything up to the first transaction.
    pub fn begin(mut out: W, version: Pain002Version, header: &Pain002Header) -> io::Result<Self> {
        write_pain002_header(&mut out, version, header)?;
        Ok(Pain002Writer::body(out, version, &header.default_payment_information_id))
    }

    /// A writer of the transactions and the document's end only, for a report whose header
    /// [`write_pain002_header`] writes apart, before them. `default_payment_information_id`
    /// is the header's.
    pub fn body(out: W, version: Pain002Version, default_payment_information_id: &str) -> Self {
        Pain002Writer {
            out,
            version,
            default_block: own_id(version, default_payment_information_id),
            open_block: None,
            statuses: 0,
        }
    }

    /// Writes one transaction's status.
    pub fn item(&mut self, item: &ReportItem) -> io::Result<()> {
        self.line(&item.as_line())
    }

    /// Writes one transaction's status. The static parts are written as bytes and numbers by
    /// hand: with `writeln!` per element, a million items took longer to write than the engine
    /// took to pay them.
    pub fn line(&mut self, item: &ReportLine<'_>) -> io::Result<()> {
        // Compared before it is copied: most items are in the block already open.
        let block = item.payment_information_id.map_or(self.default_block.as_str(), id_or_placeholder_str);
        if self.open_block.as_deref() != Some(block) {
            let block = block.to_owned();
            self.close_block()?;
            self.out.write_all(b"    <OrgnlPmtInfAndSts>\n")?;
            leaf(&mut self.out, 6, "OrgnlPmtInfId", &block)?;
            self.open_block = Some(block);
        }
        self.statuses += 1;
        let out = &mut self.out;
        let mut digits = Digits::new();
        out.write_all(b"      <TxInfAndSts>\n        <StsId>")?;
        out.write_all(digits.of(self.statuses))?;
        out.write_all(b"</StsId>\n")?;
        if let Some(id) = item.instruction_id.filter(|id| !id.is_empty()) {
            leaf(out, 8, "OrgnlInstrId", cut_str(id, TEXT_35))?;
        }
        if let Some(id) = item.reference.filter(|id| !id.is_empty()) {
            leaf(out, 8, "OrgnlEndToEndId", cut_str(id, TEXT_35))?;
        }
        let status: &[u8] = match item.status {
            LineStatus::Succeeded | LineStatus::Skipped { .. } => b"        <TxSts>ACCP</TxSts>\n",
            LineStatus::Failed { .. } | LineStatus::Returned { .. } => b"        <TxSts>RJCT</TxSts>\n",
            LineStatus::Pending => b"        <TxSts>PDNG</TxSts>\n",
        };
        out.write_all(status)?;
        if let Some(code) = item.status.code() {
            reason(out, 8, self.version, code)?;
        }
        if let Some(currency) = item.currency.filter(|_| item.amount > 0) {
            out.write_all(b"        <OrgnlTxRef>\n          <Amt>\n            <InstdAmt Ccy=\"")?;
            out.write_all(currency.code().as_bytes())?;
            out.write_all(b"\">")?;
            out.write_all(Amount::new().of(item.amount, currency))?;
            out.write_all(b"</InstdAmt>\n          </Amt>\n        </OrgnlTxRef>\n")?;
        } else if self.version == Pain002Version::V03 {
            out.write_all(b"        <OrgnlTxRef/>\n")?;
        }
        out.write_all(b"      </TxInfAndSts>\n")
    }

    /// Flushes the output.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn close_block(&mut self) -> io::Result<()> {
        if self.open_block.take().is_some() {
            writeln!(self.out, "    </OrgnlPmtInfAndSts>")?;
        }
        Ok(())
    }

    /// Closes the document, flushes, and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.close_block()?;
        writeln!(self.out, "  </CstmrPmtStsRpt>")?;
        writeln!(self.out, "</Document>")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Writes a pain.002 report's beginning: the declaration, the group header and the original
/// group's status, up to the first `OrgnlPmtInfAndSts`. [`Pain002Writer::body`] writes the rest.
pub fn write_pain002_header(out: &mut impl Write, version: Pain002Version, header: &Pain002Header) -> io::Result<()> {
    writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(out, r#"<Document xmlns="{}">"#, version.namespace())?;
    writeln!(out, "  <CstmrPmtStsRpt>")?;
    writeln!(out, "    <GrpHdr>")?;
    leaf(out, 6, "MsgId", &own_id(version, &header.message_id))?;
    leaf(out, 6, "CreDtTm", &header.created_at)?;
    writeln!(out, "    </GrpHdr>")?;
    writeln!(out, "    <OrgnlGrpInfAndSts>")?;
    leaf(out, 6, "OrgnlMsgId", &id_or_placeholder(&header.original_message_id))?;
    leaf(out, 6, "OrgnlMsgNmId", &id_or_placeholder(&header.original_message_name_id))?;
    if let Some(count) = header.original_count {
        leaf(out, 6, "OrgnlNbOfTxs", &count.to_string())?;
    }
    if let Some(sum) = header.original_ctrl_sum.as_deref().filter(|s| !s.is_empty()) {
        leaf(out, 6, "OrgnlCtrlSum", sum)?;
    }
    leaf(out, 6, "GrpSts", &header.group_status)?;
    if let Some(code) = &header.group_reason {
        reason(out, 6, version, code)?;
    }
    writeln!(out, "    </OrgnlGrpInfAndSts>")?;
    Ok(())
}

/// Spaces to indent with; no element is deeper than this.
const SPACES: &[u8; 16] = b"                ";

fn indent(out: &mut impl Write, indent: usize) -> io::Result<()> {
    out.write_all(&SPACES[..indent.min(SPACES.len())])
}

fn leaf(out: &mut impl Write, depth: usize, name: &str, text: &str) -> io::Result<()> {
    indent(out, depth)?;
    out.write_all(b"<")?;
    out.write_all(name.as_bytes())?;
    out.write_all(b">")?;
    out.write_all(escape(text).as_bytes())?;
    out.write_all(b"</")?;
    out.write_all(name.as_bytes())?;
    out.write_all(b">\n")
}

/// `StsRsnInf/Rsn/Cd` with the ISO code, and from .10 on the paycore code in `AddtlInf`.
fn reason(out: &mut impl Write, depth: usize, version: Pain002Version, code: &str) -> io::Result<()> {
    indent(out, depth)?;
    out.write_all(b"<StsRsnInf>\n")?;
    indent(out, depth + 2)?;
    out.write_all(b"<Rsn>\n")?;
    leaf(out, depth + 4, "Cd", iso_reason(code))?;
    indent(out, depth + 2)?;
    out.write_all(b"</Rsn>\n")?;
    if version != Pain002Version::V03 && !code.is_empty() {
        leaf(out, depth + 2, "AddtlInf", cut_str(code, TEXT_105))?;
    }
    indent(out, depth)?;
    out.write_all(b"</StsRsnInf>\n")
}

/// At most `max` characters of `text`.
fn cut_str(text: &str, max: usize) -> &str {
    text.char_indices().nth(max).map_or(text, |(end, _)| &text[..end])
}

/// An identifier paycore made (the report's `MsgId`, the batch id standing in for a
/// `PmtInfId`). For .03 it is written in the SEPA character set that the DK subset requires
/// (`A-Z a-z 0-9 + ? / - : ( ) . , '` and space), other characters becoming `-`, so that
/// `bat_01…` is written `bat-01…`.
fn own_id(version: Pain002Version, text: &str) -> String {
    let id = id_or_placeholder(text);
    match version {
        Pain002Version::V10 | Pain002Version::V11 => id,
        Pain002Version::V03 => {
            id.chars().map(|c| if c.is_ascii_alphanumeric() || "+?/-:().,' ".contains(c) { c } else { '-' }).collect()
        }
    }
}

/// A `Max35Text` identifier: cut to 35 characters, `NOTPROVIDED` when empty.
fn id_or_placeholder(text: &str) -> String {
    id_or_placeholder_str(text).to_owned()
}

fn id_or_placeholder_str(text: &str) -> &str {
    let text = text.trim();
    if text.is_empty() {
        "NOTPROVIDED"
    } else {
        cut_str(text, TEXT_35)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_cut_at_a_character_not_a_byte() {
        assert_eq!(cut_str("abc", 35), "abc");
        assert_eq!(cut_str("abcdef", 3), "abc");
        assert_eq!(cut_str("ééééé", 2), "éé");
        assert_eq!(id_or_placeholder_str("  "), "NOTPROVIDED");
        assert_eq!(id_or_placeholder_str(&"x".repeat(40)), "x".repeat(35));
    }
}
