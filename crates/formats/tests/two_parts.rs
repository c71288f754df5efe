//! A pain.001 file parsed in two parts (`find_cut`, `parse_first_part`, `parse_second_part`,
//! `join_parts`) gives what one parse of the whole file gives, or says that it cannot.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{sample, SAMPLES};
use paycore_formats::{find_cut, join_parts, parse, parse_first_part, parse_second_part, Diagnostic, Format, Item};

type Record = Result<Item, Diagnostic>;

/// What the parts gave for the file cut at the first `<CdtTrfTxInf>` at or past `target`:
/// `None` if no cut was found or the parts cannot stand for one parse; else the records of
/// both parts in order and the joined summary (or the fatal error's text).
fn in_two(bytes: &[u8], target: u64) -> Option<(Vec<Record>, Result<paycore_formats::Summary, String>)> {
    let mut rest = bytes;
    let cut = find_cut(&mut rest, target * 2).unwrap()?;
    let mut first_records = Vec::new();
    let first = parse_first_part(&cut, bytes, &mut |r| first_records.push(r));
    let mut second_records = Vec::new();
    let second = parse_second_part(&cut, rest, &mut |r| second_records.push(r));
    let joined = join_parts(&cut, first, second)?;
    if joined.is_ok() {
        assert_eq!(cut.records_before(), first_records.len() as u64);
    }
    first_records.extend(second_records);
    Some((first_records, joined.map_err(|e| e.to_string())))
}

fn whole(bytes: &[u8]) -> (Vec<Record>, Result<paycore_formats::Summary, String>) {
    let mut records = Vec::new();
    let result = parse(Format::Pain001, bytes, &Default::default(), &mut |r| records.push(r));
    (records, result.map_err(|e| e.to_string()))
}

/// Cuts `bytes` at every transaction in turn; checks each joined parse against the whole
/// parse (records in the same order, the same summary or error), and returns how many cuts
/// were joined.
fn every_cut_agrees(name: &str, bytes: &[u8]) -> usize {
    let (expected, expected_result) = whole(bytes);
    let mut joined = 0;
    for target in (0..bytes.len() as u64).step_by(97) {
        if let Some((records, result)) = in_two(bytes, target) {
            assert_eq!(result, expected_result, "{name}, cut at or past {target}");
            if expected_result.is_ok() {
                assert_eq!(records, expected, "{name}, cut at or past {target}");
            }
            joined += 1;
        }
    }
    joined
}

fn pain001_samples() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(format!("{SAMPLES}/iso20022"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("pain.001"))
        .collect();
    files.sort();
    files.into_iter().map(|name| (name.clone(), sample(&format!("iso20022/{name}")))).collect()
}

#[test]
fn every_sample_cut_anywhere_parses_as_the_whole_file() {
    let mut joined = 0;
    for (name, bytes) in pain001_samples() {
        joined += every_cut_agrees(&name, &bytes);
    }
    // The samples with more than one transaction and unprefixed names are cut and joined.
    assert!(joined >= 10, "only {joined} cuts joined");
}

/// A pain.001.001.09 of `blocks` blocks of `per_block` transactions, with references
/// `E2E-{n}` unless `reference` says otherwise.
fn generated(blocks: usize, per_block: usize, reference: impl Fn(usize) -> String) -> Vec<u8> {
    let total = blocks * per_block;
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.001.001.09\">\n<CstmrCdtTrfInitn>\n",
    );
    xml.push_str(&format!(
        "<GrpHdr><MsgId>MSG-1</MsgId><CreDtTm>2026-12-05T10:00:00</CreDtTm><NbOfTxs>{total}</NbOfTxs><CtrlSum>{}.50</CtrlSum><InitgPty><Nm>P</Nm></InitgPty></GrpHdr>\n",
        total * 10
    ));
    let mut n = 0;
    for block in 0..blocks {
        xml.push_str(&format!(
            "<PmtInf>\n  <PmtInfId>B{block}</PmtInfId>\n  <PmtMtd>TRF</PmtMtd>\n  <NbOfTxs>{per_block}</NbOfTxs>\n  <ReqdExctnDt><Dt>2026-12-07</Dt></ReqdExctnDt>\n  <Dbtr><Nm>D</Nm></Dbtr>\n  <DbtrAcct><Id><Othr><Id>acct_payer{block}</Id></Othr></Id></DbtrAcct>\n  <DbtrAgt><FinInstnId><BICFI>DEUTDEFF</BICFI></FinInstnId></DbtrAgt>\n"
        ));
        for _ in 0..per_block {
            let amount = if n == 7 { "10.001".to_owned() } else { "10.00".to_owned() };
            xml.push_str(&format!(
                "  <CdtTrfTxInf>\n    <PmtId><EndToEndId>{}</EndToEndId></PmtId>\n    <Amt><InstdAmt Ccy=\"EUR\">{amount}</InstdAmt></Amt>\n    <Cdtr><Nm>C</Nm></Cdtr>\n    <CdtrAcct><Id><Othr><Id>acct_payee{n}</Id></Othr></Id></CdtrAcct>\n    <RmtInf><Ustrd>salary {n}</Ustrd></RmtInf>\n  </CdtTrfTxInf>\n",
                reference(n)
            ));
            n += 1;
        }
        xml.push_str("</PmtInf>\n");
    }
    xml.push_str("</CstmrCdtTrfInitn>\n</Document>\n");
    xml.into_bytes()
}

