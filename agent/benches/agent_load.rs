//! The agent process's footprint: `gatemend-agent run` (the release binary) tailing an error
//! log, RSS and CPU while idle, then while the log grows at 10,000 lines/s (a realistic mix:
//! nine lines in ten are not causes — 404s, notices — the tenth are 502 causes on a few
//! upstreams).
//!
//! The agent's controller endpoint is a closed loopback port, so the link keeps retrying and
//! the findings wait in the outbox: the pipeline's cost is what is measured.
//!
//! `cargo bench -p gatemend-agent --bench agent_load`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RATE: u64 = 10_000;
const LOAD_SECS: u64 = 20;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    std::fs::write(&log, b"").unwrap();
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "host: bench\ncontroller:\n  endpoints: [\"http://127.0.0.1:9\"]\n  insecure: true\n\
             outbox:\n  dir: {dir}/outbox\nstate_dir: {dir}/state\nactions:\n  nginx_binary: {dir}/no-nginx\n\
             detect:\n  logs: [\"{log}\"]\n",
            dir = dir.path().display(),
            log = log.display()
        ),
    )
    .unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_gatemend-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = agent.id();

    std::thread::sleep(Duration::from_secs(5));
    let (cpu0, t0) = (cpu_ticks(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let idle_cpu = percent(cpu_ticks(pid) - cpu0, t0.elapsed());
    let idle_rss = status_kb(pid, "VmRSS:");

    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let (cpu1, t1) = (cpu_ticks(pid), Instant::now());
    let mut written = 0u64;
    while t1.elapsed() < Duration::from_secs(LOAD_SECS) {
        // Catch up to the rate in batches of at most 1 ms of lines.
        let due = (t1.elapsed().as_secs_f64() * RATE as f64) as u64;
        let mut batch = String::new();
        while written < due {
            batch.push_str(&line(written));
            written += 1;
        }
        file.write_all(batch.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let load_cpu = percent(cpu_ticks(pid) - cpu1, t1.elapsed());
    let load_rss = status_kb(pid, "VmRSS:");
    let peak_rss = status_kb(pid, "VmHWM:");
    let _ = agent.kill();
    let _ = agent.wait();
    // Proof the lines went through: the findings wait in the outbox.
    let outbox = std::fs::read_dir(dir.path().join("outbox"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(
        outbox > 0,
        "no finding reached the outbox: the agent did not read the log"
    );
    println!("gatemend-agent run, idle 10 s: RSS {idle_rss} kB, CPU {idle_cpu:.1}%");
    println!("outbox entries after the load: {outbox}");
    println!(
        "gatemend-agent run, {RATE} lines/s for {LOAD_SECS} s ({written} lines): RSS {load_rss} kB (peak {peak_rss} kB), CPU {load_cpu:.1}% of one core"
    );
}

fn line(i: u64) -> String {
    match i % 10 {
        0 => format!(
            "2026/11/21 01:01:15 [error] 110#110: *{i} connect() failed (111: Connection refused) while connecting to upstream, client: 10.0.0.{}, server: _, request: \"GET /api HTTP/1.1\", upstream: \"http://127.0.0.1:{}/api\", host: \"x\"\n",
            i % 250,
            3000 + i % 4
        ),
        1..=6 => format!(
            "2026/11/21 01:01:15 [error] 110#110: *{i} open() \"/var/www/html/missing{}.png\" failed (2: No such file or directory), client: 10.0.0.1, server: _, request: \"GET /missing.png HTTP/1.1\", host: \"x\"\n",
            i % 100
        ),
        _ => format!(
            "2026/11/21 01:01:15 [notice] 110#110: *{i} client 10.0.0.1 closed keepalive connection\n"
        ),
    }
}

/// utime + stime of the process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn percent(ticks: u64, wall: Duration) -> f64 {
    // USER_HZ is 100 on Linux.
    ticks as f64 / 100.0 / wall.as_secs_f64() * 100.0
}

fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
