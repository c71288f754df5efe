//! Per-line diagnostics and fatal errors, one small case each.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use paycore_formats::{check_expected, Format, ParseOptions};

const HEADER: &str = "payee,amount,currency,reference\n";

/// Parses one CSV data row (line 2) and returns its single diagnostic as (code, field, message).
fn csv_row_problem(row: &str) -> (&'static str, String, String) {
    let outcome = parse_text(Format::Csv, &format!("{HEADER}{row}\n"), &ParseOptions::default());
    assert_eq!(outcome.items, vec![], "{row}");
    let [d] = outcome.diagnostics.as_slice() else { panic!("{row}: {:?}", outcome.diagnostics) };
    assert_eq!((d.line, d.location.as_str()), (2, "line 2"), "{row}");
    (d.code, d.field.clone().unwrap_or_default(), d.message.clone())
}

#[test]
fn csv_row_problems() {
    let cases = [
        ("DE1,1.005,EUR,r1", "too_many_decimals", "amount", "amount \"1.005\" has 3 decimals but EUR allows at most 2"),
        ("DE1,-10.00,EUR,r1", "amount_not_positive", "amount", "amount \"-10.00\" is negative; amounts must be greater than zero"),
        ("DE1,0.00,EUR,r1", "amount_not_positive", "amount", "amount \"0.00\" is zero; amounts must be greater than zero"),
        ("DE1,1;5,EUR,r1", "invalid_amount", "amount", "amount \"1;5\" is not a decimal amount; expected digits with at most one '.', such as 1234.50"),
        ("DE1,10,EURO,r1", "invalid_currency", "currency", "currency \"EURO\" is not an ISO 4217 currency code; expected three upper-case letters such as EUR"),
        ("DE1,10,eur,r1", "invalid_currency", "currency", "currency \"eur\" is not an ISO 4217 currency code; expected three upper-case letters such as EUR (currency codes are upper case)"),
        (",10,EUR,r1", "missing_field", "payee", "payee is missing; every row needs one"),
        ("DE1,,EUR,r1", "missing_field", "amount", "amount is missing; every row needs one"),
        ("DE1,10,,r1", "missing_field", "currency", "currency is missing: the row has no currency and the batch has no default currency"),
        ("DE1,1.5,JPY,r1", "too_many_decimals", "amount", "amount \"1.5\" has 1 decimals but JPY allows at most 0"),
        ("DE1,10,EUR,r1,", "field_count_mismatch", "row", "the row has 5 fields but the header has 4; every row needs one field per column"),
        ("DE1,10,EUR", "field_count_mismatch", "row", "the row has 3 fields but the header has 4; every row needs one field per column"),
    ];
    for (row, code, field, message) in cases {
        assert_eq!(csv_row_problem(row), (code, field.to_owned(), message.to_owned()), "{row}");
    }
}

#[test]
fn csv_text_that_is_not_utf8_is_named_by_its_field_and_other_text_is_read_as_given() {
    // Line 2: a payee that is not UTF-8; line 3: bytes that are not UTF-8 in a column no one
    // reads (the row is valid); line 4: text beyond ASCII, read as given.
    let mut bytes = b"payee,amount,currency,reference,note\n".to_vec();
    bytes.extend_from_slice(b"DE\xff1,10,EUR,r1,x\nDE2,11,EUR,r2,\xc3\n");
    bytes.extend_from_slice("DE3,12,EUR,caf\u{e9} \u{4e2d},\u{e9}\n".as_bytes());
    let outcome = parse_with(Format::Csv, bytes.as_slice(), &ParseOptions::default());
    let [d] = outcome.diagnostics.as_slice() else { panic!("{:?}", outcome.diagnostics) };
    assert_eq!(
        (d.line, d.code, d.field.as_deref(), d.message.as_str()),
        (2, "syntax", Some("payee"), "payee is not valid UTF-8 text")
    );
    let items: Vec<_> = outcome.items.iter().map(|i| (i.line, i.payee.as_str(), i.reference.as_deref())).collect();
    assert_eq!(items, vec![(3, "DE2", Some("r2")), (4, "DE3", Some("caf\u{e9} \u{4e2d}"))]);
}

