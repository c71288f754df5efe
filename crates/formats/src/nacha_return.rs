//! NACHA return files out: the entries of a NACHA file that paycore did not pay, sent back as
//! return entries (transaction code x1 or x6, each with an Addenda 99 carrying its R-code).
//!
//! The return file is written from the original file, read again record by record: a file
//! header from paycore (the original's immediate destination) to the first batch's ODFI, the
//! names swapped, and for each
//! original batch with a returned entry one batch with the original's company fields, the
//! Standard Entry Class, and paycore (the original's immediate destination) as the batch's
//! ODFI. A return entry goes back to the original batch's ODFI (as its RDFI, with its check
//! digit), keeps the account, amount, identification and name of the entry it returns, and
//! carries a new trace number under paycore's routing number; its Addenda 99 names the R-code,
//! the original trace number and the original entry's RDFI. Service class 200 (mixed), since a
//! return of a credit is a credit (x1) and a return of a debit a debit (x6). Control records
//! count, hash and sum what was written; the file is padded with lines of 9s to a block of 10.
//! Streaming: only the current batch header is kept. IAT (and ADV) entries, whose layout is
//! their own, are not returned by this writer.

use crate::nacha::{field, record, Records};
use crate::FatalError;
use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};

const RECORD_LENGTH: usize = 94;
const HASH_MODULUS: u128 = 10_000_000_000;
const BLOCKING_FACTOR: u64 = 10;

/// The NACHA return reason code for a paycore failure code: R01 insufficient funds, R03 no
/// account, R04 an invalid account number, R16 a frozen account, R02 a closed one; any other
/// refusal R17 (file record edit criteria).
pub fn return_reason(failure_code: &str) -> &'static str {
    match failure_code {
        "insufficient_funds" | "exceeds_credits" | "exceeds_debits" => "R01",
        "account_closed" => "R02",
        "account_not_found" | "payee_not_found" | "payer_not_found" => "R03",
        "invalid_account" | "invalid_account_number" | "invalid_iban" | "invalid_routing_number" => "R04",
        "account_frozen" => "R16",
        _ => "R17",
    }
}

/// The title NACHA gives a return reason code (Operating Rules, Appendix Four), or
/// `"Unknown return reason"` for a code outside this table.
pub fn return_reason_description(code: &str) -> &'static str {
    match code {
        "R01" => "Insufficient Funds",
        "R02" => "Account Closed",
        "R03" => "No Account/Unable to Locate Account",
        "R04" => "Invalid Account Number Structure",
        "R05" => "Unauthorized Debit to Consumer Account Using Corporate SEC Code",
        "R06" => "Returned per ODFI's Request",
        "R07" => "Authorization Revoked by Customer",
        "R08" => "Payment Stopped",
        "R09" => "Uncollected Funds",
        "R10" => "Customer Advises Originator is Not Known to Receiver and/or Originator is Not Authorized by Receiver to Debit Receiver's Account",
        "R11" => "Customer Advises Entry Not in Accordance with the Terms of the Authorization",
        "R12" => "Account Sold to Another DFI",
        "R13" => "Invalid ACH Routing Number",
        "R14" => "Representative Payee Deceased or Unable to Continue in That Capacity",
        "R15" => "Beneficiary or Account Holder (Other Than a Representative Payee) Deceased",
        "R16" => "Account Frozen/Entry Returned per OFAC Instruction",
        "R17" => "File Record Edit Criteria",
        "R20" => "Non-Transaction Account",
        "R21" => "Invalid Company Identification",
        "R22" => "Invalid Individual ID Number",
        "R23" => "Credit Entry Refused by Receiver",
        "R24" => "Duplicate Entry",
        "R29" => "Corporate Customer Advises Not Authorized",
        "R31" => "Permissible Return Entry (CCD and CTX only)",
        "R33" => "Return of XCK Entry",
        _ => "Unknown return reason",
    }
}

/// A failure of writing a return file: the original does not read, or the output failed.
#[derive(Debug, thiserror::Error)]
pub enum ReturnFileError {
    #[error("the original file does not read: {0}")]
    Original(#[from] FatalError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// When the return file is made: `YYMMDD` and `HHMM`, passed in by the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReturnFileDate {
    pub date: String,
    pub time: String,
}

#[derive(Default)]
struct Totals {
    entries_and_addenda: u64,
    hash: u128,
    debit: u128,
    credit: u128,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.entries_and_addenda += other.entries_and_addenda;
        self.hash = (self.hash + other.hash) % HASH_MODULUS;
        self.debit += other.debit;
        self.credit += other.credit;
    }
}

