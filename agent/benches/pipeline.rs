//! Time from a line appended to an error log to its finding leaving the pipeline (the moment
//! `pipeline::watch` hands it to the link), p50 and p99: the tailer (inotify), the
//! classifier, a probe refresh, diagnosis and aggregation, as `gatemend-agent run` runs them.
//!
//! Each sample appends one `connect() failed (111: Connection refused)` line naming an upstream
//! port no earlier line named, so each is a new finding (sent at once, not batched), then waits
//! for it. The probes are this machine's (no nginx or php-fpm is needed: their absence is a
//! probe result like any other).
//!
//! `cargo bench -p gatemend-agent --bench pipeline` (`-- N` for N samples, default 500).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::time::{Duration, Instant};

use gatemend_agent::pipeline::{Settings, watch};
use gatemend_agent::probe::snapshot::Sources;
use tokio::sync::mpsc;

fn main() {
    let samples: usize = std::env::args()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(500);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    std::fs::write(&log, b"").unwrap();
    let settings = Settings {
        host: "bench".into(),
        sources: Sources {
            nginx: dir.path().join("no-nginx"),
            root: dir.path().to_path_buf(),
            ..Sources::default()
        },
        extra_logs: vec![log.clone()],
        window: Duration::from_secs(900),
        quiet: Duration::from_secs(3600),
        review: Duration::from_secs(3600),
        utc_offset_secs: 0,
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut latencies = runtime.block_on(async {
        let (tx, mut findings) = mpsc::channel(1_024);
        let systemd = gatemend_agent::probe::systemd::Systemd::system().await.ok();
        tokio::spawn(watch(settings, systemd, tx));
        // Let the tailer start watching.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        let mut latencies = Vec::with_capacity(samples);
        for i in 0..samples {
            let port = 10_000 + i;
            let line = format!(
                "2026/11/21 01:01:15 [error] 110#110: *{i} connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: _, request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:{port}/\", host: \"x\"\n"
            );
            let start = Instant::now();
            file.write_all(line.as_bytes()).unwrap();
            let want = format!("127.0.0.1:{port}");
            loop {
                let f = tokio::time::timeout(Duration::from_secs(10), findings.recv())
                    .await
                    .expect("a finding within 10 s")
                    .expect("the pipeline runs");
                if f.upstream == want {
                    break;
                }
            }
            latencies.push(start.elapsed());
            // Spread the samples: a burst would measure the queue, not the path.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        latencies
    });
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "line appended -> finding emitted, {samples} samples: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3,
    );
}