#[test]
fn csv_a_row_with_a_million_extra_commas_is_invalid_not_paid() {
    let text = format!("{HEADER}DE1,10,EUR,r1{}\nDE2,11,EUR,r2\n", ",".repeat(1_000_000));
    let outcome = parse_text(Format::Csv, &text, &Default::default());
    assert_eq!(outcome.codes(), vec!["field_count_mismatch"]);
    assert_eq!(outcome.diagnostics[0].line, 2);
    assert!(outcome.diagnostics[0].message.starts_with("the row has 1000004 fields but the header has 4"));
    assert_eq!(outcome.items.iter().map(|i| (i.line, i.index)).collect::<Vec<_>>(), vec![(3, 1)]);
}

#[test]
fn csv_duplicate_reference_names_the_first_line() {
    let text = format!("{HEADER}DE1,10,EUR,INV-1\nDE2,11,EUR,INV-2\nDE3,12,EUR,INV-1\n");
    let outcome = parse_text(Format::Csv, &text, &ParseOptions::default());
    assert_eq!(outcome.items.len(), 2);
    assert_eq!(outcome.codes(), vec!["duplicate_reference"]);
    let d = &outcome.diagnostics[0];
    assert_eq!((d.line, d.field.as_deref()), (4, Some("reference")));
    assert_eq!(
        d.message,
        "reference \"INV-1\" was already used by the item at line 2; references must be unique within a file"
    );
    assert_eq!(outcome.totals(), vec![("EUR", 2100)]);
    assert_eq!(outcome.summary().invalid, 1);
}

#[test]
fn csv_missing_payee_column_is_fatal() {
    let outcome = parse_text(Format::Csv, "name,amount\nA,1\n", &ParseOptions::default());
    assert_eq!(
        outcome.fatal(),
        "the header row has no payee column (accepted names: payee, payee_account, creditor_iban, creditor_account_iban)"
    );
}

#[test]
fn csv_tolerates_bom_crlf_blank_lines_quotes_and_case() {
    let text = "\u{feff}Payee,AMOUNT,Currency,Payer,Extra\r\n\"DE 1, main\",12.50,EUR,acct_a,x\r\n\r\nDE2,0.01,EUR,,y";
    let options = ParseOptions { default_payer: Some("acct_default".to_owned()), default_currency: None };
    let outcome = parse_text(Format::Csv, text, &options);
    assert_eq!(outcome.codes(), Vec::<&str>::new());
    let items = &outcome.items;
    assert_eq!(items.len(), 2);
    assert_eq!((items[0].line, items[0].payee.as_str(), items[0].amount.get()), (2, "DE 1, main", 1250));
    assert_eq!(items[0].payer.as_deref(), Some("acct_a"));
    assert_eq!((items[1].line, items[1].index), (4, 1));
    assert_eq!(items[1].payer.as_deref(), Some("acct_default"));
}

#[test]
fn csv_index_counts_invalid_rows_too() {
    let text = format!("{HEADER}DE1,x,EUR,a\nDE2,1,EUR,b\n");
    let outcome = parse_text(Format::Csv, &text, &ParseOptions::default());
    assert_eq!(outcome.items[0].index, 1);
}

#[test]
fn jsonl_lines() {
    let text = [
        r#"{"payee":"DE1","amount":"12.50","currency":"EUR","reference":"a"}"#,
        "",
        r#"{"payee":"DE2","amount_minor":1250,"currency":"JPY"}"#,
        r#"{"payee":"DE3","amount":12.5,"currency":"EUR"}"#,
        r#"{"payee":"DE4","amount":"1","amount_minor":100,"currency":"EUR"}"#,
        r#"{"payee":"DE5","amount_minor":-3,"currency":"EUR"}"#,
        r#"{"payee":"DE6","amount_minor":1.5,"currency":"EUR"}"#,
        r#"{"payee":"DE7","amount":"1.001","currency":"EUR"}"#,
        r#"not json"#,
        r#"[1,2]"#,
        r#"{"payee":7,"amount":"1","currency":"EUR"}"#,
        r#"{"payee":"DE8","amount":"3"}"#,
    ]
    .join("\n");
    let outcome = parse_text(Format::Jsonl, &text, &ParseOptions::default());
    let minor: Vec<(u64, u64, &str)> =
        outcome.items.iter().map(|i| (i.line, i.amount.get(), i.currency.code())).collect();
    assert_eq!(minor, vec![(1, 1250, "EUR"), (3, 1250, "JPY")]);
    let problems: Vec<(u64, &str)> = outcome.diagnostics.iter().map(|d| (d.line, d.code)).collect();
    assert_eq!(
        problems,
        vec![
            (4, "invalid_amount"),
            (5, "invalid_amount"),
            (6, "amount_not_positive"),
            (7, "invalid_amount"),
            (8, "too_many_decimals"),
            (9, "syntax"),
            (10, "syntax"),
            (11, "syntax"),
            (12, "missing_field"),
        ]
    );
    assert_eq!(outcome.items[1].index, 1);
    assert_eq!(outcome.diagnostics[8].field.as_deref(), Some("currency"));
}

