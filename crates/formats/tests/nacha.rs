//! NACHA files: the fixtures copied from moov-io/ach (see fixtures/SOURCES.md), each with its
//! exact outcome, and files built here to pin one rule each.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use paycore_formats::{
    change_addenda, return_addenda, write_nacha_returns, Adjustment, ChangeAddenda, Format, ReturnAddenda,
    ReturnFileDate,
};

fn fixture(name: &str) -> Outcome {
    let path = format!("{}/tests/fixtures/nacha/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    parse_with(Format::Nacha, bytes.as_slice(), &funding())
}

/// (line, code) of every diagnostic.
fn lines_and_codes(outcome: &Outcome) -> Vec<(u64, &'static str)> {
    outcome.diagnostics.iter().map(|d| (d.line, d.code)).collect()
}

// ---------------------------------------------------------------- fixtures: SEC codes that pay

/// (file, the receiving account, amount in cents, credit?) for the one entry of each file.
const ONE_ENTRY_FILES: &[(&str, &str, u64, bool)] = &[
    ("web-credit.ach", "23138010412345678", 10_000, true),
    ("tel-debit.ach", "23138010412345678", 50_000, false),
    ("ctx-debit.ach", "23138010412345678", 100_000_000, false),
    ("pop-debit.ach", "23138010412345678", 250_500, false),
    ("boc-debit.ach", "23138010412345678", 250_000, false),
    ("arc-debit.ach", "23138010412345678", 250_000, false),
    ("rck-debit.ach", "23138010412345678", 2_400, false),
    ("cie-credit.ach", "23138010412345678", 100_000_000, true),
    // An entry line with four blanks past column 94: trimmed.
    ("long-line.ach", "23138010412345678", 100_000_000, false),
];

#[test]
fn every_money_moving_sec_code_pays_its_entry() {
    for &(file, receiver, cents, credit) in ONE_ENTRY_FILES {
        let outcome = fixture(file);
        assert_eq!(outcome.control_messages(), Vec::<String>::new(), "{file}");
        assert_eq!(outcome.codes(), Vec::<&str>::new(), "{file}");
        assert_eq!(outcome.items.len(), 1, "{file}");
        let item = &outcome.items[0];
        let (payer, payee) = if credit { ("acct_funding", receiver) } else { (receiver, "acct_funding") };
        assert_eq!((item.payer.as_deref(), item.payee.as_str()), (Some(payer), payee), "{file}");
        assert_eq!((item.amount.get(), item.line), (cents, 3), "{file}");
        assert_eq!(item.reference.as_deref(), Some("121042880000001"), "{file}");
        assert_eq!(outcome.totals(), vec![("USD", u128::from(cents))], "{file}");
    }
}

#[test]
fn a_tel_reversal_credits_and_debits() {
    // NACHA's TEL reversal sample: a batch described REVERSAL, a credit and a debit of $6,851.00.
    let outcome = fixture("NACHA_SAMPLE_TEL_REVERSAL.ach");
    assert_eq!(outcome.control_messages(), Vec::<String>::new());
    assert_eq!(outcome.codes(), Vec::<&str>::new());
    let items: Vec<_> =
        outcome.items.iter().map(|i| (i.line, i.payer.as_deref(), i.payee.as_str(), i.amount.get())).collect();
    assert_eq!(
        items,
        vec![(3, Some("acct_funding"), "0260095931234", 685_100), (4, Some("02600959311"), "acct_funding", 685_100),]
    );
}

#[test]
fn a_file_without_line_ends_is_split_into_94_character_records() {
    let outcome = fixture("ppd-debit-fixedLength.ach");
    assert_eq!(outcome.control_messages(), Vec::<String>::new());
    assert_eq!(outcome.codes(), Vec::<&str>::new());
    assert_eq!(outcome.items.len(), 1);
    let item = &outcome.items[0];
    assert_eq!((item.line, item.payer.as_deref(), item.payee.as_str()), (3, Some("05320001912345"), "acct_funding"));
    assert_eq!((item.amount.get(), item.reference.as_deref()), (10_500, Some("076401255655291")));
}

// ---------------------------------------------------------------- fixtures: never paid

#[test]
fn returns_are_never_paid_as_new_entries() {
    let outcome = fixture("return-WEB.ach");
    assert_eq!(outcome.control_messages(), Vec::<String>::new());
    assert!(outcome.items.is_empty());
    assert_eq!(lines_and_codes(&outcome), vec![(3, "return_entry_not_matched"), (7, "return_entry_not_matched")]);
    assert_eq!(
        outcome.diagnostics[0].message,
        "the entry is a return (Addenda 99, reason R01) of the entry with trace number 091400600000001 sent to RDFI 09100001; a return is never paid as a new entry, and no paid item of this file matches it"
    );
    assert!(outcome.diagnostics[1].message.contains("reason R03"), "{}", outcome.diagnostics[1].message);
    assert_eq!(outcome.diagnostics[0].field.as_deref(), Some("Addenda 99"));

    for (file, reason, lines) in [
        ("return-PPD-custom-reason-code.ach", "R97", vec![3]),
        ("contested-return.ach", "R71", vec![3]),
        ("dishonored-return.ach", "R68", vec![3, 5]),
    ] {
        let outcome = fixture(file);
        assert_eq!(outcome.control_messages(), Vec::<String>::new(), "{file}");
        assert!(outcome.items.is_empty(), "{file}");
        assert_eq!(outcome.diagnostics.iter().map(|d| d.line).collect::<Vec<_>>(), lines, "{file}");
        for d in &outcome.diagnostics {
            assert_eq!(d.code, "return_entry_not_matched", "{file}");
            assert!(d.message.contains(&format!("reason {reason}")), "{file}: {}", d.message);
        }
    }
}

/// A return's and a notification's diagnostic carry what matching them to their original
/// needs: the addenda, the return's amount, and the entry's own trace number.
#[test]
fn returns_and_notifications_carry_their_addenda_for_matching() {
    let outcome = fixture("return-WEB.ach");
    let Some(adjustment) = outcome.diagnostics[0].adjustment.as_deref() else { panic!("no adjustment") };
    let Adjustment::Return { addenda, amount, trace } = adjustment else { panic!("{adjustment:?}") };
    assert_eq!((addenda.reason_code.as_str(), addenda.original_trace.as_str()), ("R01", "091400600000001"));
    assert_eq!((adjustment.original_trace(), adjustment.original_rdfi()), ("091400600000001", "09100001"));
    assert_eq!((*amount, trace.as_str()), (12_354, "091000017611242"));
    let outcome = fixture("cor-read.ach");
    let Some(Adjustment::Change { addenda, .. }) = outcome.diagnostics[0].adjustment.as_deref() else {
        panic!("{:?}", outcome.diagnostics[0])
    };
    assert_eq!((addenda.change_code.as_str(), addenda.corrected_data.as_str()), ("C01", "1918171614"));
    // Nothing else carries one.
    let outcome = fixture("web-credit.ach");
    assert!(outcome.diagnostics.iter().all(|d| d.adjustment.is_none()));
}

#[test]
fn notifications_of_change_move_no_money() {
    let outcome = fixture("cor-read.ach");
    assert_eq!(outcome.control_messages(), Vec::<String>::new());
    assert!(outcome.items.is_empty());
    assert_eq!(lines_and_codes(&outcome), vec![(3, "notification_of_change")]);
    assert_eq!(
        outcome.diagnostics[0].message,
        "the entry is a notification of change (Addenda 98, change code C01, corrected data \"1918171614\") for the entry with trace number 121042880000001 sent to RDFI 12104288; it moves no money"
    );
}

#[test]
fn unsupported_sec_codes_are_named_never_a_control_total_mismatch() {
    for (file, sec, lines) in [("adv-read.ach", "ADV", vec![3, 4]), ("pos-debit.ach", "POS", vec![3])] {
        let outcome = fixture(file);
        // ADV control records are read in their own layout: their totals match.
        assert_eq!(outcome.control_messages(), Vec::<String>::new(), "{file}");
        assert!(outcome.items.is_empty(), "{file}");
        assert_eq!(outcome.diagnostics.iter().map(|d| d.line).collect::<Vec<_>>(), lines, "{file}");
        for d in &outcome.diagnostics {
            assert_eq!(d.code, "unsupported_sec_code", "{file}");
            assert!(
                d.message.starts_with(&format!(
                    "the entry is in a batch (header at line 2) with Standard Entry Class Code \"{sec}\", which is not supported"
                )),
                "{file}: {}",
                d.message
            );
        }
    }
}

// ---------------------------------------------------------------- IAT

#[test]
fn iat_entries_are_paid_with_their_seven_mandatory_addenda() {
    // A debit and a credit, each with addenda 10 to 16 and the optional 17 and 18.
    let outcome = fixture("iat-mixedCreditDebit.ach");
    assert_eq!(outcome.control_messages(), Vec::<String>::new());
    assert_eq!(outcome.codes(), Vec::<&str>::new());
    let items: Vec<_> = outcome
        .items
        .iter()
        .map(|i| (i.line, i.payer.as_deref(), i.payee.as_str(), i.amount.get(), i.reference.as_deref()))
        .collect();
    assert_eq!(
        items,
        vec![
            (3, Some("121042882123456789"), "acct_funding", 100_000, Some("231380100000001")),
            (13, Some("acct_funding"), "121042882123456789", 100_000, Some("231380100000002")),
        ]
    );
}

#[test]
fn iat_rules() {
    let path = format!("{}/tests/fixtures/nacha/iat-mixedCreditDebit.ach", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    // Without its addenda 16, 17 and 18 (lines 10 to 12), the first entry lacks a mandatory
    // addenda; with only 16 gone, the 17 would be out of order.
    let without_16: String =
        text.lines().enumerate().filter(|(i, _)| !(9..=11).contains(i)).map(|(_, l)| format!("{l}\n")).collect();
    let outcome = parse_file(&without_16);
    assert_eq!(lines_and_codes(&outcome), vec![(3, "invalid_addenda")]);
    assert_eq!(
        outcome.diagnostics[0].message,
        "the IAT entry lacks its mandatory addenda 16; every IAT entry carries addenda 10 to 16"
    );
    // Addenda 11 and 12 swapped: out of order.
    let lines: Vec<&str> = text.lines().collect();
    let mut swapped = lines.clone();
    swapped.swap(4, 5);
    let outcome = parse_file(&(swapped.join("\n") + "\n"));
    assert_eq!(lines_and_codes(&outcome), vec![(3, "invalid_addenda")]);
    assert!(outcome.diagnostics[0]
        .message
        .starts_with("the addenda at line 5 has Addenda Type Code \"12\" where the IAT entry needs 11"));
    // A Foreign Exchange Indicator that is not FV, VF or FF, and an unknown currency.
    let outcome = parse_file(&text.replacen("FF3", "XX3", 1));
    assert_eq!(lines_and_codes(&outcome), vec![(3, "invalid_iat_header"), (13, "invalid_iat_header")]);
    assert_eq!(outcome.diagnostics[0].message, "Foreign Exchange Indicator is \"XX\"; expected FV, VF or FF");
    let outcome = parse_file(&text.replacen("TRADEPAYMTCADUSD", "TRADEPAYMTCAXUSD", 1));
    assert_eq!(
        outcome.diagnostics[0].message,
        "ISO Originating Currency Code is \"CAX\"; expected an ISO 4217 currency code such as USD"
    );
}

// ---------------------------------------------------------------- addenda readers

#[test]
fn return_and_change_addenda_keep_what_matching_needs() {
    let record = "799R01091400600000001      09100001                                            091000017611242";
    assert_eq!(
        return_addenda(record),
        Some(ReturnAddenda {
            reason_code: "R01".to_owned(),
            original_trace: "091400600000001".to_owned(),
            original_rdfi: "09100001".to_owned(),
            information: String::new(),
        })
    );
    assert_eq!(change_addenda(record), None);
    let noc = "798C01121042880000001      121042881918171614                                  091012980000088";
    assert_eq!(
        change_addenda(noc),
        Some(ChangeAddenda {
            change_code: "C01".to_owned(),
            original_trace: "121042880000001".to_owned(),
            original_rdfi: "12104288".to_owned(),
            corrected_data: "1918171614".to_owned(),
        })
    );
    assert_eq!(return_addenda(noc), None);
    assert_eq!(return_addenda("799R01"), None);
}

// ---------------------------------------------------------------- built files

const HEADER: &str = "101 03130001202313801041908161055A094101Federal Reserve Bank   My Bank Name           12345678";
const ODFI: &str = "12104288";

fn pad(text: &str) -> String {
    assert!(text.len() <= 94, "{text:?} is {} characters", text.len());
    format!("{text:<94}")
}

/// An entry detail record: transaction code, 9-digit RDFI, account, cents, addenda
/// indicator, trace number.
fn entry(code: &str, rdfi: &str, account: &str, cents: u64, indicator: u8, trace: &str) -> String {
    let record =
        format!("6{code}{rdfi}{account:<17}{cents:010}{:<15}{:<22}  {indicator}{trace}", "ID", "Receiver Name");
    assert_eq!(record.len(), 94, "{record:?}");
    record
}

/// A file of one batch, with correct control records.
fn file_of(sec: &str, service_class: &str, records: &[String]) -> String {
    let mut lines = vec![HEADER.to_owned()];
    lines.push(pad(&format!(
        "5{service_class}{:<16}{:<20}{:<10}{sec}{:<10}{:<6}190816   1{ODFI}0000001",
        "Company", "", "1234567890", "PAYMENT", ""
    )));
    let (mut count, mut hash, mut debit, mut credit) = (0u64, 0u64, 0u64, 0u64);
    for record in records {
        count += 1;
        if record.starts_with('6') {
            hash += record[3..11].parse::<u64>().unwrap();
            let cents: u64 = record[29..39].parse().unwrap();
            if matches!(&record[2..3], "0" | "1" | "2" | "3" | "4") {
                credit += cents;
            } else {
                debit += cents;
            }
        }
        lines.push(record.clone());
    }
    lines.push(pad(&format!(
        "8{service_class}{count:06}{hash:010}{debit:012}{credit:012}{:<10}{:<25}{ODFI}0000001",
        "1234567890", ""
    )));
    let blocks = (lines.len() as u64 + 1).div_ceil(10);
    lines.push(pad(&format!("9000001{blocks:06}{count:08}{hash:010}{debit:012}{credit:012}")));
    lines.join("\n") + "\n"
}

fn parse_file(text: &str) -> Outcome {
    parse_text(Format::Nacha, text, &funding())
}

fn trace(n: u32) -> String {
    format!("{ODFI}{n:07}")
}

#[test]
fn a_return_entry_with_a_credit_code_is_still_not_paid() {
    // The file that moved $1,000,000: a credit (22) carrying an Addenda 99.
    let addenda = pad(&format!("799R01{}      23138010{:<44}{}", trace(9), "", trace(1)));
    let text = file_of("PPD", "200", &[entry("22", "231380104", "123456789", 100_000_000, 1, &trace(1)), addenda]);
    let outcome = parse_file(&text);
    assert_eq!(outcome.control_messages(), Vec::<String>::new());
    assert!(outcome.items.is_empty());
    assert_eq!(lines_and_codes(&outcome), vec![(3, "return_entry_not_matched")]);
    assert!(outcome.diagnostics[0].message.contains("trace number 121042880000009 sent to RDFI 23138010"));
}

#[test]
fn only_prenotes_may_be_zero_and_every_skipped_entry_is_reported() {
    let text = file_of(
        "PPD",
        "200",
        &[
            entry("22", "231380104", "111", 0, 0, &trace(1)),
            entry("23", "231380104", "222", 0, 0, &trace(2)),
            entry("38", "231380104", "333", 0, 0, &trace(3)),
            entry("24", "231380104", "444", 0, 0, &trace(4)),
            entry("28", "231380104", "555", 100, 0, &trace(5)),
            entry("27", "231380104", "666", 1234, 0, &trace(6)),
        ],
    );
    let outcome = parse_file(&text);
    assert_eq!(outcome.control_messages(), Vec::<String>::new());
    assert_eq!(
        lines_and_codes(&outcome),
        vec![(3, "zero_amount"), (4, "prenote"), (5, "prenote"), (6, "zero_dollar_entry"), (7, "invalid_amount")]
    );
    assert_eq!(
        outcome.diagnostics[0].message,
        "Amount is zero, but Transaction Code 22 moves money; only prenotes may be zero"
    );
    assert_eq!(outcome.items.len(), 1);
    assert_eq!((outcome.items[0].line, outcome.items[0].index, outcome.items[0].amount.get()), (8, 5, 1234));
    let summary = outcome.summary();
    assert_eq!((summary.items, summary.invalid, summary.skipped), (1, 2, 3));
    assert!(paycore_formats::is_skipped("prenote") && paycore_formats::is_skipped("zero_dollar_entry"));
    assert!(!paycore_formats::is_skipped("zero_amount"));
}

#[test]
fn a_bad_service_class_code_is_its_own_error() {
    let text = file_of("PPD", "123", &[entry("22", "231380104", "111", 500, 0, &trace(1))]);
    let outcome = parse_file(&text);
    let errors = &outcome.summary().control_errors;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!((errors[0].line, errors[0].code), (2, "invalid_service_class_code"));
    assert_eq!(
        errors[0].message,
        "batch 1 Service Class Code is \"123\"; expected 200 (mixed), 220 (credits), 225 (debits) or 280 (ADV)"
    );
}

#[test]
fn trace_numbers_begin_with_the_batch_odfi() {
    let text = file_of("PPD", "200", &[entry("22", "231380104", "111", 500, 0, "987654320000001")]);
    let outcome = parse_file(&text);
    assert_eq!(lines_and_codes(&outcome), vec![(3, "invalid_trace_number")]);
    assert_eq!(
        outcome.diagnostics[0].message,
        "Trace Number \"987654320000001\" must be 15 digits beginning with the batch's ODFI \"12104288\" (Originating DFI Identification of the batch header)"
    );
}

#[test]
fn addenda_counts_and_sec_rules() {
    let addenda = |n: u32| pad(&format!("705{:<80}{n:04}{:07}", "remittance", 1));
    // CTX: the entry's Number of Addenda Records (positions 55-58) counts its 05 addenda.
    let ctx_entry = |declared: &str| {
        let mut record = entry("27", "231380104", "111", 700, 1, &trace(1));
        record.replace_range(54..58, declared);
        record
    };
    let outcome = parse_file(&file_of("CTX", "225", &[ctx_entry("0002"), addenda(1), addenda(2)]));
    assert_eq!((outcome.codes(), outcome.items.len()), (vec![], 1));
    let outcome = parse_file(&file_of("CTX", "225", &[ctx_entry("0003"), addenda(1), addenda(2)]));
    assert_eq!(lines_and_codes(&outcome), vec![(3, "addenda_count_mismatch")]);
    assert_eq!(
        outcome.diagnostics[0].message,
        "Number of Addenda Records is \"0003\" but 2 addenda records follow the entry"
    );
    // PPD: the Addenda Record Indicator says whether one follows.
    let outcome = parse_file(&file_of("PPD", "200", &[entry("22", "231380104", "111", 500, 0, &trace(1)), addenda(1)]));
    assert_eq!(lines_and_codes(&outcome), vec![(3, "addenda_count_mismatch")]);
    // TEL is debits only, CIE credits only.
    let outcome = parse_file(&file_of("TEL", "200", &[entry("22", "231380104", "111", 500, 0, &trace(1))]));
    assert_eq!(lines_and_codes(&outcome), vec![(3, "invalid_transaction_code")]);
    assert_eq!(
        outcome.diagnostics[0].message,
        "Transaction Code 22 is a credit, but TEL entries can only debit the receiver"
    );
    let outcome = parse_file(&file_of("CIE", "200", &[entry("27", "231380104", "111", 500, 0, &trace(1))]));
    assert_eq!(lines_and_codes(&outcome), vec![(3, "invalid_transaction_code")]);
    // A batch whose Company Entry Description is REVERSAL reverses earlier entries: a TEL
    // reversal credits.
    let reversal = file_of("TEL", "200", &[entry("22", "231380104", "111", 500, 0, &trace(1))]).replacen(
        "PAYMENT   ",
        "REVERSAL  ",
        1,
    );
    let outcome = parse_file(&reversal);
    assert_eq!((outcome.codes(), outcome.items.len()), (vec![], 1));
    // A Service Class Code of 220 admits only credits, 225 only debits.
    let outcome = parse_file(&file_of("PPD", "220", &[entry("27", "231380104", "111", 500, 0, &trace(1))]));
    assert_eq!(lines_and_codes(&outcome), vec![(3, "invalid_transaction_code")]);
    assert_eq!(
        outcome.diagnostics[0].message,
        "Transaction Code 27 is a debit, but the batch's Service Class Code 220 admits only credits"
    );
    let outcome = parse_file(&file_of("PPD", "225", &[entry("22", "231380104", "111", 500, 0, &trace(1))]));
    assert_eq!(lines_and_codes(&outcome), vec![(3, "invalid_transaction_code")]);
    // A return transaction code without its addenda.
    let outcome = parse_file(&file_of("PPD", "200", &[entry("21", "231380104", "111", 500, 0, &trace(1))]));
    assert_eq!(lines_and_codes(&outcome), vec![(3, "invalid_transaction_code")]);
}

#[test]
fn routing_numbers_are_checked_in_the_file_header() {
    let good = file_of("PPD", "200", &[entry("22", "231380104", "111", 500, 0, &trace(1))]);
    assert_eq!(parse_file(&good).items.len(), 1);
    // Immediate Destination " 031300012" with its check digit changed.
    let bad = good.replacen(" 031300012", " 031300013", 1);
    assert_eq!(
        parse_file(&bad).fatal(),
        "line 1: file header Immediate Destination is the routing number 031300013, whose check digit should be 2 (ABA weights 3, 7, 1 on its first 8 digits)"
    );
    // Immediate Origin "0231380104" is a company id (ten characters): not a routing number.
    // As " 231380105" it is one, with a wrong check digit.
    let bad = good.replacen("0231380104190816", " 231380105190816", 1);
    let message = parse_file(&bad).fatal();
    assert!(message.starts_with("line 1: file header Immediate Origin is the routing number 231380105"), "{message}");
    let bad = good.replacen("231380104111", "231380105111", 1);
    assert_eq!(lines_and_codes(&parse_file(&bad)), vec![(3, "invalid_routing_number")]);
}

#[test]
fn block_count_says_what_was_counted() {
    let good = file_of("PPD", "200", &[entry("22", "231380104", "111", 500, 0, &trace(1))]);
    let bad = good.replacen("9000001000001", "9000001000002", 1);
    assert_eq!(
        parse_file(&bad).control_messages(),
        vec!["file control Block Count is 2 but the file's 5 records (not counting the 9-padding) fill 1 block of 10 records"]
    );
}

#[test]
fn one_record_length_rule() {
    let records: Vec<String> =
        vec![entry("22", "231380104", "111", 500, 0, &trace(1)), entry("27", "231380104", "222", 700, 0, &trace(2))];
    let good = file_of("PPD", "200", &records);
    let expected = parse_file(&good);
    assert_eq!(expected.items.len(), 2);
    let items = |o: &Outcome| o.items.iter().map(|i| (i.line, i.amount.get(), i.payee.clone())).collect::<Vec<_>>();
    let same = |text: &str, what: &str| {
        let outcome = parse_file(text);
        assert_eq!(outcome.control_messages(), Vec::<String>::new(), "{what}");
        assert_eq!(outcome.codes(), Vec::<&str>::new(), "{what}");
        assert_eq!(items(&outcome), items(&expected), "{what}");
    };
    let map = |f: &dyn Fn(&str) -> String| good.lines().map(f).collect::<Vec<_>>().join("\n");
    same(&map(&|l| l.trim_end().to_owned()), "trailing blanks trimmed");
    for width in [60, 74, 80] {
        // Each record padded to `width` when its text is shorter: the shortfall is blank.
        same(&map(&|l| format!("{:<width$}", l.trim_end())), &format!("padded to {width}"));
    }
    same(&map(&|l| format!("{l}      ")), "blanks past column 94");
    same(&good.replace('\n', "\r\n"), "CRLF");
    same(&format!("{good}\n   \n\n"), "blank lines at the end");
    same(&good.replace('\n', ""), "no line ends");
    same(&good.trim_end_matches('\n').replace('\n', ""), "no line ends, no final newline");

    let extra = good.replacen(&records[0], &format!("{}X", records[0]), 1);
    assert_eq!(
        parse_file(&extra).fatal(),
        "line 3 is 95 characters long, but NACHA records are 94 characters (a shorter record is padded with blanks, a longer one may only have blanks past column 94)"
    );
    let unterminated = format!("{}12345", good.replace('\n', ""));
    assert_eq!(
        parse_file(&unterminated).fatal(),
        "line 7: the file has no line ends, so it is read as back-to-back records of 94 characters, but its last record is 5 characters long"
    );
}

#[test]
fn the_outcome_does_not_depend_on_the_buffer_size() {
    let dir = format!("{}/tests/fixtures/nacha", env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let whole = parse_with(Format::Nacha, bytes.as_slice(), &funding());
        let small = parse_with(Format::Nacha, std::io::BufReader::with_capacity(7, bytes.as_slice()), &funding());
        assert_eq!(whole.items, small.items, "{}", path.display());
        assert_eq!(whole.diagnostics, small.diagnostics, "{}", path.display());
        assert_eq!(whole.summary(), small.summary(), "{}", path.display());
    }
}

// ---------------------------------------------------------------- return files out

/// The return file of `original` for the entries at `lines` (with their R-codes), and what
/// paycore's own parser makes of it.
fn returned(original: &str, lines: &[(u64, &str)]) -> (String, Outcome) {
    let returns: std::collections::BTreeMap<u64, &str> = lines.iter().copied().collect();
    let made = ReturnFileDate { date: "261205".to_owned(), time: "0730".to_owned() };
    let out = write_nacha_returns(original.as_bytes(), &returns, &made, Vec::new()).unwrap();
    let text = String::from_utf8(out).unwrap();
    let outcome = parse_file(&text);
    (text, outcome)
}

#[test]
fn a_return_file_reads_back_cleanly_as_returns_never_paid() {
    let path = format!("{}/tests/fixtures/nacha/web-credit.ach", env!("CARGO_MANIFEST_DIR"));
    let original = std::fs::read_to_string(path).unwrap();
    let (text, outcome) = returned(&original, &[(3, "R01")]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10, "{text}");
    assert!(lines.iter().all(|l| l.len() == 94), "{text}");
    // From paycore (the original's destination) back to the original batch's ODFI.
    assert_eq!(&lines[0][..23], "101 121042882 031300012");
    assert_eq!(&lines[0][23..33], "2612050730");
    // The return of a credit (22) is a 21 to the ODFI, for the same account and amount, with an
    // Addenda 99 naming R01, the original trace number and the original RDFI.
    assert_eq!(&lines[2][..39], "62112104288212345678         0000010000");
    assert_eq!(&lines[3][..35], "799R01121042880000001      23138010");
    assert!(outcome.result.is_ok(), "{:?}", outcome.result.as_ref().err());
    assert_eq!(outcome.control_messages(), Vec::<String>::new());
    assert!(outcome.items.is_empty(), "a return is never paid");
    assert_eq!(lines_and_codes(&outcome), vec![(3, "return_entry_not_matched")]);
    assert!(outcome.diagnostics[0].message.contains("reason R01"), "{}", outcome.diagnostics[0].message);
    assert!(
        outcome.diagnostics[0].message.contains("trace number 121042880000001"),
        "{}",
        outcome.diagnostics[0].message
    );

    // Nothing to return: a file of no batch that still reads back.
    let (text, outcome) = returned(&original, &[]);
    assert_eq!(text.lines().count(), 10, "{text}");
    assert_eq!(outcome.control_messages(), Vec::<String>::new());
    assert!(outcome.items.is_empty() && outcome.diagnostics.is_empty());
}

#[test]
fn a_return_file_of_several_entries_balances() {
    // Two credits and a debit in one PPD batch; the first credit and the debit are returned.
    let text = file_of(
        "PPD",
        "200",
        &[
            entry("22", "231380104", "111", 1_000, 0, &trace(1)),
            entry("32", "231380104", "222", 2_500, 0, &trace(2)),
            entry("27", "231380104", "333", 700, 0, &trace(3)),
        ],
    );
    assert_eq!(parse_file(&text).items.len(), 3);
    let (out, outcome) = returned(&text, &[(3, "R03"), (5, "R01")]);
    assert_eq!(outcome.control_messages(), Vec::<String>::new(), "{out}");
    assert!(outcome.items.is_empty());
    assert_eq!(lines_and_codes(&outcome), vec![(3, "return_entry_not_matched"), (5, "return_entry_not_matched")]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!((&lines[2][..3], &lines[4][..3]), ("621", "626"));
    assert_eq!((&lines[3][3..6], &lines[5][3..6]), ("R03", "R01"));
    // Batch control: 4 records, one credit of 10.00 and one debit of 7.00.
    assert_eq!(&lines[6][..44], "82000000040024208576000000000700000000001000");
}
