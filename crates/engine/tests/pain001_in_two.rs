//! A pain.001 file large enough to be validated by two parser threads (the file cut in two
//! near its middle) gives the items one parser gives: every record once, at its index and
//! line, with its status and code, and the batch's counts and totals.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{execute, ReadSide};
use paycore_engine::batches::validate;
use paycore_ledger::{
    AccountId, BatchFormat, BatchId, BatchStatus, Command, Currency, ItemStatus, NewAccount, Outcome, Overdraft,
    TenantId,
};
use paycore_store::BatchRecord;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

const TENANT: TenantId = TenantId(7);
const TRANSACTIONS: usize = 12_000;
const PER_BLOCK: usize = 4_000;

/// A pain.001.001.09 of 12 000 transactions (over 4 MiB) in three blocks, paid from
/// `PAYER` to `P0`…`P19`; `change` may rewrite transaction `n`'s payee, amount and reference.
/// Also returns the line of each `<CdtTrfTxInf>`.
fn file(change: impl Fn(usize, &mut (String, String, String))) -> (Vec<u8>, Vec<u64>) {
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.001.001.09\">\n<CstmrCdtTrfInitn>\n",
    );
    xml.push_str(&format!(
        "<GrpHdr><MsgId>BIG-1</MsgId><CreDtTm>2026-12-05T10:00:00</CreDtTm><NbOfTxs>{TRANSACTIONS}</NbOfTxs><InitgPty><Nm>P</Nm></InitgPty></GrpHdr>\n"
    ));
    let mut lines = Vec::new();
    let mut line = 1 + xml.matches('\n').count() as u64;
    let padding = "x".repeat(200);
    for n in 0..TRANSACTIONS {
        if n % PER_BLOCK == 0 {
            if n > 0 {
                xml.push_str("</PmtInf>\n");
            }
            xml.push_str(&format!(
                "<PmtInf>\n<PmtInfId>B{n}</PmtInfId>\n<PmtMtd>TRF</PmtMtd>\n<NbOfTxs>{PER_BLOCK}</NbOfTxs>\n<ReqdExctnDt><Dt>2026-12-07</Dt></ReqdExctnDt>\n<Dbtr><Nm>D</Nm></Dbtr>\n<DbtrAcct><Id><Othr><Id>PAYER</Id></Othr></Id></DbtrAcct>\n<DbtrAgt><FinInstnId><BICFI>DEUTDEFF</BICFI></FinInstnId></DbtrAgt>\n"
            ));
            line = 1 + xml.matches('\n').count() as u64;
        }
        let mut fields = (format!("P{}", n % 20), "1.00".to_owned(), format!("E2E-{n}"));
        change(n, &mut fields);
        let (payee, amount, reference) = fields;
        lines.push(line);
        let tx = format!(
            "<CdtTrfTxInf>\n<PmtId><EndToEndId>{reference}</EndToEndId></PmtId>\n<Amt><InstdAmt Ccy=\"EUR\">{amount}</InstdAmt></Amt>\n<Cdtr><Nm>C</Nm></Cdtr>\n<CdtrAcct><Id><Othr><Id>{payee}</Id></Othr></Id></CdtrAcct>\n<RmtInf><Ustrd>{n} {padding}</Ustrd></RmtInf>\n</CdtTrfTxInf>\n"
        );
        line += tx.matches('\n').count() as u64;
        xml.push_str(&tx);
    }
    xml.push_str("</PmtInf>\n</CstmrCdtTrfInitn>\n</Document>\n");
    assert!(xml.len() > 4 << 20);
    (xml.into_bytes(), lines)
}

struct Env {
    _dir: tempfile::TempDir,
    reader: Arc<dyn ReadSide>,
    _running: common::Running,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let running = common::boot(dir.path(), 64, common::no_renderer());
    let eur = Currency::from_code("EUR").unwrap();
    for (i, name) in std::iter::once("PAYER".to_owned()).chain((0..20).map(|i| format!("P{i}"))).enumerate() {
        let open = NewAccount {
            id: AccountId(100 + i as u128),
            currency: eur,
            overdraft: Overdraft::Unlimited,
            reference: Some(name),
            metadata: None,
        };
        assert!(matches!(
            execute(&running.handle, TENANT, Command::CreateAccount(open)).await,
            Outcome::Account(Ok(_))
        ));
    }
    Env { _dir: dir, reader: running.reader.clone(), _running: running }
}

