//! Every fixture of real log lines (`fixtures/lines/NAME.log`) classifies to exactly what
//! `fixtures/classified/NAME.jsonl` holds, one JSON object per line.
//!
//! After a deliberate change of the output, regenerate with
//! `GATEMEND_UPDATE_FIXTURES=1 cargo test -p gatemend-agent --test classify_fixtures` and read
//! the diff before committing it.

// A test reports a failure by panicking; unwrap is how these helpers do it.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use gatemend_agent::detect::classify;

fn render(input: &[u8]) -> String {
    let mut out = String::new();
    // Lines end at `\n` only, as `gatemend-agent classify` reads them.
    let body = input.strip_suffix(b"\n").unwrap_or(input);
    if input.is_empty() {
        return out;
    }
    for line in body.split(|&b| b == b'\n') {
        out.push_str(&serde_json::to_string(&classify(line)).unwrap());
        out.push('\n');
    }
    out
}

#[test]
fn every_fixture_classifies_as_recorded() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let update = std::env::var_os("GATEMEND_UPDATE_FIXTURES").is_some();
    let mut seen = 0;
    let mut failures = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(root.join("lines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for input in entries {
        let name = input.file_stem().unwrap().to_string_lossy().into_owned();
        let expected_path = root.join("classified").join(format!("{name}.jsonl"));
        let actual = render(&fs::read(&input).unwrap());
        if update {
            fs::write(&expected_path, &actual).unwrap();
        }
        let expected = fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        for (n, (a, e)) in actual.lines().zip(expected.lines()).enumerate() {
            if a != e {
                failures.push(format!(
                    "{name}.log:{}:\n  got      {a}\n  expected {e}",
                    n + 1
                ));
            }
        }
        if actual.lines().count() != expected.lines().count() {
            failures.push(format!("{name}.log: line counts differ"));
        }
        seen += 1;
    }
    assert!(seen >= 20, "only {seen} fixtures found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_fixtures_cover_every_cause_of_the_taxonomy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/classified");
    let mut all = String::new();
    for entry in fs::read_dir(root).unwrap() {
        all.push_str(&fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    for cause in gatemend_proto::v1::Cause::ALL {
        let needle = format!("{{\"cause\":\"{cause}\"");
        assert!(all.contains(&needle), "no fixture line is {cause}");
    }
}
