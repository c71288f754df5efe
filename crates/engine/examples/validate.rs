//! Validates one batch file in process, as the server's validation job does (parser threads,
//! account checks, the item writer into a SQLite data folder), without HTTP or the batch
//! runner: validation alone, for `perf` and callgrind. Opens a payer and 1 000 payees (the
//! bench's accounts), writes a CSV or pain.001 file of `LINES` items paying them as
//! `paycore-bench batch` does (or takes `FILE`, which must name these accounts), stores it and
//! validates it, then prints the wall time.
//!
//! `cargo run --release -p paycore-engine --example validate -- csv 1000000` (or `pain.001`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]

use paycore_engine::batches::validate;
use paycore_engine::{channel, start, EngineConfig, EngineHandle, EngineMetrics, Reply, Submission, SystemClock};
use paycore_ledger::{
    AccountId, BatchFormat, BatchId, Command, Currency, NewAccount, Outcome, Overdraft, Request, TenantId,
};
use paycore_store::BatchRecord;
use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

// The server's allocator (`crates/cli/src/main.rs`): allocation costs as the server has them.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const TENANT: TenantId = TenantId(1);
const PAYEES: u128 = 1000;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(format), Some(what)) = (args.next(), args.next()) else {
        eprintln!("usage: validate csv LINES | validate FORMAT FILE");
        std::process::exit(2);
    };
    let format = BatchFormat::parse(&format).expect("a format: csv, jsonl, pain.001, nacha");
    let dir = tempfile::tempdir().unwrap();
    let paycore_store::Opened { store, api } = paycore_store::open(dir.path()).unwrap();
    let (submitter, queue) = channel(64);
    let renderer: paycore_engine::Renderer = Arc::new(|_: &Outcome| (200, Vec::new()));
    let engine = start(
        store,
        Box::new(queue),
        Arc::new(SystemClock),
        renderer,
        EngineMetrics::default(),
        EngineConfig::default(),
    )
    .unwrap();
    let handle = EngineHandle::new(Arc::new(submitter));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let eur = Currency::from_code("EUR").unwrap();
    let ids: Vec<AccountId> = (0..=PAYEES).map(|i| AccountId(1_000 + i)).collect();
    runtime.block_on(async {
        for &id in &ids {
            let open =
                NewAccount { id, currency: eur, overdraft: Overdraft::Unlimited, reference: None, metadata: None };
            let command = Command::CreateAccount(open);
            let reply = handle.submit(Submission { request: Request { tenant: TENANT, command }, idempotency: None });
            assert!(matches!(reply.await, Ok(Reply::Done(Outcome::Account(Ok(_))))));
        }
    });
    let bytes = match (what.parse::<u64>(), format) {
        (Ok(lines), BatchFormat::Csv) => csv(lines, &ids[1..]),
        (Ok(lines), BatchFormat::Pain001) => pain001(lines, ids[0], &ids[1..]),
        (Ok(_), _) => panic!("only csv and pain.001 files are generated"),
        (Err(_), _) => std::fs::read(&what).expect("the file"),
    };
    let name = "batches/validate.in".to_owned();
    let mut sink = api.file_writer(&name).unwrap();
    for chunk in bytes.chunks(1 << 20) {
        sink.write_chunk(chunk).unwrap();
    }
    sink.finish().unwrap();
    let id = BatchId(paycore_ledger::time_ordered(1_700_000_000_000, 1));
    let record =
        BatchRecord { file: Some(name), payer: Some(ids[0].to_string()), ..BatchRecord::new(id, TENANT, format, 1) };
    api.create_batch(&record).unwrap();
    // On a thread of its own, named so that a profile tells validation's threads (the item
    // writer and the parser threads inherit the name) from the file's making.
    let validating = std::thread::Builder::new().name("validating".into());
    let took = std::thread::scope(|scope| {
        let job = validating.spawn_scoped(scope, || {
            let started = Instant::now();
            validate(api.as_ref(), &record, &|| 2, &AtomicBool::new(false)).unwrap();
            started.elapsed()
        });
        job.unwrap().join().unwrap()
    });
    let batch = api.batch(TENANT, id).unwrap().unwrap();
    println!(
        "{:?}: {} items, {} invalid, validated in {:.3} s",
        batch.status,
        batch.total,
        batch.invalid,
        took.as_secs_f64()
    );
    drop(handle);
    engine.join().unwrap();
}

