//! Scenario 4: batch files. A 100 000 and a 1 000 000-item payment file, CSV and ISO 20022
//! pain.001, from upload (`POST /v1/batches?format=…`) to report ready (`GET /v1/batches/{id}`
//! polled with backoff until `completed`, then `GET /v1/batches/{id}/report`: CSV for the CSV
//! file, pain.002 for the pain.001 file): total time, items/s, and the server's peak RSS
//! (VmHWM). A fresh server per run, so the peak is the run's. Skips cleanly while
//! `POST /v1/batches` answers 404.

use crate::inprocess::size_name;
use crate::report::{Case, Outcome, Run, Target};
use crate::server::{self, id_of, Client};
use crate::stats::rate;
use crate::workload::Rng;
use crate::Config;
use anyhow::bail;
use bytes::Bytes;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

const PAYEES: usize = 1000;
/// Transactions per `PmtInf` block of the generated pain.001 files.
const PAIN001_BLOCK: usize = 10_000;
/// The longest wait between two polls of the batch's status. Each phase's time is seen to
/// within it: at 100 ms (before session 15) a 1M-line file's phases came out in steps of
/// 0.1 s (processing 1.34 or 1.44 s, nothing between) and its total up to 0.1 s late. A poll
/// is one small `GET`, ~100 a second at this bound: nothing beside a batch's own work.
const POLL_MAX: Duration = Duration::from_millis(10);

/// The file formats the scenario uploads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FileFormat {
    Csv,
    Pain001,
}

impl FileFormat {
    fn scenario(self) -> &'static str {
        match self {
            FileFormat::Csv => "4 batch file, CSV",
            FileFormat::Pain001 => "4 batch file, pain.001",
        }
    }

    fn upload_path(self, payer: &str) -> String {
        match self {
            FileFormat::Csv => format!("/v1/batches?format=csv&payer={payer}"),
            // The payer is the file's DbtrAcct.
            FileFormat::Pain001 => "/v1/batches?format=pain.001".to_owned(),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            FileFormat::Csv => "text/csv",
            FileFormat::Pain001 => "application/xml",
        }
    }

    fn report_query(self) -> &'static str {
        match self {
            FileFormat::Csv => "format=csv",
            FileFormat::Pain001 => "format=pain.002",
        }
    }

    /// Counts the items of the report as its bytes arrive: [`ReportCount`].
    fn report_count(self) -> ReportCount {
        ReportCount { format: self, lines: 0, items: 0, bytes: 0, partial: Vec::new() }
    }
    fn file(self, lines: u64, payer: &str, payees: &[String], seed: u64) -> Bytes {
        match self {
            FileFormat::Csv => csv(lines, payees, seed),
            FileFormat::Pain001 => pain001(lines, payer, payees, seed),
        }
    }
}

fn csv(lines: u64, payees: &[String], seed: u64) -> Bytes {
    let mut rng = Rng::new(seed);
    let mut s = String::with_capacity(usize::try_from(lines).unwrap_or(0) * 64);
    s.push_str("payee,amount,currency,reference\n");
    for line in 0..lines {
        let payee = &payees[rng.below(payees.len())];
        let cents = 1 + rng.below(100_000);
        let _ = writeln!(s, "{payee},{}.{:02},EUR,inv-{line}", cents / 100, cents % 100);
    }
    Bytes::from(s)
}