struct Writer<W: Write> {
    out: W,
    /// paycore's 8-digit routing number: the original's immediate destination.
    paycore: String,
    records: u64,
    batches: u64,
    file: Totals,
    /// The original batch header in force, and whether its return batch is open.
    batch_header: Option<String>,
    open: Option<Totals>,
    sequence: u64,
}

/// Writes the return file of `original` (a NACHA file as paycore read it) for the entries at
/// the lines in `returns` (the entry detail record's line, with its R-code); entries at other
/// lines are not returned. Returns the output.
pub fn write_nacha_returns<R: BufRead, W: Write>(
    original: R,
    returns: &BTreeMap<u64, &str>,
    made: &ReturnFileDate,
    out: W,
) -> Result<W, ReturnFileError> {
    let mut records = Records::new(original);
    let mut writer: Option<Writer<W>> = None;
    let mut out = Some(out);
    // The file header waits for the first batch header, whose ODFI it is addressed to.
    let mut file_header: Option<String> = None;
    let mut padded = String::new();
    while let Some((line, bytes)) = records.next_record()? {
        if bytes.iter().all(|b| *b == b' ') {
            continue;
        }
        let text = record(bytes, line, &mut padded)?;
        match text.as_bytes().first() {
            Some(b'1') => file_header = Some(text.to_owned()),
            Some(b'5') => {
                if let (Some(header), Some(out)) = (file_header.as_deref(), out.take()) {
                    writer = Some(Writer::begin(out, header, Some(field(text, 80, 87)), made)?);
                }
                if let Some(w) = writer.as_mut() {
                    w.close_batch()?;
                    w.batch_header = Some(text.to_owned());
                }
            }
            Some(b'6') => {
                if let (Some(w), Some(reason)) = (writer.as_mut(), returns.get(&line)) {
                    w.entry(text, reason)?;
                }
            }
            Some(b'8') => {
                if let Some(w) = writer.as_mut() {
                    w.close_batch()?;
                    w.batch_header = None;
                }
            }
            _ => {}
        }
    }
    if let (Some(header), Some(out)) = (file_header.as_deref(), out.take()) {
        writer = Some(Writer::begin(out, header, None, made)?);
    }
    match writer {
        Some(writer) => Ok(writer.finish()?),
        None => Err(ReturnFileError::Original(FatalError::Malformed {
            line: 1,
            message: "the file has no file header (1)".to_owned(),
        })),
    }
}

impl<W: Write> Writer<W> {
    /// The file header, from paycore (the original's immediate destination) to the first
    /// batch's ODFI (with its check digit; the original's immediate origin when the file has
    /// no batch), the names swapped.
    fn begin(mut out: W, header: &str, first_odfi: Option<&str>, made: &ReturnFileDate) -> io::Result<Self> {
        let destination = field(header, 4, 13);
        let origin = match first_odfi {
            Some(odfi) => format!(" {odfi:0>8.8}{}", check_digit(odfi)),
            None => field(header, 14, 23).to_owned(),
        };
        let (destination_name, origin_name) = (field(header, 41, 63), field(header, 64, 86));
        let text = format!(
            "101{origin:>10}{destination:>10}{:0>6.6}{:0>4.4}{}094101{origin_name:<23.23}{destination_name:<23.23}{:<8.8}",
            made.date,
            made.time,
            field(header, 34, 34),
            "RETURNS",
        );
        write_record(&mut out, &text)?;
        let paycore = destination.trim().chars().rev().take(9).collect::<String>();
        let paycore: String = paycore.chars().rev().take(8).collect();
        Ok(Writer {
            out,
            paycore,
            records: 1,
            batches: 0,
            file: Totals::default(),
            batch_header: None,
            open: None,
            sequence: 0,
        })
    }