/// Validates `bytes` as batch `number`; the batch and all its items in index order.
fn validated(env: &Env, number: u64, bytes: &[u8]) -> (BatchRecord, Vec<paycore_store::BatchItemRow>) {
    let name = format!("batches/big{number}.xml");
    let mut sink = env.reader.file_writer(&name).unwrap();
    sink.write_chunk(bytes).unwrap();
    sink.finish().unwrap();
    let id = BatchId(paycore_ledger::time_ordered(1_700_000_000_000 + number, 1));
    let record = BatchRecord { file: Some(name), ..BatchRecord::new(id, TENANT, BatchFormat::Pain001, 1) };
    env.reader.create_batch(&record).unwrap();
    validate(env.reader.as_ref(), &record, &|| 2, &AtomicBool::new(false)).unwrap();
    let mut items = Vec::new();
    let mut after = None;
    loop {
        let page = env.reader.batch_items(id, &[], after, 5000).unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.index);
        items.extend(page);
    }
    (env.reader.batch(TENANT, id).unwrap().unwrap(), items)
}

fn check_items(items: &[paycore_store::BatchItemRow], lines: &[u64], invalid: &[(usize, &str, &str)]) {
    assert_eq!(items.len(), TRANSACTIONS);
    for (n, item) in items.iter().enumerate() {
        assert_eq!((item.index, item.line), (n as u64, lines[n]), "item {n}");
        let block = n / PER_BLOCK;
        let location = format!("/Document/CstmrCdtTrfInitn/PmtInf[{}]/CdtTrfTxInf[{}]", block + 1, n % PER_BLOCK + 1);
        assert_eq!(item.location, location, "item {n}");
        match invalid.iter().find(|(at, _, _)| *at == n) {
            Some((_, code, message)) => {
                assert_eq!(item.status, ItemStatus::Invalid, "item {n}");
                assert_eq!(item.failure_code.as_deref(), Some(*code), "item {n}");
                assert!(item.message.as_deref().unwrap_or("").contains(message), "item {n}: {:?}", item.message);
            }
            None => assert_eq!(item.status, ItemStatus::Pending, "item {n}: {:?}", item.message),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_validated_in_two_parts_has_every_item_in_its_place() {
    let env = env().await;
    // Invalid items on both sides of the middle; a duplicate within the second part.
    let (bytes, lines) = file(|n, (payee, amount, reference)| match n {
        2_000 => *amount = "1.001".to_owned(),
        9_000 => *payee = "NOBODY".to_owned(),
        10_000 => *amount = "1.001".to_owned(),
        11_000 => *reference = "E2E-10500".to_owned(),
        _ => {}
    });
    let (batch, items) = validated(&env, 1, &bytes);
    assert_eq!(
        (batch.status, batch.total, batch.invalid, batch.message_id.as_deref()),
        (BatchStatus::Rejected, 12_000, 4, Some("BIG-1")),
        "{:?}",
        batch.rejection
    );
    let duplicate = format!("already used by the item at line {}", lines[10_500]);
    check_items(
        &items,
        &lines,
        &[
            (2_000, "too_many_decimals", "1.001"),
            (9_000, "account_not_found", "NOBODY"),
            (10_000, "too_many_decimals", "1.001"),
            (11_000, "duplicate_reference", &duplicate),
        ],
    );
    // Skipping invalid items, the same file goes on to processing with the valid ones' total.
    let (clean, lines) = file(|_, _| {});
    let (batch, items) = validated(&env, 2, &clean);
    assert_eq!(
        (batch.status, batch.total, batch.invalid),
        (BatchStatus::Processing, 12_000, 0),
        "{:?}",
        batch.rejection
    );
    check_items(&items, &lines, &[]);
    let totals = env.reader.batch_totals(batch.id).unwrap();
    assert_eq!((totals.len(), totals[0].count, totals[0].sum), (1, 12_000, 1_200_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_across_the_cut_is_found_by_a_whole_parse() {
    let env = env().await;
    // Item 11 000 repeats item 100's reference: the parts cannot judge it, the whole parse does.
    let (bytes, lines) = file(|n, (_, _, reference)| {
        if n == 11_000 {
            *reference = "E2E-100".to_owned();
        }
    });
    let (batch, items) = validated(&env, 3, &bytes);
    assert_eq!((batch.status, batch.total, batch.invalid), (BatchStatus::Rejected, 12_000, 1));
    let duplicate = format!("already used by the item at line {}", lines[100]);
    check_items(&items, &lines, &[(11_000, "duplicate_reference", &duplicate)]);
}