#[test]
fn expected_count_and_total() {
    let text = format!("{HEADER}DE1,10,EUR,a\nDE2,x,EUR,b\n");
    let outcome = parse_text(Format::Csv, &text, &ParseOptions::default());
    let eur = currency("EUR");
    assert_eq!(check_expected(outcome.summary(), Some(2), Some((eur, 1000))), vec![]);
    let messages: Vec<String> =
        check_expected(outcome.summary(), Some(3), Some((eur, 2000))).into_iter().map(|d| d.message).collect();
    assert_eq!(
        messages,
        vec![
            "expected_count is 3 but the file has 2 records",
            "expected_total is 20.00 EUR but the amounts in the file sum to 10.00 EUR",
        ]
    );
}

#[test]
fn pain001_structure_errors() {
    let fatal = |xml: &str| parse_text(Format::Pain001, xml, &ParseOptions::default()).fatal();
    assert!(fatal("<Document xmlns=\"urn:other\"><CstmrCdtTrfInitn/></Document>")
        .contains("namespace \"urn:other\" is not supported"));
    assert!(fatal("<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.001.001.03\">\n<CstmrCdtTrfInitn>")
        .contains("truncated"));
    assert!(fatal("<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.001.001.03\"><CstmrCdtTrfInitn><A></B></CstmrCdtTrfInitn></Document>").contains("not well-formed"));
    assert!(fatal("").contains("no <Document>"));
    assert!(fatal("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><Document/>").contains("ISO-8859-1"));
}

#[test]
fn pain001_amount_problems_are_per_item() {
    let xml = pain001_with_amounts(&[("10.005", "EUR"), ("5", "XYZ"), ("7.5", "EUR")], "3", "22.505");
    let outcome = parse_text(Format::Pain001, &xml, &ParseOptions::default());
    assert_eq!(outcome.codes(), vec!["too_many_decimals", "invalid_currency"]);
    assert_eq!(outcome.diagnostics[0].message, "InstdAmt \"10.005\" has 3 decimals but EUR allows at most 2");
    assert_eq!(outcome.diagnostics[0].location, "/Document/CstmrCdtTrfInitn/PmtInf[1]/CdtTrfTxInf[1]");
    assert_eq!(outcome.control_messages(), Vec::<String>::new());
    assert_eq!(outcome.totals(), vec![("EUR", 750)]);
}

/// A file written on one line gives every item line 1: a repeated EndToEndId among them is
/// still a duplicate (it went through as new until session 16, which compared lines).
#[test]
fn pain001_on_one_line_still_refuses_a_repeated_end_to_end_id() {
    let transaction = |id: &str| {
        format!(
            "<CdtTrfTxInf><PmtId><EndToEndId>{id}</EndToEndId></PmtId><Amt><InstdAmt Ccy=\"EUR\">1.00</InstdAmt></Amt>\
             <CdtrAcct><Id><Othr><Id>acc-{id}</Id></Othr></Id></CdtrAcct></CdtTrfTxInf>"
        )
    };
    let body = ["E0", "E1", "E0"].map(transaction).concat();
    let xml = format!(
        "<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.001.001.09\"><CstmrCdtTrfInitn>\
         <GrpHdr><MsgId>M</MsgId><NbOfTxs>3</NbOfTxs><CtrlSum>3.00</CtrlSum></GrpHdr>\
         <PmtInf><PmtInfId>P</PmtInfId><ReqdExctnDt><Dt>2024-02-29</Dt></ReqdExctnDt>\
         <DbtrAcct><Id><IBAN>DE02100100109307118603</IBAN></Id></DbtrAcct>{body}</PmtInf></CstmrCdtTrfInitn></Document>"
    );
    assert!(!xml.contains('\n'));
    let outcome = parse_text(Format::Pain001, &xml, &ParseOptions::default());
    assert_eq!(outcome.codes(), vec!["duplicate_reference"]);
    assert_eq!(outcome.items.iter().map(|i| i.reference.as_deref()).collect::<Vec<_>>(), vec![Some("E0"), Some("E1")]);
    let d = &outcome.diagnostics[0];
    assert_eq!((d.line, d.field.as_deref()), (1, Some("EndToEndId")));
    assert_eq!(
        d.message,
        "reference \"E0\" was already used by the item at line 1; references must be unique within a file"
    );
}

