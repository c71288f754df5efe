//! Every file in ../shared/samples: valid ones give exact items and totals, INVALID- ones are
//! rejected for the reason SOURCES.md gives.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use paycore_formats::Format;
use std::io::Read;

// ---------------------------------------------------------------- CSV

#[test]
fn csv2sepa_one_row_without_currency_column_uses_the_default() {
    let outcome = parse_sample(Format::Csv, "csv/csv2sepa-transactions-template_1row.csv", &eur_options());
    assert_eq!(outcome.codes(), Vec::<&str>::new());
    assert_eq!(outcome.items.len(), 1);
    let item = &outcome.items[0];
    assert_eq!((item.line, item.payee.as_str(), item.amount.get()), (2, "DE43100500000920018963", 2550));
    assert_eq!(outcome.totals(), vec![("EUR", 2550)]);
}

#[test]
fn csv2sepa_without_a_default_currency_names_the_missing_currency() {
    let outcome = parse_sample(Format::Csv, "csv/csv2sepa-transactions-template_1row.csv", &Default::default());
    assert_eq!(outcome.codes(), vec!["missing_field"]);
    assert_eq!(outcome.diagnostics[0].field.as_deref(), Some("currency"));
    assert_eq!(outcome.diagnostics[0].line, 2);
}

#[test]
fn pain001_template_csv_03() {
    let outcome = parse_sample(Format::Csv, "csv/pain001-template_pain.001.001.03_4rows.csv", &Default::default());
    assert_eq!(outcome.codes(), Vec::<&str>::new());
    let amounts: Vec<u64> = outcome.items.iter().map(|i| i.amount.get()).collect();
    assert_eq!(amounts, vec![15000, 30000, 25000, 20000]);
    assert_eq!(outcome.totals(), vec![("EUR", 90000)]);
    let first = &outcome.items[0];
    assert_eq!(first.payer.as_deref(), Some("DE75512108001245126162"));
    assert_eq!(first.payee, "DE68210501700024690959");
    assert_eq!(first.reference.as_deref(), Some("PaymentID6789"));
    assert_eq!((first.index, first.line, first.location.as_str()), (0, 2, "line 2"));
}

#[test]
fn pain001_template_csv_09() {
    let outcome = parse_sample(Format::Csv, "csv/pain001-template_pain.001.001.09_5rows.csv", &Default::default());
    assert_eq!(outcome.codes(), Vec::<&str>::new());
    assert_eq!(outcome.items.len(), 5);
    assert_eq!(outcome.totals(), vec![("EUR", 110000)]);
    assert_eq!(outcome.items[4].reference.as_deref(), Some("PaymentID4815"));
}

// ---------------------------------------------------------------- pain.001, valid

struct Expected {
    file: &'static str,
    variant: &'static str,
    message_id: &'static str,
    items: usize,
    totals: &'static [(&'static str, u128)],
}

const VALID_PAIN001: &[Expected] = &[
    Expected {
        file: "pain.001.001.03.ch.02_sepaking_3tx_CHF-EUR.xml",
        variant: "pain.001.001.03.ch.02",
        message_id: "MSG-01",
        items: 3,
        totals: &[("CHF", 1242900), ("EUR", 342100)],
    },
    Expected {
        file: "pain.001.001.03_abnamro-example_1tx_EUR.xml",
        variant: "pain.001.001.03",
        message_id: "000001",
        items: 1,
        totals: &[("EUR", 38600)],
    },
    Expected {
        file: "pain.001.001.03_lt-international_1tx_USD.xml",
        variant: "pain.001.001.03",
        message_id: "MSGID0002",
        items: 1,
        totals: &[("USD", 11111)],
    },
    Expected {
        file: "pain.001.001.03_sepaking_DK-sample_2tx_EUR.xml",
        variant: "pain.001.001.03",
        message_id: "Message-ID-4711",
        items: 2,
        totals: &[("EUR", 665586)],
    },
    Expected {
        file: "pain.001.001.09_phpsepaxml_1tx_EUR_uetr.xml",
        variant: "pain.001.001.09",
        message_id: "OurMessageIdentification",
        items: 1,
        totals: &[("EUR", 1234)],
    },
];