/// A pain.001.001.09 credit transfer initiation: blocks of [`PAIN001_BLOCK`] transactions from
/// `payer`, each to a random payee (named by account id in `Othr/Id`) with an end-to-end id,
/// a creditor name and unstructured remittance text, as a payroll or supplier run has.
fn pain001(lines: u64, payer: &str, payees: &[String], seed: u64) -> Bytes {
    let mut rng = Rng::new(seed);
    let amounts: Vec<u64> = (0..lines).map(|_| 1 + rng.below(100_000) as u64).collect();
    let decimal = |cents: u64| format!("{}.{:02}", cents / 100, cents % 100);
    let total: u64 = amounts.iter().sum();
    let mut x = String::with_capacity(usize::try_from(lines).unwrap_or(0) * 360 + 1024);
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str("<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.001.001.09\">\n<CstmrCdtTrfInitn>\n");
    let _ = writeln!(
        x,
        "<GrpHdr><MsgId>BENCH-{seed}</MsgId><CreDtTm>2026-11-24T10:00:00</CreDtTm><NbOfTxs>{lines}</NbOfTxs>\
         <CtrlSum>{}</CtrlSum><InitgPty><Nm>paycore bench</Nm></InitgPty></GrpHdr>",
        decimal(total)
    );
    for (block, chunk) in amounts.chunks(PAIN001_BLOCK).enumerate() {
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
            let n = block * PAIN001_BLOCK + i;
            let payee = &payees[rng.below(payees.len())];
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
    Bytes::from(x)
}

enum Ended {
    Done(Run),
    /// The endpoint does not exist (yet).
    NotFound(String),
}

/// The items of a report, counted as its bytes arrive: CSV lines after the header, pain.002
/// `TxInfAndSts` elements (one a line: the writer indents, so a line is compared whole, which
/// is cheaper than a byte-window scan of the 280 MB report). A line cut between two frames is
/// kept until its end arrives.
struct ReportCount {
    format: FileFormat,
    /// Lines ended so far (CSV), and the elements counted (pain.002).
    lines: u64,
    items: u64,
    bytes: u64,
    /// The pain.002 line begun in an earlier frame.
    partial: Vec<u8>,
}

impl ReportCount {
    /// Counts as fast as the report arrives (memchr's vector search for the line ends: a
    /// search a byte at a time took 0.1 s of the pain.002 report phase's 0.3 s here).
    fn feed(&mut self, bytes: &[u8]) {
        self.bytes += bytes.len() as u64;
        if self.format == FileFormat::Csv {
            self.lines += memchr::memchr_iter(b'\n', bytes).count() as u64;
            return;
        }
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', bytes) {
            let line = &bytes[start..end];
            if self.partial.is_empty() {
                self.pain002_line(line);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.pain002_line(&whole);
            }
            start = end + 1;
        }
        self.partial.extend_from_slice(&bytes[start..]);
    }

    fn pain002_line(&mut self, line: &[u8]) {
        if line.trim_ascii() == b"<TxInfAndSts>" {
            self.items += 1;
        }
    }

    /// The items, and the report's bytes.
    fn finish(mut self) -> (u64, u64) {
        match self.format {
            FileFormat::Csv => (self.lines.saturating_sub(1), self.bytes),
            FileFormat::Pain001 => {
                let last = std::mem::take(&mut self.partial);
                self.pain002_line(&last);
                (self.items, self.bytes)
            }
        }
    }
}

async fn upload_to_report(
    client: &mut Client,
    format: FileFormat,
    payer: &str,
    file: Bytes,
    lines: u64,
) -> anyhow::Result<Ended> {
    // An empty upload first: a missing endpoint answers 404 (and a server may close the
    // connection before reading a large body it will not take).
    let path = format.upload_path(payer);
    let (status, body) = client.post_as(&path, Bytes::new(), format.content_type()).await?;
    if status.as_u16() == 404 {
        return Ok(Ended::NotFound(format!(
            "POST /v1/batches answers 404 ({})",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )));
    }
    let started = Instant::now();
    let (status, body) = client.post_as(&path, file, format.content_type()).await?;
    if !status.is_success() {
        bail!("POST /v1/batches: {status} {}", String::from_utf8_lossy(&body[..body.len().min(300)]));
    }
    let uploaded = started.elapsed();
    let id = id_of(&body)?;
    let mut wait = Duration::from_millis(2);
    // When the batch was first seen past validation, and completed (to within a poll).
    let mut validated = None;
    let processed;
    loop {
        let (status, body) = client.get(&format!("/v1/batches/{id}")).await?;
        if !status.is_success() {
            bail!("GET /v1/batches/{id}: {status} {}", String::from_utf8_lossy(&body));
        }
        let value: serde_json::Value = serde_json::from_slice(&body)?;
        let state = value.get("status").and_then(|s| s.as_str());
        if validated.is_none() && state != Some("validating") {
            validated = Some(started.elapsed());
        }
        match state {
            Some("completed") => {
                processed = started.elapsed();
                break;
            }
            Some("failed" | "rejected" | "cancelled") => bail!("the batch ended {}", String::from_utf8_lossy(&body)),
            _ => {}
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the batch did not complete within 10 minutes");
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 3 / 2).min(POLL_MAX);
    }
    let mut count = format.report_count();
    let path = format!("/v1/batches/{id}/report?{}", format.report_query());
    let (status, error) = client.get_streamed(&path, |bytes| count.feed(bytes)).await?;
    if !status.is_success() {
        bail!("GET /v1/batches/{id}/report: {status} {}", String::from_utf8_lossy(&error[..error.len().min(300)]));
    }
    let total = started.elapsed();
    let validated = validated.unwrap_or(processed);
    let (rows, report_bytes) = count.finish();
    if rows != lines {
        bail!("the report lists {rows} items for {lines}");
    }
    Ok(Ended::Done(Run {
        value: rate(lines, total),
        latency: None,
        extra: vec![
            ("total s", total.as_secs_f64()),
            ("upload s", uploaded.as_secs_f64()),
            ("validate s", (validated - uploaded).as_secs_f64()),
            ("process s", (processed - validated).as_secs_f64()),
            ("report s", (total - processed).as_secs_f64()),
            ("report MB", report_bytes as f64 / 1e6),
        ],
    }))
}

