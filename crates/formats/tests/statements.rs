//! camt.053 and CSV statements: exact bytes, the balance check, and validity against the
//! official camt.053.001.08 schema in ../shared/samples/xsd.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use paycore_formats::{
    Camt053Writer, CsvStatementWriter, EntryTotals, JsonStatementWriter, StatementBalance, StatementEntry,
    StatementHeader, StatementWriter,
};
use std::process::Command;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
use std::sync::atomic::{AtomicUsize, Ordering};

/// A statement of `code` opening at `opening` with these entries (amount, credit).
fn header(code: &str, opening: i128, entries: &[(u64, bool)], iban: Option<&str>) -> StatementHeader {
    let mut credits = EntryTotals::default();
    let mut debits = EntryTotals::default();
    let mut closing = opening;
    for &(amount, credit) in entries {
        if credit {
            credits.add(amount).unwrap();
            closing += i128::from(amount);
        } else {
            debits.add(amount).unwrap();
            closing -= i128::from(amount);
        }
    }
    StatementHeader {
        message_id: "stmt_acct_1-20261201-20261202".to_owned(),
        statement_id: "stmt_acct_1-20261201-20261202".to_owned(),
        sequence: 3,
        created_at: "2026-12-05T07:00:00Z".to_owned(),
        from: "2026-12-01T00:00:00Z".to_owned(),
        to: "2026-12-02T23:59:59.999999999Z".to_owned(),
        account_id: "acct_1".to_owned(),
        iban: iban.map(str::to_owned),
        currency: currency(code),
        opening: StatementBalance { amount: opening, date: "2026-12-01".to_owned() },
        closing: StatementBalance { amount: closing, date: "2026-12-02".to_owned() },
        credits,
        debits,
    }
}

fn entry<'a>(
    id: &'a str,
    amount: u64,
    credit: bool,
    end_to_end: Option<&'a str>,
    remittance: Option<&'a str>,
) -> StatementEntry<'a> {
    StatementEntry {
        transfer_id: id,
        counterparty: "acct_2",
        amount,
        credit,
        booked_at: "2026-12-01T10:00:00.000000001Z",
        value_date: "2026-12-01",
        end_to_end_id: end_to_end,
        remittance,
    }
}

fn camt(header: &StatementHeader, entries: &[StatementEntry<'_>]) -> std::io::Result<String> {
    let mut out = Vec::new();
    let mut writer: Box<dyn StatementWriter> = Box::new(Camt053Writer::begin(&mut out, header)?);
    for e in entries {
        writer.entry(e)?;
    }
    writer.finish()?;
    Ok(String::from_utf8(out).unwrap())
}

fn csv(header: &StatementHeader, entries: &[StatementEntry<'_>]) -> std::io::Result<String> {
    let mut out = Vec::new();
    let mut writer: Box<dyn StatementWriter> = Box::new(CsvStatementWriter::begin(&mut out, header)?);
    for e in entries {
        writer.entry(e)?;
    }
    writer.finish()?;
    Ok(String::from_utf8(out).unwrap())
}

fn json(header: &StatementHeader, entries: &[StatementEntry<'_>]) -> std::io::Result<serde_json::Value> {
    let mut out = Vec::new();
    let mut writer: Box<dyn StatementWriter> = Box::new(JsonStatementWriter::begin(&mut out, header)?);
    for e in entries {
        writer.entry(e)?;
    }
    writer.finish()?;
    Ok(serde_json::from_slice(&out).unwrap())
}

/// Validates `xml` against an XSD with xmllint; `Ok(false)` when xmllint is missing outside CI.
fn xsd_valid(xml: &str, xsd: &str) -> Result<bool, String> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("paycore-statements-{}-{n}.xml", std::process::id()));
    std::fs::write(&path, xml).unwrap();
    let result =
        Command::new("xmllint").args(["--noout", "--schema", &format!("{SAMPLES}/xsd/{xsd}")]).arg(&path).output();
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(output) if output.status.success() => Ok(true),
        Ok(output) => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("xmllint is not installed (apt-get install libxml2-utils)")
        }
        Err(_) => {
            eprintln!("SKIPPED: xmllint not installed (apt-get install libxml2-utils); XSD validation not run");
            Ok(false)
        }
    }
}

