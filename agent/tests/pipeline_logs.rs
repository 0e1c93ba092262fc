//! Which logs the agent reads, from the real `nginx -T` of a testbed host
//! (fixtures/nginx/debian_default.txt); and a finding resolved by a GET replayed to a server on
//! loopback standing in for nginx.

// Test helpers panic by design: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use gatemend_agent::detect::access::AccessRates;
use gatemend_agent::detect::classify;
use gatemend_agent::diagnose::resolve::{ProbeAnswer, RESOLVED_BY};
use gatemend_agent::diagnose::{self, Aggregator, Probes};
use gatemend_agent::pipeline::{access_logs, log_paths, probe_requests, recovery};
use gatemend_agent::probe::http;
use gatemend_agent::probe::listeners::Listener;
use gatemend_agent::probe::nginx;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn debian() -> Probes {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/nginx/debian_default.txt"
    ))
    .unwrap();
    Probes {
        nginx: Some(nginx::parse(&text)),
        ..Probes::default()
    }
}

#[test]
fn the_error_log_nginx_names_is_tailed_and_its_access_log_counted() {
    let p = debian();
    let root = tempfile::tempdir().unwrap();
    let paths = log_paths(&p, root.path(), &[PathBuf::from("/var/log/extra.log")]);
    assert_eq!(
        paths,
        [
            PathBuf::from("/var/log/nginx/error.log"),
            PathBuf::from("/var/log/extra.log")
        ]
    );
    let access = access_logs(&p);
    assert_eq!(
        access.keys().collect::<Vec<_>>(),
        [&PathBuf::from("/var/log/nginx/access.log")]
    );
}

#[test]
fn without_an_error_log_directive_nginx_default_is_tailed() {
    let root = tempfile::tempdir().unwrap();
    assert_eq!(
        log_paths(&Probes::default(), root.path(), &[]),
        [PathBuf::from("/var/log/nginx/error.log")]
    );
}

#[tokio::test]
async fn a_quiet_finding_is_resolved_by_its_request_replayed_to_nginx_on_loopback() {
    // Stands in for nginx: answers 200 to one request and hands back what it read.
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = server.local_addr().unwrap().port();
    let read = tokio::spawn(async move {
        let (mut conn, _) = server.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0; 1024];
        while !request.ends_with(b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            .await
            .unwrap();
        String::from_utf8(request).unwrap()
    });
    let probes = Probes {
        listeners: vec![Listener {
            addr: format!("0.0.0.0:{port}").parse().unwrap(),
            inode: 1,
            pids: vec![10],
            unit: Some("nginx.service".into()),
            process: Some("nginx".into()),
        }],
        ..Probes::default()
    };
    // A backend no unit is known for refused the request; then nothing more was logged.
    let raw = format!(
        "2026/11/21 01:01:15 [error] 110#110: *5 connect() failed (111: Connection refused) while connecting to upstream, client: 10.77.1.1, server: , request: \"GET /app?session=abc HTTP/1.1\", upstream: \"http://127.0.0.1:3000/app?session=abc\", host: \"10.77.1.2:{port}\""
    );
    let line = classify(raw.as_bytes());
    let d = diagnose::diagnose(&line, &probes).unwrap();
    let mut agg = Aggregator::new("web1", Duration::from_secs(4));
    agg.observe(&line, raw.as_bytes(), &d, 1_000_000);
    let rates = AccessRates::new(60);
    let now = 1_010_000;
    let quiet = |f: &_, r: &_| recovery(f, r, &probes, &rates, None);
    assert!(
        agg.review(now, 0, |_| None, quiet).is_empty(),
        "quiet is not enough"
    );

    let waiting = agg.awaiting_evidence(now, quiet);
    assert_eq!(waiting.len(), 1);
    let (f, r) = &waiting[0];
    let requests = probe_requests(f, r, &probes, &rates);
    assert_eq!(requests.len(), 1, "the Host names the port");
    let request = &requests[0];
    let status = http::get(request).await.unwrap();
    let answer = ProbeAnswer {
        at: now,
        sent: request.describe(),
        outcome: Ok(status),
    };
    let sent = agg.review(
        now,
        0,
        |_| None,
        |f, r| recovery(f, r, &probes, &rates, Some(&answer)),
    );
    assert_eq!(sent.len(), 1);
    assert!(sent[0].resolved);
    assert_eq!(
        sent[0].evidence.probes.get(RESOLVED_BY),
        Some(&format!(
            "GET /app (Host 10.77.1.2:{port}) via 127.0.0.1:{port} -> 200"
        ))
    );
    // The path the log saw, without its query string, with the Host it came with.
    let seen = read.await.unwrap();
    assert!(
        seen.starts_with(&format!("GET /app HTTP/1.0\r\nHost: 10.77.1.2:{port}\r\n")),
        "{seen}"
    );
}