#[test]
fn valid_pain001_samples_give_exact_items_and_totals() {
    for expected in VALID_PAIN001 {
        let outcome = parse_sample(Format::Pain001, &format!("iso20022/{}", expected.file), &Default::default());
        let summary = outcome.summary();
        assert_eq!(outcome.diagnostics, vec![], "{}", expected.file);
        assert_eq!(summary.control_errors, vec![], "{}", expected.file);
        assert_eq!(outcome.items.len(), expected.items, "{}", expected.file);
        assert_eq!(summary.items, expected.items as u64, "{}", expected.file);
        assert_eq!(outcome.totals(), expected.totals.to_vec(), "{}", expected.file);
        assert_eq!(summary.variant.as_deref(), Some(expected.variant), "{}", expected.file);
        assert_eq!(summary.message_id.as_deref(), Some(expected.message_id), "{}", expected.file);
    }
}

/// Real samples whose creditor IBAN is a placeholder that fails its checks: the transaction is
/// an invalid item (`invalid_iban`, AC01 in pain.002), the control figures still match.
#[test]
fn samples_with_placeholder_creditor_ibans_are_invalid_items() {
    let cases = [
        (
            "pain.001.001.03_lt-sepa_1tx_EUR_bom.xml",
            59,
            "CdtrAcct/Id/IBAN \"LT007400000000000000\" fails its check digits (ISO 7064 mod 97 gives 52, not 1): a character is wrong or two are swapped",
        ),
        (
            "pain.001.001.03_swift-urgp_1tx_USD.xml",
            46,
            "CdtrAcct/Id/IBAN \"DE1234567890123456\" has 18 characters, but DE IBANs have 22",
        ),
    ];
    for (file, line, message) in cases {
        let outcome = parse_sample(Format::Pain001, &format!("iso20022/{file}"), &Default::default());
        assert_eq!(outcome.control_messages(), Vec::<String>::new(), "{file}");
        assert!(outcome.items.is_empty(), "{file}");
        assert_eq!(outcome.codes(), vec!["invalid_iban"], "{file}");
        assert_eq!((outcome.diagnostics[0].line, outcome.diagnostics[0].message.as_str()), (line, message), "{file}");
    }
}

#[test]
fn sepaking_dk_sample_items_in_detail() {
    let outcome =
        parse_sample(Format::Pain001, "iso20022/pain.001.001.03_sepaking_DK-sample_2tx_EUR.xml", &Default::default());
    let items = &outcome.items;
    assert_eq!(items[0].payer.as_deref(), Some("DE87200500001234567890"));
    assert_eq!(items[0].payee, "DE21500500009876543210");
    assert_eq!(items[0].amount.get(), 654314);
    assert_eq!(items[0].reference.as_deref(), Some("OriginatorID1234"));
    assert_eq!(items[0].payment_information_id.as_deref(), Some("Payment-Information-ID-4711"));
    assert_eq!((items[0].line, items[1].line), (39, 63));
    assert_eq!(items[1].location, "/Document/CstmrCdtTrfInitn/PmtInf[1]/CdtTrfTxInf[2]");
    assert_eq!((items[0].index, items[1].index), (0, 1));
}

#[test]
fn swiss_sample_uses_other_ids_and_keeps_instruction_ids() {
    let outcome =
        parse_sample(Format::Pain001, "iso20022/pain.001.001.03.ch.02_sepaking_3tx_CHF-EUR.xml", &Default::default());
    let items = &outcome.items;
    assert_eq!(items[0].payee, "01-39139-1");
    assert_eq!(items[0].instruction_id.as_deref(), Some("INSTRID-01-01"));
    assert_eq!(items[2].location, "/Document/CstmrCdtTrfInitn/PmtInf[2]/CdtTrfTxInf[2]");
    assert_eq!(items[2].payment_information_id.as_deref(), Some("PMTINF-02"));
    assert_eq!(items[2].currency.code(), "EUR");
}

// ---------------------------------------------------------------- pain.001, invalid