fn small() -> (StatementHeader, Vec<StatementEntry<'static>>) {
    let entries =
        vec![entry("tr_1", 1050, true, Some("E2E-1"), Some("Invoice <7> & co")), entry("tr_2", 300, false, None, None)];
    (header("EUR", 10_000, &[(1050, true), (300, false)], None), entries)
}

#[test]
fn camt053_bytes() {
    let (header, entries) = small();
    let xml = camt(&header, &entries).unwrap();
    let expected = std::fs::read_to_string(format!("{FIXTURES}/statements/small.camt053.xml")).unwrap();
    assert_eq!(xml, expected);
    assert_eq!(xsd_valid(&xml, "camt.053.001.08.xsd").map(|_| ()), Ok(()), "{xml}");
}

#[test]
fn csv_statement_bytes() {
    let (header, entries) = small();
    assert_eq!(
        csv(&header, &entries).unwrap(),
        "type,booked_at,transfer,counterparty,credit_debit,amount,currency,balance,end_to_end_id,remittance_information\n\
         opening_balance,2026-12-01,,,CRDT,100.00,EUR,100.00,,\n\
         entry,2026-12-01T10:00:00.000000001Z,tr_1,acct_2,CRDT,10.50,EUR,110.50,E2E-1,Invoice <7> & co\n\
         entry,2026-12-01T10:00:00.000000001Z,tr_2,acct_2,DBIT,3.00,EUR,107.50,,\n\
         closing_balance,2026-12-02,,,CRDT,107.50,EUR,107.50,,\n"
    );
}

