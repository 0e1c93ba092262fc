//! The classifier is total: no input makes it panic. Random bytes, every truncation and
//! byte flip of the real fixture lines, and huge lines, from a fixed-seed generator so a
//! failure reproduces.

// A test reports a failure by panicking; unwrap is how these helpers do it.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use gatemend_agent::detect::classify;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn fixture_lines() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lines");
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read(entry.unwrap().path()).unwrap();
        lines.extend(text.split(|&b| b == b'\n').map(<[u8]>::to_vec));
    }
    lines
}

/// Serialising is part of the contract too: every field must be printable as JSON.
fn classify_and_render(line: &[u8]) {
    let c = classify(line);
    serde_json::to_string(&c).unwrap();
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Bytes drawn mostly from the ones the parser looks at, so the random input gets deep.
    const ALPHABET: &[u8] = b"0123456789/ :[]#*()\",.-_abcdefghijklmnopqrstuvwxyzAERWNI\xff\xc3\r";
    for _ in 0..200_000 {
        let len = rng.below(300);
        let line: Vec<u8> = (0..len)
            .map(|_| {
                if rng.below(4) == 0 {
                    rng.next() as u8
                } else {
                    ALPHABET[rng.below(ALPHABET.len())]
                }
            })
            .collect();
        classify_and_render(&line);
    }
}

#[test]
fn every_truncation_and_mutation_of_real_lines_never_panics() {
    let mut rng = Rng(42);
    for line in fixture_lines() {
        for end in 0..=line.len() {
            classify_and_render(&line[..end]);
            classify_and_render(&line[line.len() - end..]);
        }
        for _ in 0..200 {
            let mut mutated = line.clone();
            for _ in 0..1 + rng.below(4) {
                if mutated.is_empty() {
                    break;
                }
                let at = rng.below(mutated.len());
                match rng.below(3) {
                    0 => mutated[at] = rng.next() as u8,
                    1 => {
                        mutated.remove(at);
                    }
                    _ => mutated.insert(at, b"0:(\" ,"[rng.below(6)]),
                }
            }
            classify_and_render(&mutated);
        }
    }
}

#[test]
fn a_one_megabyte_line_is_classified() {
    let prefix = b"2026/11/21 01:02:02 [error] 317#317: *109 upstream timed out (110: Connection timed out) while reading response header from upstream, client: 127.0.0.1, server: fx.test, request: \"GET /";
    let mut line = prefix.to_vec();
    line.resize(1 << 20, b'a');
    let c = classify(&line);
    assert_eq!(c.cause.to_string(), "upstream_read_timeout");
    // Without a closing quote the request runs to the end of the line.
    assert_eq!(
        c.request.map(|r| r.len()),
        Some((1 << 20) - prefix.len() + 5)
    );
    classify_and_render(&vec![b'('; 1 << 20]);
    classify_and_render(&vec![b'1'; 1 << 20]);
    let mut digits = b"2026/11/21 01:02:02 [error] ".to_vec();
    digits.resize(1 << 20, b'9');
    classify_and_render(&digits);
}