/// The bench's pain.001.001.09 (`crates/bench/src/batch.rs`): blocks of 10 000 transactions.
fn pain001(lines: u64, payer: AccountId, payees: &[AccountId]) -> Vec<u8> {
    let mut next = lcg();
    let amounts: Vec<u64> = (0..lines).map(|_| 1 + next(100_000)).collect();
    let decimal = |cents: u64| format!("{}.{:02}", cents / 100, cents % 100);
    let total: u64 = amounts.iter().sum();
    let mut x = String::with_capacity(usize::try_from(lines).unwrap_or(0) * 360 + 1024);
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str("<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.001.001.09\">\n<CstmrCdtTrfInitn>\n");
    let _ = writeln!(
        x,
        "<GrpHdr><MsgId>BENCH-1</MsgId><CreDtTm>2026-11-24T10:00:00</CreDtTm><NbOfTxs>{lines}</NbOfTxs>\
         <CtrlSum>{}</CtrlSum><InitgPty><Nm>paycore bench</Nm></InitgPty></GrpHdr>",
        decimal(total)
    );
    for (block, chunk) in amounts.chunks(10_000).enumerate() {
        let sum: u64 = chunk.iter().sum();
        let _ = writeln!(
            x,
            "<PmtInf><PmtInfId>BENCH-{block}</PmtInfId><PmtMtd>TRF</PmtMtd><NbOfTxs>{}</NbOfTxs>\
             <CtrlSum>{}</CtrlSum><ReqdExctnDt><Dt>2026-11-25</Dt></ReqdExctnDt><Dbtr><Nm>paycore bench</Nm></Dbtr>\
             <DbtrAcct><Id><Othr><Id>{payer}</Id></Othr></Id></DbtrAcct>\
             <DbtrAgt><FinInstnId><BICFI>DEUTDEFFXXX</BICFI></FinInstnId></DbtrAgt>",
            chunk.len(),
            decimal(sum)
        );
        for (i, cents) in chunk.iter().enumerate() {
            let n = block * 10_000 + i;
            let payee = payees[usize::try_from(next(payees.len() as u64)).unwrap()];
            let _ = writeln!(
                x,
                "  <CdtTrfTxInf><PmtId><EndToEndId>E2E-{n}</EndToEndId></PmtId>\
                 <Amt><InstdAmt Ccy=\"EUR\">{}</InstdAmt></Amt><Cdtr><Nm>Payee {n}</Nm></Cdtr>\
                 <CdtrAcct><Id><Othr><Id>{payee}</Id></Othr></Id></CdtrAcct><RmtInf><Ustrd>Invoice {n}</Ustrd></RmtInf>\
                 </CdtTrfTxInf>",
                decimal(*cents)
            );
        }
        x.push_str("</PmtInf>\n");
    }
    x.push_str("</CstmrCdtTrfInitn>\n</Document>\n");
    x.into_bytes()
}

/// A small pseudo-random generator: `next(n)` is below `n`.
fn lcg() -> impl FnMut(u64) -> u64 {
    let mut state: u64 = 6000;
    move |n: u64| {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n
    }
}

/// The bench's CSV (`crates/bench/src/batch.rs`): a row per line to a pseudo-random payee.
fn csv(lines: u64, payees: &[AccountId]) -> Vec<u8> {
    let mut next = lcg();
    let mut s = String::with_capacity(usize::try_from(lines).unwrap_or(0) * 64);
    s.push_str("payee,amount,currency,reference\n");
    for line in 0..lines {
        let payee = payees[usize::try_from(next(payees.len() as u64)).unwrap()];
        let cents = 1 + next(100_000);
        let _ = writeln!(s, "{payee},{}.{:02},EUR,inv-{line}", cents / 100, cents % 100);
    }
    s.into_bytes()
}
