//! Tailer latency and throughput on a real file through real inotify.
//!
//! Latency: a writer thread appends error-log lines (a real fixture line, about 250 bytes,
//! each carrying the time it was written) at a steady rate, one `write` per line as nginx does;
//! the time from the `write` to the line arriving on the tailer's channel is recorded, p50/p99/
//! max per rate. Throughput: a million lines appended in 64 KiB writes as fast as the writer
//! can, timed from the first write to the last line received. It measures; it does not pass
//! or fail. Run: `cargo bench -p gatemend-agent --bench tail`.

// A benchmark reports a broken setup by panicking.
#![allow(clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use gatemend_agent::detect::{StartAt, Tailer};
use tokio::sync::mpsc;

/// (lines per second, seconds) for the latency runs.
const RATES: &[(u64, u64)] = &[(100, 5), (1_000, 5), (10_000, 3)];
const THROUGHPUT_LINES: usize = 1_000_000;

fn main() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lines/fpm_socket_missing.log");
    let sample = std::fs::read_to_string(fixture).unwrap();
    let sample = sample
        .lines()
        .find(|l| l.contains("[crit]"))
        .unwrap()
        .to_owned();

    for &(rate, seconds) in RATES {
        latency(&sample, rate, seconds);
    }
    throughput(&sample);
}

fn latency(sample: &str, rate: u64, seconds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    let mut writer = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let (tx, mut rx) = mpsc::channel(1024);
    let tailer = Tailer::spawn(vec![log.clone()], StartAt::End, tx).unwrap();
    let base = Instant::now();
    let count = rate * seconds;
    let sample = sample.to_owned();
    let writer_thread = std::thread::spawn(move || {
        let period = Duration::from_nanos(1_000_000_000 / rate);
        let start = Instant::now();
        for i in 0..count {
            let due = start + period * u32::try_from(i).unwrap();
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            // The write time goes in the line, measured just before the write call.
            let written = base.elapsed().as_nanos();
            writer
                .write_all(format!("{written} {sample}\n").as_bytes())
                .unwrap();
        }
    });
    let mut to_read = Vec::with_capacity(count as usize);
    let mut to_receive = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let line = rx.blocking_recv().unwrap();
        let received = base.elapsed().as_nanos();
        let text = std::str::from_utf8(&line.bytes).unwrap();
        let written: u128 = text.split(' ').next().unwrap().parse().unwrap();
        let read = line.read_at.duration_since(base).as_nanos();
        to_read.push(read.saturating_sub(written));
        to_receive.push(received.saturating_sub(written));
    }
    writer_thread.join().unwrap();
    assert_eq!(tailer.dropped(), 0);
    println!(
        "tail latency at {rate} lines/s for {seconds} s ({count} lines): write->received p50 {} p99 {} max {}; write->read p50 {} p99 {}",
        micros(&mut to_receive, 0.50),
        micros(&mut to_receive, 0.99),
        micros(&mut to_receive, 1.0),
        micros(&mut to_read, 0.50),
        micros(&mut to_read, 0.99),
    );
}

fn throughput(sample: &str) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut writer = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let (tx, mut rx) = mpsc::channel(4096);
    let tailer = Tailer::spawn(vec![log.clone()], StartAt::End, tx).unwrap();
    let line = format!("{sample}\n");
    let per_chunk = (64 * 1024) / line.len();
    let chunk = line.repeat(per_chunk);
    let bytes = line.len() * THROUGHPUT_LINES;
    let start = Instant::now();
    let writer_thread = std::thread::spawn(move || {
        let mut left = THROUGHPUT_LINES;
        while left > 0 {
            let n = left.min(per_chunk);
            writer
                .write_all(&chunk.as_bytes()[..n * line.len()])
                .unwrap();
            left -= n;
        }
    });
    for _ in 0..THROUGHPUT_LINES {
        rx.blocking_recv().unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    writer_thread.join().unwrap();
    assert_eq!(tailer.dropped(), 0);
    println!(
        "tail throughput: {THROUGHPUT_LINES} lines ({:.0} MB) in {elapsed:.2} s: {:.0} lines/s ({:.0} MB/s), written in 64 KiB appends, received on one channel",
        bytes as f64 / 1e6,
        THROUGHPUT_LINES as f64 / elapsed,
        bytes as f64 / elapsed / 1e6,
    );
}

/// The `q` quantile of `values` (nanoseconds) in microseconds, as text.
fn micros(values: &mut [u128], q: f64) -> String {
    values.sort_unstable();
    let index = ((values.len() as f64 - 1.0) * q).round() as usize;
    format!("{:.0} us", values[index] as f64 / 1e3)
}
