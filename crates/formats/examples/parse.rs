//! Parses a batch file and counts what the sink received; with a third argument `pain.002` or
//! `csv`, also writes each item's report line (as succeeded) to nowhere. The parsers and
//! report writers alone, for callgrind (`valgrind --tool=callgrind
//! target/release/examples/parse pain.001 FILE pain.002`; see `crates/bench/NOTES.md`,
//! "Scenario 4, round three").

#![allow(clippy::unwrap_used, clippy::expect_used)]

use paycore_formats::{
    parse, CsvReportWriter, Format, ItemStatus, Pain002Header, Pain002Version, Pain002Writer, ParseOptions, ReportItem,
};
use std::io::BufReader;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(format), Some(path)) = (args.next(), args.next()) else {
        eprintln!("usage: parse FORMAT FILE [pain.002|csv] (FORMAT: csv, jsonl, pain.001, nacha)");
        std::process::exit(2);
    };
    let format = Format::parse(&format).expect("a format: csv, jsonl, pain.001 or nacha");
    let file = std::fs::File::open(&path).expect("the file");
    let options = ParseOptions {
        default_payer: Some("acct_payer".to_owned()),
        default_currency: paycore_ledger::Currency::from_code("EUR"),
    };
    let header = Pain002Header {
        message_id: "PAYCORE-bat_1".to_owned(),
        created_at: "2026-12-05T12:00:00".to_owned(),
        original_message_id: "BENCH-1".to_owned(),
        original_message_name_id: "pain.001.001.09".to_owned(),
        original_count: None,
        original_ctrl_sum: None,
        group_status: "ACCP".to_owned(),
        group_reason: None,
        default_payment_information_id: "bat_1".to_owned(),
    };
    let (mut pain002, mut csv) = match args.next().as_deref() {
        Some("pain.002") => (Some(Pain002Writer::begin(std::io::sink(), Pain002Version::V10, &header).unwrap()), None),
        Some("csv") => (None, Some(CsvReportWriter::new(std::io::sink()).unwrap())),
        _ => (None, None),
    };
    let (mut valid, mut invalid) = (0u64, 0u64);
    let summary = parse(format, BufReader::with_capacity(256 * 1024, file), &options, &mut |record| match record {
        Ok(item) => {
            valid += 1;
            let line = ReportItem {
                line: item.line,
                location: item.location,
                reference: item.reference,
                instruction_id: item.instruction_id,
                payment_information_id: item.payment_information_id,
                payer: item.payer,
                payee: item.payee,
                amount: item.amount.get(),
                currency: Some(item.currency),
                status: ItemStatus::Succeeded,
            };
            if let Some(writer) = &mut pain002 {
                writer.item(&line).unwrap();
            }
            if let Some(writer) = &mut csv {
                writer.item(&line).unwrap();
            }
        }
        Err(_) => invalid += 1,
    });
    match summary {
        Ok(summary) => {
            println!("{valid} valid, {invalid} invalid, {} control errors", summary.control_errors.len())
        }
        Err(fatal) => println!("fatal: {fatal}"),
    }
}