/// One run on a fresh server: its lines/s, total time and peak RSS.
fn one_run(cfg: &Config, format: FileFormat, lines: u64, seed: u64) -> anyhow::Result<Result<Run, String>> {
    let dir = tempfile::tempdir()?;
    let server = match server::available(&cfg.root, &dir.path().join("data")) {
        Ok(s) => s,
        Err(reason) => return Ok(Err(reason)),
    };
    let rt = server::client_runtime()?;
    let addr = server.addr;
    let ended = rt.block_on(async {
        let accounts = server::open_accounts(addr, PAYEES + 1).await?;
        let file = format.file(lines, &accounts[0], &accounts[1..], seed);
        let mut client = Client::connect(addr).await?;
        upload_to_report(&mut client, format, &accounts[0], file, lines).await
    })?;
    let peak_mb = server.peak_rss_kb().unwrap_or(0) as f64 / 1024.0;
    server.stop();
    Ok(match ended {
        Ended::Done(mut run) => {
            run.extra.push(("peak RSS MB", peak_mb));
            Ok(run)
        }
        Ended::NotFound(reason) => Err(reason),
    })
}

pub fn run(cfg: &Config) -> Vec<Outcome> {
    let mut out = Vec::new();
    for format in [FileFormat::Csv, FileFormat::Pain001] {
        out.extend(run_format(cfg, format));
    }
    out
}

fn run_format(cfg: &Config, format: FileFormat) -> Vec<Outcome> {
    let scenario = format.scenario();
    let mut out = Vec::new();
    let mut totals: Vec<(u64, f64)> = Vec::new();
    for &lines in &cfg.batch_sizes {
        let name = format!("{} items, upload to report", size_name(lines));
        let mut runs = Vec::new();
        let mut skipped = None;
        for i in 0..cfg.runs {
            match one_run(cfg, format, lines, 6000 + i as u64) {
                Ok(Ok(r)) => {
                    eprintln!(
                        "  {scenario} {} run {}/{}: {} items/s",
                        size_name(lines),
                        i + 1,
                        cfg.runs,
                        crate::report::number(r.value)
                    );
                    runs.push(r);
                }
                Ok(Err(reason)) => {
                    skipped = Some(reason);
                    break;
                }
                Err(e) => {
                    skipped = Some(format!("FAILED: {e:#}"));
                    break;
                }
            }
        }
        if let Some(reason) = skipped {
            eprintln!("  skipped: {reason}");
            out.push(Outcome::Skipped { scenario: scenario.into(), name, reason });
            continue;
        }
        let mut case = Case::new(scenario, name, "items/s", &runs);
        let total = case.extra.iter().find(|(l, _)| *l == "total s").map_or(f64::NAN, |(_, s)| s.median);
        totals.push((lines, total));
        if lines == 1_000_000 && format == FileFormat::Csv {
            case = case.target(Target::AtLeast(200_000.0)).note("target: ≤ 5 s total, peak RSS ≤ 300 MB");
        }
        out.push(Outcome::Measured(case));
    }
    if let [(small, t_small), .., (large, t_large)] = totals[..] {
        if large > small {
            eprintln!(
                "  {scenario} time ratio {}→{}: {:.2}× for {}× the items",
                size_name(small),
                size_name(large),
                t_large / t_small,
                large / small
            );
            if let Some(Outcome::Measured(last)) = out.last_mut() {
                last.notes.push(format!(
                    "time {}× that of {} for {}× the items (target ≤ 10.5×)",
                    crate::report::number(t_large / t_small),
                    size_name(small),
                    large / small
                ));
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn count(format: FileFormat, frames: &[&[u8]]) -> (u64, u64) {
        let mut count = format.report_count();
        for frame in frames {
            count.feed(frame);
        }
        count.finish()
    }

    /// However the report is cut into frames, the count is the same as for the whole report.
    #[test]
    fn a_report_is_counted_the_same_whatever_its_frames() {
        let pain002: &[u8] = b"<Document>\n  <TxInfAndSts>\n    <StsId>1</StsId>\n  </TxInfAndSts>\n  <TxInfAndSts>\n\
            <TxInfAndSts>x</TxInfAndSts>\n<TxInfAndSts>";
        let csv: &[u8] = b"line,status\n1,ok\n2,failed\n3,ok";
        for (format, report, items) in [(FileFormat::Pain001, pain002, 3), (FileFormat::Csv, csv, 2)] {
            assert_eq!(count(format, &[report]), (items, report.len() as u64));
            for cut in 0..=report.len() {
                assert_eq!(
                    count(format, &[&report[..cut], &report[cut..]]),
                    (items, report.len() as u64),
                    "cut at {cut}"
                );
                for second in cut..=report.len() {
                    let frames = [&report[..cut], &report[cut..second], &report[second..]];
                    assert_eq!(count(format, &frames), (items, report.len() as u64), "cuts at {cut}, {second}");
                }
            }
        }
    }
}