#[test]
fn postfinance_nboftxs_mismatch_and_equivalent_amount() {
    let outcome = parse_sample(
        Format::Pain001,
        "iso20022/INVALID-pain.001.001.03.ch.02_postfinance-musterfile_8tx_CHF_nboftxs-mismatch.xml",
        &Default::default(),
    );
    // CtrlSum 38.00 matches because EqvtAmt counts in it; NbOfTxs does not.
    assert_eq!(outcome.control_messages(), vec!["GrpHdr/NbOfTxs is 7 but the file has 8 transactions"]);
    assert_eq!(outcome.summary().control_errors[0].line, 7);
    // The creditor IBAN of the transaction at line 197 (CHF 2.00) fails its check digits; the
    // one at line 242 is an EqvtAmt, which is refused before its (also bad) IBAN is looked at.
    let found: Vec<(u64, &str)> = outcome.diagnostics.iter().map(|d| (d.line, d.code)).collect();
    assert_eq!(found, vec![(197, "invalid_iban"), (242, "unsupported_entry")]);
    assert_eq!(outcome.diagnostics[1].field.as_deref(), Some("EqvtAmt"));
    assert_eq!(outcome.items.len(), 6);
    assert_eq!(outcome.totals(), vec![("CHF", 3500)]);
}

#[test]
fn six_blocks_with_wrong_control_figures() {
    let outcome = parse_sample(
        Format::Pain001,
        "iso20022/INVALID-pain.001.001.03_6pmtinf_EUR_ctrlsum-mismatch.xml",
        &Default::default(),
    );
    assert_eq!(
        outcome.control_messages(),
        vec![
            "GrpHdr/NbOfTxs is 2 but the file has 6 transactions",
            "PmtInf[1]/NbOfTxs is 2 but the block has 1 transaction",
            "PmtInf[1]/CtrlSum is 2 but its transactions sum to 150.00",
            "PmtInf[2]/NbOfTxs is 2 but the block has 1 transaction",
            "PmtInf[2]/CtrlSum is 2 but its transactions sum to 150.00",
            "PmtInf[3]/NbOfTxs is 3 but the block has 1 transaction",
            "PmtInf[3]/CtrlSum is 3 but its transactions sum to 300.00",
            "PmtInf[4]/NbOfTxs is 3 but the block has 1 transaction",
            "PmtInf[4]/CtrlSum is 3 but its transactions sum to 300.00",
            "PmtInf[5]/CtrlSum is 1 but its transactions sum to 250.00",
            "PmtInf[6]/CtrlSum is 1 but its transactions sum to 250.00",
        ]
    );
    // CdtrAcct is optional in the schema, but a payment needs a payee.
    assert_eq!(outcome.codes(), vec!["missing_field"; 6]);
    assert_eq!(outcome.diagnostics[0].field.as_deref(), Some("CdtrAcct"));
    assert_eq!(outcome.diagnostics[0].line, 40);
    assert_eq!(outcome.totals(), vec![]);
}

#[test]
fn nbsp_indentation_is_fatal_and_names_the_line() {
    let outcome = parse_sample(
        Format::Pain001,
        "iso20022/INVALID-pain.001.001.03_crossriver-ach-ccd_USD_nbsp-indent.xml",
        &Default::default(),
    );
    let message = outcome.fatal();
    assert!(message.starts_with("line 3: "), "{message}");
    assert!(message.contains("U+00A0"), "{message}");
    assert!(outcome.items.is_empty());
}

#[test]
fn goldman_template_has_a_placeholder_date_and_a_wrong_ctrl_sum() {
    let outcome = parse_sample(
        Format::Pain001,
        "iso20022/INVALID-pain.001.001.03_gs-ach-credit-template_USD.xml",
        &Default::default(),
    );
    assert_eq!(outcome.codes(), vec!["invalid_date"]);
    let date = &outcome.diagnostics[0];
    assert_eq!(date.field.as_deref(), Some("ReqdExctnDt"));
    assert_eq!(date.message, "ReqdExctnDt at line 30 is \"YYYY-MM-DD\", but it must be a date such as 2024-01-31");
    assert_eq!(outcome.control_messages(), vec!["GrpHdr/CtrlSum is 510.24 but the transactions sum to 123"]);
}

