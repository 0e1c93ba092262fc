//! Classifier throughput on a realistic mixed log, in lines per second on one core.
//!
//! The log is built from the real fixture lines (`tests/fixtures/lines/`): about nine lines
//! in ten are `none` (start-up and reload notices, 404s, client closes, FastCGI stderr, php-fpm
//! notices, continuation lines), the rest spread over every cause. It measures; it does not
//! pass or fail. Run: `cargo bench -p gatemend-agent --bench classify`.

// A benchmark reports a broken fixture by panicking.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use gatemend_agent::detect::classify;
use gatemend_proto::v1::Cause;

const LINES: usize = 1_000_000;
const NONE_PER_CAUSE_LINE: usize = 9;
const ROUNDS: usize = 7;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lines");
    let mut none = Vec::new();
    let mut causes = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read(path).unwrap();
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            if classify(line).cause == Cause::None {
                none.push(line.to_vec());
            } else {
                causes.push(line.to_vec());
            }
        }
    }
    // Interleave deterministically: nine `none` lines, then one cause line, cycling through both.
    let mut log: Vec<&[u8]> = Vec::with_capacity(LINES);
    let (mut n, mut c) = (0, 0);
    while log.len() < LINES {
        for _ in 0..NONE_PER_CAUSE_LINE {
            log.push(&none[n % none.len()]);
            n += 1;
        }
        log.push(&causes[c % causes.len()]);
        c += 1;
    }
    log.truncate(LINES);
    let bytes: usize = log.iter().map(|l| l.len() + 1).sum();

    let mut rates = Vec::with_capacity(ROUNDS);
    let mut matched = 0usize;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        matched = 0;
        for line in &log {
            if black_box(classify(black_box(line))).cause != Cause::None {
                matched += 1;
            }
        }
        rates.push(LINES as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[ROUNDS / 2];
    println!(
        "classify: {LINES} lines ({:.1} MB, {} distinct none + {} distinct cause lines, {matched} matched), \
         median {:.0} lines/s ({:.0} MB/s), best {:.0} lines/s over {ROUNDS} rounds",
        bytes as f64 / 1e6,
        none.len(),
        causes.len(),
        median,
        median * bytes as f64 / LINES as f64 / 1e6,
        rates[ROUNDS - 1],
    );
}
