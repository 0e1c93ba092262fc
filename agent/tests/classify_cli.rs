//! `gatemend-agent classify` as a user runs it: the real binary, a fixture on stdin.

// A test reports a failure by panicking; unwrap is how these helpers do it.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

#[track_caller]
fn classify(input: &[u8]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatemend-agent"))
        .arg("classify")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    // Written from a thread so a large input cannot deadlock against a full stdout pipe.
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_fixture_on_stdin_gives_its_recorded_json() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for name in ["no_live", "fpm_overloaded", "nginx_t", "php_fpm"] {
        let input = std::fs::read(root.join(format!("lines/{name}.log"))).unwrap();
        let expected =
            std::fs::read_to_string(root.join(format!("classified/{name}.jsonl"))).unwrap();
        assert_eq!(classify(&input), expected, "{name}");
    }
}

#[test]
fn one_output_line_per_input_line_whatever_the_bytes() {
    let input = b"\n\xff\xfe not utf-8\r\nno newline at the end";
    assert_eq!(classify(input), "{\"cause\":\"none\"}\n".repeat(3));
    assert_eq!(classify(b""), "");
}

#[test]
fn the_issue_s_example_shape() {
    let line = b"2026/04/04 08:12:33 [error] 7#7: *1 connect() failed (111: Connection refused) while connecting to upstream, client: 10.0.0.5, server: shop.example, request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:3000/\", host: \"shop.example\"\n";
    assert_eq!(
        classify(line),
        "{\"cause\":\"upstream_refused\",\"upstream\":\"127.0.0.1:3000\",\"errno\":111,\"phase\":\"connecting\",\"client\":\"10.0.0.5\",\"server\":\"shop.example\",\"request\":\"GET / HTTP/1.1\",\"host\":\"shop.example\",\"level\":\"error\",\"time\":\"2026/04/04 08:12:33\",\"pid\":7,\"connection\":1}\n"
    );
}

#[test]
fn invalid_utf8_in_a_field_is_replaced_not_refused() {
    let line = b"2026/04/04 08:12:33 [error] 7#7: *1 connect() failed (111: Connection refused) while connecting to upstream, client: 10.0.0.5, server: s, request: \"GET /\xff HTTP/1.1\", upstream: \"http://127.0.0.1:3000/\", host: \"s\"\n";
    let out = classify(line);
    assert!(
        out.contains("\"request\":\"GET /\u{fffd} HTTP/1.1\""),
        "{out}"
    );
}