#[test]
fn pain001_09_nboftxs_mismatch() {
    let outcome = parse_sample(
        Format::Pain001,
        "iso20022/INVALID-pain.001.001.09_5tx_EUR_nboftxs-mismatch.xml",
        &Default::default(),
    );
    assert_eq!(outcome.control_messages(), vec!["GrpHdr/NbOfTxs is 2 but the file has 5 transactions"]);
    // Every creditor IBAN of the generator's template fails its check digits.
    assert_eq!(outcome.codes(), vec!["invalid_iban"; 5]);
    assert!(outcome.items.is_empty());
    assert_eq!(outcome.summary().invalid, 5);
}

#[test]
fn pain002_files_are_not_pain001() {
    for file in [
        "pain.002.001.03_nordea-txn-reject_RJCT.xml",
        "pain.002.001.10_vop-RCVC_2tx.xml",
        "INVALID-pain.002.001.03_crossriver-3tx-reject_bad-xmlns.xml",
    ] {
        let outcome = parse_sample(Format::Pain001, &format!("iso20022/{file}"), &Default::default());
        let message = outcome.fatal();
        assert!(message.contains("namespace") || message.contains("CstmrCdtTrfInitn"), "{file}: {message}");
    }
}

// ---------------------------------------------------------------- NACHA, valid

#[test]
fn nacha_ppd_credit() {
    let outcome = parse_sample(Format::Nacha, "nacha/moov-ppd-credit.ach", &funding());
    assert_eq!(outcome.control_messages(), Vec::<String>::new());
    assert_eq!(outcome.codes(), Vec::<&str>::new());
    let item = &outcome.items[0];
    assert_eq!(outcome.items.len(), 1);
    assert_eq!(item.payer.as_deref(), Some("acct_funding"));
    assert_eq!(item.payee, "231380104987654321");
    assert_eq!(item.amount.get(), 100_000_000);
    assert_eq!(item.reference.as_deref(), Some("121042880000002"));
    assert_eq!((item.line, item.location.as_str()), (3, "line 3"));
}

#[test]
fn nacha_mixed_debit_credit() {
    let outcome = parse_sample(Format::Nacha, "nacha/moov-ppd-mixed-debit-credit.ach", &funding());
    assert_eq!(outcome.control_messages(), Vec::<String>::new());
    assert_eq!(outcome.codes(), Vec::<&str>::new());
    let debit = &outcome.items[0];
    assert_eq!((debit.payer.as_deref(), debit.payee.as_str()), (Some("231380104123456789"), "acct_funding"));
    assert_eq!(outcome.items.len(), 3);
    assert_eq!(outcome.totals(), vec![("USD", 400_000_000)]);
}

#[test]
fn nacha_valid_samples_totals() {
    let cases: &[(&str, usize, u64, u128)] = &[
        ("moov-ppd-credit-addenda-4batches.ach", 12, 0, 1_200_000),
        ("moov-ppd-payroll-net-pay.ach", 15, 3, 2 * 12_706_891),
        ("moov-ccd-debit.ach", 2, 0, 500_125),
        ("moov-ccd-txp-credit.ach", 1, 0, 12_345),
    ];
    for &(file, items, skipped, total) in cases {
        let outcome = parse_sample(Format::Nacha, &format!("nacha/{file}"), &funding());
        assert_eq!(outcome.control_messages(), Vec::<String>::new(), "{file}");
        let prenotes = vec!["prenote"; usize::try_from(skipped).unwrap()];
        assert_eq!(outcome.codes(), prenotes, "{file}");
        assert_eq!(outcome.items.len(), items, "{file}");
        assert_eq!(outcome.summary().skipped, skipped, "{file}");
        assert_eq!(outcome.totals(), vec![("USD", total)], "{file}");
    }
}

