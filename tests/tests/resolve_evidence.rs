//! Issue 15, the agent's side, on a real host: a finding is resolved only with evidence that
//! the site works again, never because its lines went quiet.
//!
//! A proxied backend that no unit is known for (started by hand, after the agent) is
//! SIGKILLed while requests flow. nginx's upstream has its two peers marked down after one
//! failure each, so nginx logs `no live upstreams` instead of the refused connects for
//! `fail_timeout`: the refused finding's lines fall quiet while every request still gets a
//! 502 (what the issue saw resolve 4 s after the fault). The agent must keep its findings open
//! while the 502s continue, and resolve them, naming the evidence, once the backend is back
//! and 200s flow.
//!
//! The binaries must be built first: `cargo build --workspace --bins`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use gatemend_tests::stack::{AGENT_UNIT, LogLine, Stack, StackSpec};
use gatemend_tests::testbed::{Host, backend, http};

/// Two peers at the backend's one address, so that nginx can mark them both down (a single
/// peer never is) and answer `no live upstreams` without trying it for 10 s.
const SITE: &str = "upstream gm_backend {
    server 127.0.0.1:3000 max_fails=1 fail_timeout=10s;
    server 127.0.0.1:3000 max_fails=1 fail_timeout=10s;
}
server {
    listen 8080;
    location / { proxy_pass http://gm_backend; }
}
";

/// The agent's own log at info, in the journal (the shipped unit logs warnings only).
const AGENT_LOG_DROP_IN: &str = "[Service]\nEnvironment=RUST_LOG=gatemend_agent=info NO_COLOR=1\n";

/// Requests to the proxied site every 25 ms; each status (0 for no answer) with when it came.
struct Traffic {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(SystemTime, u16)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn to(addr: SocketAddr) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (flag, log) = (Arc::clone(&stop), Arc::clone(&seen));
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let status = http::get(addr, "/").map_or(0, |r| r.status);
                log.lock().unwrap().push((SystemTime::now(), status));
                std::thread::sleep(Duration::from_millis(25));
            }
        });
        Traffic {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// The first answer with this status after `since`.
    fn first(&self, status: u16, since: SystemTime) -> Option<SystemTime> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .find(|(at, s)| *s == status && *at >= since)
            .map(|(at, _)| *at)
    }

    /// Waits until an answer with `status` comes after `since`.
    #[track_caller]
    fn wait_for(&self, status: u16, since: SystemTime, timeout: Duration) -> SystemTime {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = self.first(status, since) {
                return at;
            }
            assert!(
                Instant::now() < deadline,
                "no {status} within {timeout:?}; the last answers: {:?}",
                self.seen
                    .lock()
                    .unwrap()
                    .iter()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The statuses answered between two times.
    fn between(&self, from: SystemTime, to: SystemTime) -> Vec<u16> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .map(|(_, s)| *s)
            .collect()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The agent's `Finding.` lines, in order (ANSI colour codes removed, should any be there).
fn agent_findings(host: &Host) -> Vec<String> {
    let journal = host
        .sh(&format!("journalctl -u {AGENT_UNIT} -o cat --no-pager"))
        .unwrap_or_default();
    journal
        .lines()
        .map(strip_ansi)
        .filter(|l| LogLine::new(l).says(" Finding. "))
        .collect()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether a finding id is about the backend: its address or its upstream group.
fn about_backend(line: &LogLine<'_>) -> bool {
    line.field("finding")
        .is_some_and(|id| id.contains("127.0.0.1:3000") || id.contains("gm_backend"))
}

/// Starts the backend by hand, outside systemd (no unit serves it); its pid.
fn start_backend(host: &Host) -> u32 {
    let pid = host
        .sh(&format!(
            "setsid python3 {} </dev/null >/dev/null 2>&1 & echo $!",
            backend::SCRIPT_PATH
        ))
        .unwrap();
    pid.trim().parse().unwrap()
}

#[track_caller]
fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_killed_backend_no_unit_serves_stays_unresolved_while_502s_flow_and_resolves_on_200s() {
    let stack = match Stack::start(&StackSpec::shipped(1)) {
        Ok(stack) => stack,
        Err(e) => panic!("{e:#}"),
    };
    let web = &stack.hosts()[0];
    // The agent logs its findings; restarted, it starts before the backend, as in the issue.
    web.sh(&format!("mkdir -p /etc/systemd/system/{AGENT_UNIT}.d"))
        .unwrap();
    web.write(
        &format!("/etc/systemd/system/{AGENT_UNIT}.d/log.conf"),
        AGENT_LOG_DROP_IN,
    )
    .unwrap();
    web.sh(&format!(
        "systemctl daemon-reload && systemctl restart {AGENT_UNIT}"
    ))
    .unwrap();
    wait_until(
        "the agent to watch its logs",
        Duration::from_secs(30),
        || {
            web.sh(&format!("journalctl -u {AGENT_UNIT} -o cat --no-pager"))
                .unwrap_or_default()
                .contains("Watching logs.")
        },
    );
    web.write(backend::SCRIPT_PATH, backend::SCRIPT).unwrap();
    web.write("/etc/nginx/conf.d/gm_backend.conf", SITE)
        .unwrap();
    web.sh("nginx -t && systemctl reload nginx").unwrap();
    let pid = start_backend(web);
    let traffic = Traffic::to(SocketAddr::from((web.host_addr(), 8080)));
    let start = SystemTime::now();
    traffic.wait_for(200, start, Duration::from_secs(30));

    web.exec(&["kill", "-9", &pid.to_string()]).unwrap();
    let killed = SystemTime::now();
    let failing_from = traffic.wait_for(502, killed, Duration::from_secs(30));
    wait_until(
        "the agent's finding on the backend",
        Duration::from_secs(30),
        || {
            agent_findings(web)
                .iter()
                .any(|l| about_backend(&LogLine::new(l)))
        },
    );
    // Longer than the quiet period (3 s) and a review (2 s), several times over, and longer
    // than nginx's fail_timeout, so that the refused finding's lines have fallen quiet.
    std::thread::sleep(Duration::from_secs(25));
    let failing_until = SystemTime::now();
    let statuses = traffic.between(failing_from, failing_until);
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| *s == 502),
        "the site did not fail throughout: {statuses:?}"
    );
    let findings = agent_findings(web);
    let resolved: Vec<&String> = findings
        .iter()
        .filter(|l| LogLine::new(l).field("resolved").as_deref() == Some("true"))
        .collect();
    assert!(
        resolved.is_empty(),
        "resolved while every request got 502:\n{}",
        resolved
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let open: std::collections::BTreeSet<String> = findings
        .iter()
        .filter(|l| about_backend(&LogLine::new(l)))
        .filter_map(|l| LogLine::new(l).field("finding"))
        .collect();
    assert!(!open.is_empty());

    // Back: the same backend started again, and 200s flow once nginx tries its peers again.
    let pid = start_backend(web);
    let back = SystemTime::now();
    let first_200 = traffic.wait_for(200, back, Duration::from_secs(60));
    let resolved_all = || {
        let findings = agent_findings(web);
        open.iter().all(|id| {
            findings.iter().any(|l| {
                let l = LogLine::new(l);
                l.field("finding").as_deref() == Some(id.as_str())
                    && l.field("resolved").as_deref() == Some("true")
            })
        })
    };
    wait_until(
        "every finding on the backend to resolve",
        Duration::from_secs(60),
        resolved_all,
    );
    for line in agent_findings(web) {
        let l = LogLine::new(&line);
        if l.field("resolved").as_deref() != Some("true") {
            continue;
        }
        // Not before the site answered again, and with the evidence named.
        let at = l.time().unwrap();
        assert!(at >= first_200, "resolved before the first 200: {line}");
        let by = l.field("resolved_by").unwrap_or_default();
        assert!(
            by.starts_with("access log: ") || by.contains(" -> ") || by.starts_with("probes: "),
            "no evidence named: {line}"
        );
        if about_backend(&l) {
            // Requests flow through it: the access log's answers are the evidence.
            assert!(by.starts_with("access log: "), "{line}");
            assert!(by.contains(" to /"), "{line}");
        }
    }
    drop(traffic);
    let _ = web.exec(&["kill", "-9", &pid.to_string()]);
}
