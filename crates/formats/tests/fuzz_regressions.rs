//! Every input the fuzz targets found a failure with (`fuzz/regressions/<target>/`), fed to
//! the parser it broke: each must now parse, or fail, without a panic — the same check as the
//! fuzz target, which parses through a whole slice and through a 7-byte buffer and compares.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use paycore_formats::{parse, Format, ParseOptions};
use paycore_ledger::Currency;
use std::io::BufReader;
use std::path::PathBuf;

fn check(target: &str, format: Format) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions").join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    let options = ParseOptions {
        default_payer: Some("acct_01j9z6m5v8k3q2w1x0y9z8a7b6".to_owned()),
        default_currency: Currency::from_code("EUR"),
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        let mut whole = Vec::new();
        let a = parse(format, data.as_slice(), &options, &mut |r| whole.push(r));
        let mut small = Vec::new();
        let b = parse(format, BufReader::with_capacity(7, data.as_slice()), &options, &mut |r| small.push(r));
        match (&a, &b) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a, b, "{}: the summary depends on the buffer size", path.display());
                assert_eq!(whole, small, "{}: the records depend on the buffer size", path.display());
            }
            (Err(_), Err(_)) => {}
            _ => panic!("{}: one parse failed and the other did not: {a:?} vs {b:?}", path.display()),
        }
    }
}

#[test]
fn csv() {
    check("csv", Format::Csv);
}

#[test]
fn jsonl() {
    check("jsonl", Format::Jsonl);
}

#[test]
fn pain001() {
    check("pain001", Format::Pain001);
}

#[test]
fn nacha() {
    check("nacha", Format::Nacha);
}

/// A record or XML event that never ends is fatal once it passes the line limit (1 MiB),
/// instead of being buffered whole: the input here is 64 MiB.
#[test]
fn endless_records_are_fatal_not_buffered() {
    use std::io::{BufRead, Read};
    let endless = |head: &'static [u8]| -> Box<dyn BufRead> {
        Box::new(BufReader::new(head.chain(std::io::repeat(b'a').take(64 << 20))))
    };
    let options = ParseOptions::default();
    for (format, head) in [
        (Format::Csv, &b"payee,amount\nx,\""[..]),
        (Format::Csv, &b"payee,amount\n"[..]),
        (
            Format::Pain001,
            &b"<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.001.001.03\"><CstmrCdtTrfInitn><GrpHdr><MsgId>"[..],
        ),
        (
            Format::Pain001,
            &b"<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.001.001.03\"><CstmrCdtTrfInitn a=\""[..],
        ),
        (Format::Jsonl, &b"{\"payee\":\""[..]),
        (Format::Nacha, &b"1"[..]),
    ] {
        let error = parse(format, endless(head), &options, &mut |_| {}).unwrap_err();
        assert!(matches!(error, paycore_formats::FatalError::Malformed { .. }), "{format}: {error}");
    }
}

/// The `emvco` target's seeds and regressions: each decodes, or is refused, without a panic,
/// and what decodes encodes back to the same fields. The seeds are payloads whose CRC checks.
#[test]
fn emvco() {
    use paycore_formats::emvco::{decode, encode};
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    for (folder, seed) in [("corpus/emvco", true), ("regressions/emvco", false)] {
        let Ok(entries) = std::fs::read_dir(root.join(folder)) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let decoded = std::str::from_utf8(&data).ok().map(decode);
            if seed {
                let text = std::str::from_utf8(&data).unwrap();
                let (body, crc) = text.split_at(text.len() - 4);
                assert_eq!(
                    format!("{:04X}", paycore_formats::emvco::crc16(body.as_bytes())),
                    crc,
                    "{}",
                    path.display()
                );
            }
            if let Some(Ok(payload)) = decoded {
                assert_eq!(decode(&encode(&payload)), Ok(payload), "{}", path.display());
            }
        }
    }
}