#[test]
fn nacha_large_gzipped_file() {
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(sample("nacha/moov-ppd-200-batches-100000-entries.ach.gz").as_slice())
        .read_to_end(&mut text)
        .unwrap();
    // The file control holds the expected figures: entry count and total credit.
    let control = text
        .split(|&b| b == b'\n')
        .rev()
        .find(|l| l.starts_with(b"9") && !l.iter().all(|&b| b == b'9' || b == b'\r'))
        .unwrap();
    let control = std::str::from_utf8(control).unwrap();
    let credit: u128 = control[43..55].parse().unwrap();
    let outcome = parse_with(Format::Nacha, text.as_slice(), &funding());
    assert_eq!(outcome.control_messages(), Vec::<String>::new());
    assert_eq!(outcome.codes(), Vec::<&str>::new());
    assert_eq!(outcome.items.len(), 100_199);
    assert_eq!(outcome.totals(), vec![("USD", credit)]);
    assert_eq!(outcome.items.last().unwrap().index, 100_198);
}

// ---------------------------------------------------------------- NACHA, invalid

#[test]
fn nacha_20110729a_header_is_93_characters() {
    // Padded to 94 characters, the header shows the field that moved: a character is missing
    // before the record size.
    let outcome = parse_sample(Format::Nacha, "nacha/INVALID-moov-20110729A.ach", &funding());
    assert_eq!(outcome.fatal(), "line 1: file header Record Size is \"941\"; expected \"094\"");
}

#[test]
fn nacha_short_line_is_padded_with_blanks() {
    // The file control is 74 characters, its last 20 (reserved blanks) trimmed: under the one
    // rule (a short record is padded with blanks) the file is whole, and its entry is paid.
    let outcome = parse_sample(Format::Nacha, "nacha/INVALID-moov-short-line.ach", &funding());
    assert_eq!(outcome.control_messages(), Vec::<String>::new());
    assert_eq!(outcome.codes(), Vec::<&str>::new());
    assert_eq!(outcome.items.len(), 1);
    let item = &outcome.items[0];
    assert_eq!((item.line, item.payer.as_deref(), item.payee.as_str()), (3, Some("23138010412345678"), "acct_funding"));
    assert_eq!(item.amount.get(), 100_000_000);
}

#[test]
fn nacha_format_code() {
    let outcome = parse_sample(Format::Nacha, "nacha/INVALID-moov-ccd-ppd-format-code.ach", &funding());
    assert_eq!(outcome.fatal(), "line 1: file header Format Code is \"9\"; expected \"1\"");
}

#[test]
fn nacha_immediate_origin() {
    let outcome = parse_sample(Format::Nacha, "nacha/INVALID-moov-ppd-mixed-debit-credit.ach", &funding());
    let message = outcome.fatal();
    assert!(message.starts_with("line 1: file header Immediate Origin is \" 000TESTER\""), "{message}");
}

#[test]
fn nacha_bad_check_digit() {
    let outcome = parse_sample(Format::Nacha, "nacha/INVALID-moov-ppd-debit-bad-check-digit.ach", &funding());
    assert_eq!(outcome.control_messages(), Vec::<String>::new());
    assert_eq!(outcome.codes(), vec!["invalid_routing_number"]);
    assert_eq!(outcome.diagnostics[0].line, 3);
    assert_eq!(
        outcome.diagnostics[0].message,
        "the RDFI routing number 231380105 has check digit \"5\" but its first 8 digits give 4"
    );
}

#[test]
fn nacha_batch_count_mismatch_and_iat() {
    let outcome =
        parse_sample(Format::Nacha, "nacha/INVALID-moov-20110805A-ppd-iat_batchcount-mismatch.ach", &funding());
    let messages = outcome.control_messages();
    assert!(messages.contains(&"file control Batch Count is 5 but the file has 4 batches".to_owned()), "{messages:?}");
    assert_eq!(messages.len(), 1, "{messages:?}");
    // Every entry, PPD and IAT (USD to CAD, with its seven mandatory addenda), is read.
    assert_eq!(outcome.codes(), Vec::<&str>::new());
    assert_eq!(outcome.items.len(), 48);
    assert_eq!(outcome.totals(), vec![("USD", 5_101_200)]);
}
