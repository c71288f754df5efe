//! Round trips and robustness: generated files parse back to what made them, and no input
//! makes a parser panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use paycore_formats::{Format, ParseOptions};
use paycore_ledger::{format_amount, Currency};
use proptest::prelude::*;

/// A generated payment: payee, minor units, currency index, reference.
type Row = (String, u64, usize, String);

fn currencies() -> Vec<Currency> {
    ["EUR", "USD", "JPY", "KWD", "CHF"].iter().map(|c| currency(c)).collect()
}

fn rows() -> impl Strategy<Value = Vec<Row>> {
    prop::collection::vec(
        ("[A-Z]{2}[0-9]{2}[A-Za-z0-9 ,\"]{1,20}", 1u64..=9_223_372_036_854_775_807, 0usize..5, "[A-Za-z0-9-]{1,12}"),
        0..30,
    )
}

fn csv_field(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

proptest! {
    #[test]
    fn csv_round_trip(rows in rows()) {
        let currencies = currencies();
        let mut text = "payee,amount,currency,reference\n".to_owned();
        for (i, (payee, minor, c, reference)) in rows.iter().enumerate() {
            let currency = currencies[*c];
            text.push_str(&format!("{},{},{},{reference}-{i}\n", csv_field(payee), format_amount(*minor, currency), currency.code()));
        }
        let outcome = parse_text(Format::Csv, &text, &ParseOptions::default());
        prop_assert_eq!(outcome.diagnostics.len(), 0);
        prop_assert_eq!(outcome.items.len(), rows.len());
        for (i, (item, (payee, minor, c, reference))) in outcome.items.iter().zip(&rows).enumerate() {
            prop_assert_eq!(&item.payee, payee.trim());
            prop_assert_eq!(item.amount.get(), *minor);
            prop_assert_eq!(item.currency, currencies[*c]);
            prop_assert_eq!(item.reference.clone(), Some(format!("{reference}-{i}")));
            prop_assert_eq!(item.line, i as u64 + 2);
            prop_assert_eq!(item.index, i as u64);
        }
    }

    #[test]
    fn pain001_round_trip(blocks in prop::collection::vec(prop::collection::vec((1u64..=99_999_999_999, 0usize..5), 1..6), 1..5)) {
        let currencies = currencies();
        let mut body = String::new();
        let mut group_sum: u128 = 0;
        let mut group_count = 0;
        let mut expected = Vec::new();
        for (b, transactions) in blocks.iter().enumerate() {
            // CtrlSum is written in minor units over 10^3 so that every currency's amount adds exactly.
            let block_sum: u128 = transactions.iter().map(|(m, c)| u128::from(*m) * 10u128.pow(3 - u32::from(currencies[*c].minor_units()))).sum();
            group_sum += block_sum;
            group_count += transactions.len();
            body.push_str(&format!(
                "<PmtInf><PmtInfId>B{b}</PmtInfId><NbOfTxs>{}</NbOfTxs><CtrlSum>{}.{:03}</CtrlSum><ReqdExctnDt>2024-01-31</ReqdExctnDt>\
                 <DbtrAcct><Id><IBAN>PAYER{b}</IBAN></Id></DbtrAcct>\n",
                transactions.len(), block_sum / 1000, block_sum % 1000
            ));
            for (t, (minor, c)) in transactions.iter().enumerate() {
                let currency = currencies[*c];
                body.push_str(&format!(
                    "  <CdtTrfTxInf>\n    <PmtId><InstrId>I{b}-{t}</InstrId><EndToEndId>E{b}-{t}</EndToEndId></PmtId>\
                     <Amt><InstdAmt Ccy=\"{}\">{}</InstdAmt></Amt><CdtrAcct><Id><Othr><Id>PAYEE{b}-{t}</Id></Othr></Id></CdtrAcct>\n  </CdtTrfTxInf>\n",
                    currency.code(), format_amount(*minor, currency)
                ));
                expected.push((format!("PAYER{b}"), format!("PAYEE{b}-{t}"), *minor, currency, b + 1, t + 1));
            }
            body.push_str("</PmtInf>\n");
        }
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.001.001.03\">\n<CstmrCdtTrfInitn>\
             <GrpHdr><MsgId>M</MsgId><NbOfTxs>{group_count}</NbOfTxs><CtrlSum>{}.{:03}</CtrlSum></GrpHdr>\n{body}</CstmrCdtTrfInitn></Document>\n",
            group_sum / 1000, group_sum % 1000
        );
        let outcome = parse_text(Format::Pain001, &xml, &ParseOptions::default());
        prop_assert_eq!(outcome.summary().control_errors.clone(), vec![]);
        prop_assert_eq!(outcome.diagnostics.clone(), vec![]);
        prop_assert_eq!(outcome.items.len(), expected.len());
        for (item, (payer, payee, minor, currency, b, t)) in outcome.items.iter().zip(&expected) {
            prop_assert_eq!(item.payer.as_deref(), Some(payer.as_str()));
            prop_assert_eq!(&item.payee, payee);
            prop_assert_eq!(item.amount.get(), *minor);
            prop_assert_eq!(item.currency, *currency);
            prop_assert_eq!(item.location.clone(), format!("/Document/CstmrCdtTrfInitn/PmtInf[{b}]/CdtTrfTxInf[{t}]"));
            prop_assert_eq!(item.reference.clone(), Some(format!("E{}-{}", b - 1, t - 1)));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000), format in 0usize..4) {
        let format = [Format::Csv, Format::Jsonl, Format::Pain001, Format::Nacha][format];
        let _ = parse_with(format, bytes.as_slice(), &funding());
    }

    #[test]
    fn mutated_samples_never_panic(file in 0usize..SAMPLE_FILES.len(), edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..20)) {
        let (format, path) = SAMPLE_FILES[file];
        let mut bytes = sample(path);
        for (index, byte, kind) in edits {
            if bytes.is_empty() { break; }
            let at = index.index(bytes.len());
            match kind {
                0 => bytes[at] = byte,
                1 => { bytes.remove(at); }
                _ => bytes.insert(at, byte),
            }
        }
        let _ = parse_with(format, bytes.as_slice(), &funding());
    }
}