#[test]
fn pain001_creditor_iban_and_bic_are_checked_per_item() {
    let good = iban("DE", "370400440532013000");
    assert_eq!(good, "DE89370400440532013000");
    let transaction = |i: usize, account: &str, agent: &str| {
        format!(
            "\n<CdtTrfTxInf><PmtId><EndToEndId>E{i}</EndToEndId></PmtId><Amt><InstdAmt Ccy=\"EUR\">1.00</InstdAmt></Amt>\
             {agent}<CdtrAcct><Id>{account}</Id></CdtrAcct></CdtTrfTxInf>"
        )
    };
    let body = [
        transaction(
            0,
            &format!("<IBAN>{good}</IBAN>"),
            "<CdtrAgt><FinInstnId><BICFI>DEUTDEFFXXX</BICFI></FinInstnId></CdtrAgt>",
        ),
        transaction(1, "<IBAN>DE89370400440532013001</IBAN>", ""),
        transaction(2, "<IBAN>DE8937040044053201300</IBAN>", ""),
        transaction(
            3,
            &format!("<IBAN>{good}</IBAN>"),
            "<CdtrAgt><FinInstnId><BICFI>ABCDEFGHIJ</BICFI></FinInstnId></CdtrAgt>",
        ),
        // An account that is not an IBAN is not checked as one.
        transaction(4, "<Othr><Id>DE89370400440532013001</Id></Othr>", ""),
    ]
    .concat();
    let xml = format!(
        "<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.001.001.10\"><CstmrCdtTrfInitn>\
         <GrpHdr><MsgId>M</MsgId><NbOfTxs>5</NbOfTxs><CtrlSum>5.00</CtrlSum></GrpHdr>\
         <PmtInf><PmtInfId>P</PmtInfId><ReqdExctnDt><Dt>2024-02-29</Dt></ReqdExctnDt>\
         <DbtrAcct><Id><IBAN>DE02100100109307118603</IBAN></Id></DbtrAcct>{body}</PmtInf></CstmrCdtTrfInitn></Document>"
    );
    let outcome = parse_text(Format::Pain001, &xml, &ParseOptions::default());
    assert_eq!(outcome.control_messages(), Vec::<String>::new());
    assert_eq!(outcome.summary().variant.as_deref(), Some("pain.001.001.10"));
    assert_eq!(outcome.codes(), vec!["invalid_iban", "invalid_iban", "invalid_bic"]);
    let messages: Vec<&str> = outcome.diagnostics.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        messages,
        vec![
            "CdtrAcct/Id/IBAN \"DE89370400440532013001\" fails its check digits (ISO 7064 mod 97 gives 28, not 1): a character is wrong or two are swapped",
            "CdtrAcct/Id/IBAN \"DE8937040044053201300\" has 21 characters, but DE IBANs have 22",
            "CdtrAgt/FinInstnId/BICFI \"ABCDEFGHIJ\" is not a BIC: expected 8 or 11 letters and digits, the 5th and 6th a country code, such as DEUTDEFF or DEUTDEFF500",
        ]
    );
    let fields: Vec<_> = outcome.diagnostics.iter().map(|d| d.field.as_deref()).collect();
    assert_eq!(fields, vec![Some("IBAN"), Some("IBAN"), Some("BICFI")]);
    assert_eq!(
        outcome.items.iter().map(|i| i.payee.as_str()).collect::<Vec<_>>(),
        vec![good.as_str(), "DE89370400440532013001"]
    );
    // The pain.002 report answers them with the ISO reasons.
    assert_eq!(paycore_formats::iso_reason("invalid_iban"), "AC01");
    assert_eq!(paycore_formats::iso_reason("invalid_bic"), "RC01");
}