#[test]
fn generated_files_cut_anywhere_parse_as_the_whole_file() {
    // Several blocks, and one block of many transactions; an invalid amount (item 7) and a
    // group CtrlSum that does not match, so records and control errors are both compared.
    for (blocks, per_block) in [(4, 5), (1, 30), (7, 1)] {
        let bytes = generated(blocks, per_block, |n| format!("E2E-{n}"));
        let joined = every_cut_agrees(&format!("{blocks}x{per_block}"), &bytes);
        assert!(joined >= blocks * per_block / 2, "{blocks}x{per_block}: only {joined} cuts joined");
    }
}

#[test]
fn a_duplicate_across_the_cut_is_left_to_the_whole_parse() {
    // Item 15 repeats item 2's reference: a cut between them cannot be joined; a cut before
    // item 2 or after item 15 can, and agrees with the whole parse (which names line 2's item).
    let bytes = generated(2, 10, |n| if n == 15 { "E2E-2".to_owned() } else { format!("E2E-{n}") });
    let (records, _) = whole(&bytes);
    assert_eq!(records.iter().filter(|r| matches!(r, Err(d) if d.code == "duplicate_reference")).count(), 1);
    let middle = bytes.windows(17).position(|w| w == b"<EndToEndId>E2E-9").unwrap() as u64;
    assert!(in_two(&bytes, middle).is_none(), "a cut between the two is joined");
    assert!(every_cut_agrees("duplicate", &bytes) > 0);
}

#[test]
fn a_cut_in_a_comment_or_after_a_late_header_element_is_not_used() {
    let bytes = generated(1, 6, |n| format!("E2E-{n}"));
    let text = String::from_utf8(bytes).unwrap();
    // A commented-out transaction right at the middle: the search finds it, the parser does not.
    let middle = text.len() / 2;
    let at = middle + text[middle..].find("  <CdtTrfTxInf>").unwrap();
    let commented = format!("{}<!-- <CdtTrfTxInf> -->{}", &text[..at], &text[at..]);
    let comment_at = commented.find("<!--").unwrap() as u64;
    assert!(in_two(commented.as_bytes(), comment_at).is_none());
    every_cut_agrees("comment", commented.as_bytes());
    // A block header element after its first transaction: the second part would not see it.
    let late =
        text.replacen("  </CdtTrfTxInf>\n", "  </CdtTrfTxInf>\n  <ChrgBr>SLEV</ChrgBr><PmtInfId>LATE</PmtInfId>\n", 1);
    every_cut_agrees("late header", late.as_bytes());
    let (records, _) = whole(late.as_bytes());
    assert!(records.iter().any(|r| matches!(r, Ok(item) if item.payment_information_id.as_deref() == Some("LATE"))));
}

#[test]
fn errors_in_either_part_are_the_whole_files() {
    let bytes = generated(3, 4, |n| format!("E2E-{n}"));
    let text = String::from_utf8(bytes).unwrap();
    // Not well-formed late in the file, then early; truncated; a block count that is wrong.
    let broken_late = text.replacen("<Ustrd>salary 10</Ustrd>", "<Ustrd>salary 10</Ustr>", 1);
    let broken_early = text.replacen("<Ustrd>salary 1</Ustrd>", "<Ustrd>salary 1</Ustr>", 1);
    let truncated = &text[..text.len() - 30];
    let counts = text.replacen("<NbOfTxs>4</NbOfTxs>", "<NbOfTxs>5</NbOfTxs>", 2);
    for (name, file) in [
        ("late", broken_late.as_str()),
        ("early", broken_early.as_str()),
        ("truncated", truncated),
        ("counts", counts.as_str()),
    ] {
        let (_, expected) = whole(file.as_bytes());
        if name == "counts" {
            assert_eq!(expected.as_ref().unwrap().control_errors.len(), 3, "{expected:?}");
        } else {
            assert!(expected.is_err(), "{name}");
        }
        assert!(every_cut_agrees(name, file.as_bytes()) > 0, "{name}: no cut joined");
    }
}

#[test]
fn a_file_with_prefixed_names_or_one_transaction_is_not_cut() {
    let bytes = generated(1, 1, |n| format!("E2E-{n}"));
    // Only tags past the target count: with the target at the end, none is found.
    let mut rest = bytes.as_slice();
    assert!(find_cut(&mut rest, bytes.len() as u64 * 2).unwrap().is_none());
    let prefixed = String::from_utf8(generated(2, 3, |n| format!("E2E-{n}")))
        .unwrap()
        .replace("<", "<p:")
        .replace("<p:/", "</p:")
        .replace("<p:?xml", "<?xml")
        .replace("xmlns=", "xmlns:p=");
    let mut rest = prefixed.as_bytes();
    assert!(find_cut(&mut rest, prefixed.len() as u64).unwrap().is_none());
    assert!(whole(prefixed.as_bytes()).1.is_ok());
}