    fn entry(&mut self, entry: &str, reason: &str) -> io::Result<()> {
        let Some(header) = self.batch_header.clone() else { return Ok(()) };
        // IAT entries have their own layout and seven addenda: not returned by this writer.
        if matches!(field(&header, 51, 53), "IAT" | "ADV") {
            return Ok(());
        }
        if self.open.is_none() {
            self.batches += 1;
            // The original's company fields and SEC code, mixed service class, paycore as ODFI.
            let text = format!("5200{}{:<8.8}{:0>7}", &header[4..79], self.paycore, self.batches);
            self.write(&text)?;
            self.open = Some(Totals::default());
        }
        let code = field(entry, 2, 3);
        let return_code = match code.as_bytes() {
            [kind, digit] if (b'2'..=b'4').contains(digit) => format!("{}1", char::from(*kind)),
            [kind, _] => format!("{}6", char::from(*kind)),
            _ => "21".to_owned(),
        };
        let is_credit = return_code.ends_with('1');
        let original_odfi = field(&header, 80, 87);
        let rdfi = format!("{original_odfi:0>8.8}{}", check_digit(original_odfi));
        self.sequence += 1;
        let trace = format!("{:0>8.8}{:0>7}", self.paycore, self.sequence % 10_000_000);
        let amount: u128 = field(entry, 30, 39).trim().parse().unwrap_or(0);
        // Transaction code, RDFI and check digit, the original's account to name, then the
        // addenda indicator and the new trace number.
        let text = format!("6{return_code}{rdfi}{}1{trace}", &entry[12..78]);
        self.write(&text)?;
        let addenda = format!(
            "799{:<3.3}{:<15.15}{:6}{:<8.8}{:44}{trace}",
            reason,
            field(entry, 80, 94),
            "",
            field(entry, 4, 11),
            "",
        );
        self.write(&addenda)?;
        if let Some(totals) = self.open.as_mut() {
            totals.entries_and_addenda += 2;
            totals.hash = (totals.hash + field(&rdfi, 1, 8).parse::<u128>().unwrap_or(0)) % HASH_MODULUS;
            if is_credit {
                totals.credit += amount;
            } else {
                totals.debit += amount;
            }
        }
        Ok(())
    }

    fn close_batch(&mut self) -> io::Result<()> {
        let (Some(totals), Some(header)) = (self.open.take(), self.batch_header.clone()) else { return Ok(()) };
        let text = format!(
            "8200{:0>6}{:0>10}{:0>12}{:0>12}{:<10.10}{:25}{:<8.8}{:0>7}",
            totals.entries_and_addenda,
            totals.hash,
            totals.debit,
            totals.credit,
            field(&header, 41, 50),
            "",
            self.paycore,
            self.batches,
        );
        self.write(&text)?;
        self.file.add(&totals);
        Ok(())
    }

    fn finish(mut self) -> io::Result<W> {
        self.close_batch()?;
        let records = self.records + 1;
        let blocks = records.div_ceil(BLOCKING_FACTOR);
        let text = format!(
            "9{:0>6}{:0>6}{:0>8}{:0>10}{:0>12}{:0>12}{:39}",
            self.batches, blocks, self.file.entries_and_addenda, self.file.hash, self.file.debit, self.file.credit, "",
        );
        self.write(&text)?;
        for _ in self.records..blocks * BLOCKING_FACTOR {
            write_record(&mut self.out, &"9".repeat(RECORD_LENGTH))?;
        }
        self.out.flush()?;
        Ok(self.out)
    }

    fn write(&mut self, text: &str) -> io::Result<()> {
        self.records += 1;
        write_record(&mut self.out, text)
    }
}

fn write_record(out: &mut impl Write, text: &str) -> io::Result<()> {
    if text.len() != RECORD_LENGTH {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a return record of {} characters, not 94: {text:?}", text.len()),
        ));
    }
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")
}

/// The ABA check digit of an 8-digit routing number (weights 3, 7, 1).
fn check_digit(routing: &str) -> char {
    let sum: u32 = routing
        .bytes()
        .take(8)
        .zip([3, 7, 1, 3, 7, 1, 3, 7])
        .map(|(b, w)| u32::from(b.wrapping_sub(b'0')) % 10 * w)
        .sum();
    char::from(b'0' + u8::try_from((10 - sum % 10) % 10).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_digits_and_reasons() {
        assert_eq!(check_digit("07640125"), '1');
        assert_eq!(check_digit("02100002"), '1');
        assert!(crate::is_routing_number("076401251"));
        assert_eq!(return_reason("insufficient_funds"), "R01");
        assert_eq!(return_reason("account_not_found"), "R03");
        assert_eq!(return_reason("something_else"), "R17");
    }
}