#[test]
fn json_statement() {
    let (header, entries) = small();
    let doc = json(&header, &entries).unwrap();
    assert_eq!(doc["object"], "statement");
    assert_eq!(
        (doc["opening_balance"]["amount"].as_i64(), doc["closing_balance"]["amount"].as_i64()),
        (Some(10_000), Some(10_750))
    );
    assert_eq!(doc["credits"], serde_json::json!({"count": 1, "sum": 1050}));
    assert_eq!(doc["debits"], serde_json::json!({"count": 1, "sum": 300}));
    let entries = doc["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["transfer"], "tr_1");
    assert_eq!(entries[0]["credit_debit"], "credit");
    assert_eq!(entries[0]["balance_after"], 11_050);
    assert_eq!(entries[0]["end_to_end_id"], "E2E-1");
    assert_eq!(entries[1]["credit_debit"], "debit");
    assert_eq!(entries[1]["balance_after"], 10_750);
    assert!(entries[1]["end_to_end_id"].is_null());
    let empty = json(&header_for_empty(), &[]).unwrap();
    assert_eq!(empty["entries"], serde_json::json!([]));
}

fn header_for_empty() -> StatementHeader {
    header("JPY", 0, &[], None)
}

#[test]
fn amounts_have_the_currency_decimals_and_a_debit_balance_is_dbit() {
    // JPY has no decimals, KWD three; a balance below zero is its absolute value with DBIT.
    for (code, amount, text) in [("JPY", 1500, "1500"), ("KWD", 1500, "1.500"), ("EUR", 1500, "15.00")] {
        let entries = [entry("tr_9", amount, false, None, None)];
        let header = header(code, 0, &[(amount, false)], None);
        let xml = camt(&header, &entries).unwrap();
        assert!(
            xml.contains(&format!(
                r#"<Amt Ccy="{code}">{text}</Amt>
        <CdtDbtInd>DBIT</CdtDbtInd>
        <Sts>"#
            )),
            "{xml}"
        );
        assert!(
            xml.contains(&format!(
                r#"<Cd>CLBD</Cd>
          </CdOrPrtry>
        </Tp>
        <Amt Ccy="{code}">{text}</Amt>
        <CdtDbtInd>DBIT</CdtDbtInd>"#
            )),
            "{xml}"
        );
        assert_eq!(xsd_valid(&xml, "camt.053.001.08.xsd").map(|_| ()), Ok(()), "{xml}");
        let csv = csv(&header, &entries).unwrap();
        assert!(csv.ends_with(&format!("closing_balance,2026-12-02,,,DBIT,{text},{code},-{text},,\n")), "{csv}");
    }
}

#[test]
fn an_empty_statement_and_an_iban_account_are_valid() {
    let header = header("EUR", -25, &[], Some("DE89370400440532013000"));
    let xml = camt(&header, &[]).unwrap();
    assert!(xml.contains("<IBAN>DE89370400440532013000</IBAN>"), "{xml}");
    assert!(!xml.contains("<Ntry>"), "{xml}");
    assert_eq!(xsd_valid(&xml, "camt.053.001.08.xsd").map(|_| ()), Ok(()), "{xml}");
}

#[test]
fn long_and_odd_texts_are_cut_and_escaped_into_a_valid_document() {
    let long = "x".repeat(200);
    let entries =
        [entry("tr_1", 1, true, Some(&long), Some(&long)), entry("tr_2", 1, true, Some("  "), Some("\"'<>&"))];
    let mut header = header("EUR", 0, &[(1, true), (1, true)], None);
    header.account_id = "a".repeat(40);
    let xml = camt(&header, &entries).unwrap();
    assert!(xml.contains(&format!("<EndToEndId>{}</EndToEndId>", "x".repeat(35))), "{xml}");
    assert!(xml.contains(&format!("<Ustrd>{}</Ustrd>", "x".repeat(140))), "{xml}");
    assert!(xml.contains("<EndToEndId>NOTPROVIDED</EndToEndId>"), "{xml}");
    assert_eq!(xsd_valid(&xml, "camt.053.001.08.xsd").map(|_| ()), Ok(()), "{xml}");
}

#[test]
fn a_statement_that_does_not_add_up_is_an_error() {
    let (mut header, entries) = small();
    header.closing.amount += 1;
    let error = camt(&header, &entries).unwrap_err();
    assert!(error.to_string().contains("not the closing balance"), "{error}");
    assert!(csv(&header, &entries).unwrap_err().to_string().contains("not the closing balance"));
    // An entry missing: the counts differ from the header's.
    let (header, entries) = small();
    let error = camt(&header, &entries[..1]).unwrap_err();
    assert!(error.to_string().contains("1 credits, 0 debits"), "{error}");
}

proptest::proptest! {
    /// Any entries that the header counts add up: the CSV's running balance ends at the
    /// closing balance, and every document validates.
    #[test]
    fn running_balance_ends_at_the_closing(
        opening in -1_000_000_000_000i128..1_000_000_000_000,
        moves in proptest::collection::vec((1u64..=i64::MAX as u64 / 64, proptest::bool::ANY), 0..20),
        code in proptest::sample::select(vec!["EUR", "JPY", "KWD"]),
    ) {
        let header = header(code, opening, &moves, None);
        let ids: Vec<String> = (0..moves.len()).map(|i| format!("tr_{i}")).collect();
        let entries: Vec<StatementEntry<'_>> =
            moves.iter().zip(&ids).map(|(&(amount, credit), id)| entry(id, amount, credit, None, None)).collect();
        let csv = csv(&header, &entries).unwrap();
        let rows: Vec<&str> = csv.lines().collect();
        proptest::prop_assert_eq!(rows.len(), entries.len() + 3);
        let last_entry_balance = rows[rows.len() - 2].split(',').nth(7).unwrap().to_owned();
        let closing_balance = rows[rows.len() - 1].split(',').nth(7).unwrap().to_owned();
        proptest::prop_assert_eq!(last_entry_balance, closing_balance);
        proptest::prop_assert!(camt(&header, &entries).is_ok());
    }
}

#[test]
#[ignore = "writes the fixture of camt053_bytes"]
fn write_fixture() {
    let (header, entries) = small();
    std::fs::write(format!("{FIXTURES}/statements/small.camt053.xml"), camt(&header, &entries).unwrap()).unwrap();
}