/// A minimal pain.001.001.09 with one block and the given (amount, currency) transactions.
fn pain001_with_amounts(amounts: &[(&str, &str)], count: &str, sum: &str) -> String {
    let mut xml = format!(
        "<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.001.001.09\"><CstmrCdtTrfInitn>\
         <GrpHdr><MsgId>M</MsgId><NbOfTxs>{count}</NbOfTxs><CtrlSum>{sum}</CtrlSum></GrpHdr>\
         <PmtInf><PmtInfId>P</PmtInfId><ReqdExctnDt><Dt>2024-02-29</Dt></ReqdExctnDt>\
         <DbtrAcct><Id><IBAN>DE00PAYER</IBAN></Id></DbtrAcct>"
    );
    for (i, (amount, code)) in amounts.iter().enumerate() {
        xml.push_str(&format!(
            "\n<CdtTrfTxInf><PmtId><EndToEndId>E{i}</EndToEndId></PmtId><Amt><InstdAmt Ccy=\"{code}\">{amount}</InstdAmt></Amt>\
             <CdtrAcct><Id><IBAN>{}</IBAN></Id></CdtrAcct></CdtTrfTxInf>",
            iban("DE", &format!("{:018}", 370_400_440_532_013_000u64 + i as u64))
        ));
    }
    xml.push_str("</PmtInf></CstmrCdtTrfInitn></Document>");
    xml
}

#[test]
fn nacha_structure_errors() {
    let fatal = |text: &str| parse_text(Format::Nacha, text, &funding()).fatal();
    assert_eq!(fatal(""), "line 1: the file is empty; expected a file header (1) record");
    let header = "101 03130001202313801041908161055A094101Federal Reserve Bank   My Bank Name           12345678";
    assert_eq!(fatal(header), "line 1: the file ends without a file control (9) record");
    // A short record is padded with blanks: this one is then an entry outside any batch.
    assert_eq!(
        fatal(&format!("{header}\n6")),
        "line 2: an entry detail record outside a batch (no batch header before it)"
    );
    assert!(fatal(&format!("{}\n", "5".repeat(94))).contains("expected the file header"));
}

/// Produces a CSV of `rows` lines on the fly, so the test itself holds no file in memory.
struct GeneratedCsv {
    rows: u64,
    next: u64,
    pending: Vec<u8>,
}

impl std::io::Read for GeneratedCsv {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pending.is_empty() {
            if self.next > self.rows {
                return Ok(0);
            }
            self.pending = if self.next == 0 {
                b"payee,amount,currency,reference\n".to_vec()
            } else {
                format!("DE{:020},{}.{:02},EUR,R{}\n", self.next, self.next % 1000, self.next % 100, self.next)
                    .into_bytes()
            };
            self.next += 1;
        }
        let n = out.len().min(self.pending.len());
        out[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

#[test]
fn a_large_csv_streams_through_a_counting_sink() {
    let rows = 200_000;
    let input = std::io::BufReader::new(GeneratedCsv { rows, next: 0, pending: Vec::new() });
    let (mut count, mut last_line, mut zero_lines) = (0u64, 0u64, Vec::new());
    let summary = paycore_formats::parse(Format::Csv, input, &ParseOptions::default(), &mut |record| match record {
        Ok(item) => {
            count += 1;
            last_line = item.line;
        }
        Err(diagnostic) if diagnostic.code == "amount_not_positive" => zero_lines.push(diagnostic.line),
        Err(diagnostic) => panic!("{diagnostic}"),
    });
    // Rows where next % 1000 == 0 and next % 100 == 0 have amount 0.00: those are invalid.
    let summary = summary.unwrap();
    let zero_rows = rows / 1000;
    assert_eq!(summary.items, rows - zero_rows);
    assert_eq!(summary.invalid, zero_rows);
    let expected: u128 = (1..=rows).map(|n| u128::from((n % 1000) * 100 + n % 100)).sum();
    assert_eq!(summary.totals, vec![(currency("EUR"), expected)]);
    // The last row (200 000) has amount 0.00, so the last valid one is row 199 999, on line 200 000.
    assert_eq!((count, last_line), (rows - zero_rows, rows));
    assert_eq!(zero_lines.first(), Some(&1001));
}
