//! Times a pain.001 file parsed whole by one thread against the same file cut in two parts
//! parsed by two threads (`find_cut`, `parse_first_part`, `parse_second_part`,
//! `join_parts`): the parsers alone, no checks against a store and no item writer
//! (`target/release/examples/two_parts FILE`; see `crates/bench/NOTES.md`).

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::float_arithmetic)] // CPU seconds and ratios of timings, never money

use paycore_formats::{find_cut, join_parts, parse, parse_first_part, parse_second_part, Format, ParseOptions};
use std::io::BufReader;
use std::time::Instant;

/// CPU seconds (user and system) of the calling thread, or of the process, from `/proc`.
fn cpu(what: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{what}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let path = std::env::args().nth(1).expect("usage: two_parts FILE");
    let open = || BufReader::with_capacity(256 * 1024, std::fs::File::open(&path).expect("the file"));
    let size = std::fs::metadata(&path).expect("the file").len();
    for _ in 0..2 {
        let (started, cpu_before) = (Instant::now(), cpu("self"));
        let mut records = 0u64;
        let summary = parse(Format::Pain001, open(), &ParseOptions::default(), &mut |_| records += 1).unwrap();
        println!(
            "whole: {records} records, {} valid, {:?}, {:.2} s of CPU",
            summary.items,
            started.elapsed(),
            cpu("self") - cpu_before
        );

        let (started, cpu_before) = (Instant::now(), cpu("self"));
        let mut rest = open();
        let cut = find_cut(&mut rest, size).unwrap().expect("a cut");
        let cut_at = started.elapsed();
        let (mut first_records, mut second_records) = (0u64, 0u64);
        let (first, second) = std::thread::scope(|scope| {
            let cut = &cut;
            let second = scope.spawn(|| {
                let before = cpu("thread-self");
                let part = parse_second_part(cut, rest, &mut |_| second_records += 1);
                (part, cpu("thread-self") - before)
            });
            let before = cpu("thread-self");
            let first = parse_first_part(cut, open(), &mut |_| first_records += 1);
            let first_cpu = cpu("thread-self") - before;
            let (second, second_cpu) = second.join().unwrap();
            println!("  first part {first_cpu:.2} s of CPU, second part {second_cpu:.2} s");
            (first, second)
        });
        let summary = join_parts(&cut, first, second).expect("joined").unwrap();
        println!(
            "in two: {} + {} records, {} valid, cut found in {cut_at:?}, {:?}, {:.2} s of CPU",
            first_records,
            second_records,
            summary.items,
            started.elapsed(),
            cpu("self") - cpu_before
        );
    }
}