const SAMPLE_FILES: &[(Format, &str)] = &[
    (Format::Csv, "csv/pain001-template_pain.001.001.03_4rows.csv"),
    (Format::Csv, "csv/csv2sepa-transactions-template_1row.csv"),
    (Format::Pain001, "iso20022/pain.001.001.03.ch.02_sepaking_3tx_CHF-EUR.xml"),
    (Format::Pain001, "iso20022/pain.001.001.09_phpsepaxml_1tx_EUR_uetr.xml"),
    (Format::Pain001, "iso20022/INVALID-pain.001.001.03.ch.02_postfinance-musterfile_8tx_CHF_nboftxs-mismatch.xml"),
    (Format::Nacha, "nacha/moov-ppd-payroll-net-pay.ach"),
    (Format::Nacha, "nacha/moov-ppd-credit-addenda-4batches.ach"),
    (Format::Nacha, "nacha/INVALID-moov-20110805A-ppd-iat_batchcount-mismatch.ach"),
];

proptest! {
    /// An IBAN with the right check digits passes; changing any one digit for another digit or
    /// letter for another letter, or swapping two different neighbouring digits, makes it fail
    /// (ISO 7064 MOD 97-10 catches them all).
    #[test]
    fn iban_check_digits(country in 0usize..4, digits in prop::collection::vec(0u8..36, 30), at in 0usize..30, by in 1u8..36) {
        let (code, length) = [("DE", 22), ("FR", 27), ("GB", 22), ("NL", 18)][country];
        let bban: String = digits[..length - 4]
            .iter()
            .map(|&d| char::from_digit(u32::from(d), 36).unwrap().to_ascii_uppercase())
            .collect();
        let valid = common::iban(code, &bban);
        prop_assert_eq!(paycore_formats::check_iban(&valid), Ok(()));
        let position = 4 + at % (length - 4);
        let mut changed: Vec<u8> = valid.clone().into_bytes();
        let old = char::from(changed[position]).to_digit(36).unwrap();
        // A digit for another digit, a letter for another letter: a letter stands for two
        // digits, so a digit for a letter shifts the number and is not always caught.
        let new = if old < 10 { (old + 1 + u32::from(by) % 9) % 10 } else { 10 + (old - 10 + 1 + u32::from(by) % 25) % 26 };
        changed[position] = char::from_digit(new, 36).unwrap().to_ascii_uppercase() as u8;
        let changed = String::from_utf8(changed).unwrap();
        prop_assert!(paycore_formats::check_iban(&changed).is_err(), "{} -> {}", valid, changed);
        let mut swapped: Vec<char> = valid.chars().collect();
        if position + 1 < length && swapped[position] != swapped[position + 1] && swapped[position].is_ascii_digit() && swapped[position + 1].is_ascii_digit() {
            swapped.swap(position, position + 1);
            let swapped: String = swapped.into_iter().collect();
            prop_assert!(paycore_formats::check_iban(&swapped).is_err(), "{} -> {}", valid, swapped);
        }
    }
}
