//! Never silent, never noisy (issue 15): whole faults on real hosts with the shipped policies,
//! users' traffic every 25 ms (`GET /index.php` through nginx), and each test asserting from
//! what an operator has: the audit log (its `incident`, `escalated`, `renotified` and
//! `resolved` records), the pages the webhook received, and what the users got.
//!
//! - A killed php-fpm master: one restart, nobody paged, resolved once PHP answers again.
//! - Four kills 15-20 s apart: restarts up to `max_attempts`, then one page, and a sampler that
//!   checks every second that PHP is never down while nothing handles it.
//! - A backend no unit is known for, killed: one page, open while the 502s go on, paged again
//!   after `renotify`, resolved only once it answers again.
//! - The same crash on three hosts at once: one page for the storm.
//!
//! Each test boots its own hosts (the guards remember a host's attempts and a cause's storm:
//! one test's faults would hold another's), and they run one at a time ([`serial`]): the
//! faults are timed against the policy's cooldown, and two tests' hosts on two cores would
//! blur that. The binaries must be built first: `cargo build --workspace --bins`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gatemend_tests::stack::{Stack, StackSpec};
use gatemend_tests::testbed::traffic::Traffic;
use gatemend_tests::testbed::webhook::Webhook;
use gatemend_tests::testbed::{Host, backend, binaries};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
/// The fault the issue names: php-fpm's master process, and only it, SIGKILLed.
const KILL_MASTER: &str = "systemctl kill --kill-whom=main --signal=SIGKILL php8.2-fpm";

/// One test at a time in this file; see the module documentation.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The stack (`hosts` hosts, the policies of `policies` or the shipped ones) with every page
/// going to a webhook receiver.
fn start(hosts: usize, policies: Option<&Path>) -> (Stack, Webhook) {
    let hook = Webhook::start().unwrap();
    let mut spec = StackSpec::shipped(hosts);
    if let Some(dir) = policies {
        spec.policies = dir.to_path_buf();
    }
    spec.controller_args = vec!["--escalate-webhook".into(), hook.url()];
    match Stack::start(&spec) {
        Ok(stack) => (stack, hook),
        Err(e) => panic!("{e:#}"),
    }
}

fn php(host: &Host) -> SocketAddr {
    SocketAddr::from((host.host_addr(), 80))
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `gatemend audit list --json`: every record, oldest first (the same as the stack's, but
/// usable from the sampler's thread, which does not hold the stack).
fn audit(url: &str) -> Vec<Value> {
    let out = Command::new(binaries::path("gatemend").unwrap())
        .args(["audit", "list", "--json", "--db", url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gatemend audit list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn of_kind<'r>(records: &'r [Value], host: &str, kind: &str) -> Vec<&'r Value> {
    records
        .iter()
        .filter(|r| r["host"] == host && r["kind"] == kind)
        .collect()
}

/// One incident as its audit records tell it at one moment.
#[derive(Debug, Clone, Default)]
struct View {
    host: String,
    /// Its latest stage (`incident` records' `to`).
    stage: String,
    /// Findings whose latest revision fails.
    failing: BTreeSet<String>,
    /// Actions dispatched without a result yet.
    in_flight: BTreeSet<String>,
    /// Approvals requested and neither denied, expired nor dispatched.
    approvals: BTreeSet<String>,
    /// `escalated` records: pages sent about it.
    pages: usize,
    renotified: usize,
    resolved_at: Option<i64>,
}

impl View {
    fn open_and_failing(&self) -> bool {
        self.resolved_at.is_none() && !self.failing.is_empty()
    }

    /// The invariant's three handlers: an action in flight, a pending approval, a page.
    fn handled(&self) -> bool {
        !self.in_flight.is_empty() || !self.approvals.is_empty() || self.pages > 0
    }

    fn line(&self, id: &str) -> String {
        format!(
            "{id} [{}] failing {} in flight {} approvals {} pages {}{}",
            self.stage,
            self.failing.len(),
            self.in_flight.len(),
            self.approvals.len(),
            self.pages,
            if self.resolved_at.is_some() {
                " resolved"
            } else {
                ""
            }
        )
    }
}

/// Folds the audit records into incidents, by id.
fn incidents(records: &[Value]) -> BTreeMap<String, View> {
    let mut views: BTreeMap<String, View> = BTreeMap::new();
    for r in records {
        let Some(id) = r["incident"].as_str().filter(|i| !i.is_empty()) else {
            continue;
        };
        let v = views.entry(id.to_owned()).or_default();
        v.host = r["host"].as_str().unwrap_or_default().to_owned();
        let body = &r["body"];
        let text = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
        match r["kind"].as_str().unwrap_or_default() {
            "finding" => {
                if body["resolved"] == true {
                    v.failing.remove(&text("id"));
                } else {
                    v.failing.insert(text("id"));
                }
                if v.stage.is_empty() {
                    "detected".clone_into(&mut v.stage);
                }
            }
            "incident" if body["to"].is_string() => v.stage = text("to"),
            "action_dispatched" => {
                v.in_flight.insert(text("action_id"));
                v.approvals.clear();
            }
            "action_result" | "refused" => {
                v.in_flight.remove(&text("action_id"));
            }
            "approval_requested" => {
                if let Some(a) = body["approval"].as_str() {
                    v.approvals.insert(a.to_owned());
                }
            }
            "denied" | "expired" => {
                v.approvals.remove(&text("approval"));
            }
            "escalated" => v.pages += 1,
            "renotified" => v.renotified += 1,
            "resolved" => {
                v.resolved_at = r["at"].as_i64();
                "resolved".clone_into(&mut v.stage);
            }
            _ => {}
        }
    }
    views
}

/// Checks every second, while `stop` is not set, that whenever every request to `host`'s PHP
/// of the last second failed, an incident of that host in the audit has an action in flight,
/// a pending approval or a page. Returns the timeline it saw, one line a second, and the
/// violations.
///
/// One sample that breaks it is not yet a violation: the agent must see a failing request
/// before anything can handle it, and a sample may fall between the two halves of one
/// decision. Two samples in a row are.
fn sample_invariant(
    audit_url: &str,
    host: &str,
    traffic: &Traffic,
    stop: &AtomicBool,
) -> (Vec<String>, Vec<String>) {
    let started = SystemTime::now();
    let mut last = started;
    let mut timeline = Vec::new();
    let mut violations = Vec::new();
    let mut broken_before = false;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_secs(1));
        let now = SystemTime::now();
        let answers: Vec<_> = traffic
            .since(last)
            .into_iter()
            .filter(|a| a.at < now)
            .collect();
        last = now;
        let down = !answers.is_empty() && answers.iter().all(|a| !a.ok());
        let views = incidents(&audit(audit_url));
        let open: Vec<(&String, &View)> = views
            .iter()
            .filter(|(_, v)| v.host == host && v.open_and_failing())
            .collect();
        let broken = down && !open.iter().any(|(_, v)| v.handled());
        let mut line = format!(
            "+{:>5.1}s {} ({} answers)",
            now.duration_since(started)
                .unwrap_or_default()
                .as_secs_f64(),
            if down { "DOWN" } else { "up  " },
            answers.len()
        );
        for (id, v) in &open {
            let _ = write!(line, " | {}", v.line(id));
        }
        if broken && broken_before {
            violations.push(line.clone());
        }
        broken_before = broken;
        timeline.push(line);
    }
    (timeline, violations)
}

/// Waits until the audit holds what `done` looks for; returns the records.
#[track_caller]
fn wait_audit(stack: &Stack, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let records = audit(&stack.audit_url());
        if done(&records) {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; audit:\n{}",
            dump(&records)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The records, one short line each, for a failing test's message.
fn dump(records: &[Value]) -> String {
    records
        .iter()
        .filter(|r| !matches!(r["kind"].as_str(), Some("host_online" | "policy_reloaded")))
        .map(|r| {
            format!(
                "{} {} {} {} {}",
                r["at"], r["host"], r["incident"], r["kind"], r["body"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_killed_php_fpm_master_is_restarted_once_pages_nobody_and_resolves_once_php_answers() {
    let _one = serial();
    let (stack, hook) = start(1, None);
    let web = &stack.hosts()[0];
    let name = stack.agent_name(0);
    let traffic = Traffic::start(php(web), "/index.php");
    assert!(
        traffic
            .wait_ok_after(SystemTime::now(), Duration::from_secs(10))
            .is_some(),
        "PHP did not answer before the fault"
    );

    let fault = SystemTime::now();
    web.sh(KILL_MASTER).unwrap();
    let records = wait_audit(&stack, "the incident to resolve", |r| {
        !of_kind(r, &name, "resolved").is_empty()
    });
    // A reset logged while php-fpm restarted must not page anyone a little later either.
    std::thread::sleep(Duration::from_secs(5));
    let records = {
        let later = audit(&stack.audit_url());
        assert!(later.len() >= records.len());
        later
    };
    let answers = traffic.stop();
    let all = dump(&records);

    let restarts = of_kind(&records, &name, "action_dispatched");
    assert_eq!(restarts.len(), 1, "one restart:\n{all}");
    assert_eq!(restarts[0]["body"]["kind"], "restart_unit", "{all}");
    assert_eq!(restarts[0]["body"]["unit"], "php8.2-fpm.service", "{all}");
    assert!(of_kind(&records, &name, "escalated").is_empty(), "{all}");
    assert!(
        hook.posts().is_empty(),
        "nobody is paged: {:?}",
        hook.posts()
    );

    // Resolved once, after PHP answered 200 again, with the agent's evidence.
    let resolved = of_kind(&records, &name, "resolved");
    assert_eq!(resolved.len(), 1, "{all}");
    let first_200 = answers
        .iter()
        .filter(|a| a.at > fault)
        .skip_while(|a| a.ok())
        .find(|a| a.ok())
        .unwrap_or_else(|| panic!("PHP never failed or never answered again:\n{all}"));
    assert!(
        resolved[0]["at"].as_i64().unwrap() >= unix_ms(first_200.at),
        "resolved before PHP answered 200 again:\n{all}"
    );
    assert_eq!(resolved[0]["body"]["paged"], 0, "{all}");
    assert!(
        resolved[0]["body"]["evidence"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{all}"
    );
    // Its stages, as the audit tells them: acting, recovering, resolved.
    let incident = resolved[0]["incident"].as_str().unwrap();
    let stages: Vec<&str> = records
        .iter()
        .filter(|r| r["incident"] == incident && r["kind"] == "incident")
        .filter_map(|r| r["body"]["to"].as_str())
        .collect();
    assert_eq!(stages, ["acting", "recovering"], "{all}");
    assert_eq!(answers.last().map(|a| a.status), Some(200));
    stack.verify_audit().unwrap();
}

#[test]
fn four_kills_are_restarted_up_to_max_attempts_then_paged_once_and_never_left_unattended() {
    let _one = serial();
    let (stack, hook) = start(1, None);
    let web = &stack.hosts()[0];
    let name = stack.agent_name(0);
    let url = stack.audit_url();
    let traffic = Traffic::start(php(web), "/index.php");
    assert!(
        traffic
            .wait_ok_after(SystemTime::now(), Duration::from_secs(10))
            .is_some(),
        "PHP did not answer before the faults"
    );
    let stop = AtomicBool::new(false);
    let (timeline, violations, restored, incident) = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample_invariant(&url, &name, &traffic, &stop));
        // 18 s apart: past the shipped 15 s cooldown, well inside the 1 h attempts window.
        let mut pages_before = 0;
        for kill in 1..=4 {
            pages_before = hook.events("page").len();
            web.sh(KILL_MASTER).unwrap();
            if kill < 4 {
                std::thread::sleep(Duration::from_secs(18));
            }
        }
        // The fourth is not restarted: a human is paged about it.
        let page = hook
            .wait_for(WAIT, |_| hook.events("page").len() > pages_before)
            .and_then(|_| hook.events("page").into_iter().nth(pages_before));
        let incident = page
            .as_ref()
            .and_then(|p| p["incident"].as_str())
            .unwrap_or_default()
            .to_owned();
        // However long PHP stays down now, nothing more runs and nobody is paged again.
        std::thread::sleep(Duration::from_secs(20));
        // The human mends it; the page's incident resolves and the human hears so.
        let restored = SystemTime::now();
        web.sh("systemctl start php8.2-fpm").unwrap();
        let notice = page.is_some().then(|| {
            hook.wait_for(WAIT, |posts| {
                posts
                    .iter()
                    .any(|p| p["event"] == "resolved" && p["incident"] == incident.as_str())
            })
        });
        stop.store(true, Ordering::Relaxed);
        let (timeline, violations) = sampler.join().unwrap();
        assert!(
            page.is_some() && notice.flatten().is_some(),
            "no page after the fourth kill, or no resolution notice for it: {:?}\n{}",
            hook.posts(),
            timeline.join("\n")
        );
        (timeline, violations, restored, incident)
    });
    let records = audit(&stack.audit_url());
    let all = format!("{}\n\nsampler:\n{}", dump(&records), timeline.join("\n"));
    assert!(
        violations.is_empty(),
        "PHP was down with nothing handling it:\n{}\n\n{all}",
        violations.join("\n")
    );
    let restarts = of_kind(&records, &name, "action_dispatched");
    assert_eq!(restarts.len(), 3, "max_attempts 3:\n{all}");
    let pages = hook.events("page");
    assert_eq!(pages.len(), 1, "one page: {pages:?}\n{all}");
    assert_eq!(of_kind(&records, &name, "escalated").len(), 1, "{all}");
    assert!(of_kind(&records, &name, "renotified").is_empty(), "{all}");
    // The page and the resolution notice are about the incident of the fourth kill, which
    // resolved only after the human started php-fpm and PHP answered.
    assert_eq!(pages[0]["incident"], incident.as_str());
    let notices = hook.events("resolved");
    assert_eq!(notices.len(), 1, "{notices:?}");
    let resolved = of_kind(&records, &name, "resolved");
    let last = resolved
        .iter()
        .find(|r| r["incident"] == incident.as_str())
        .unwrap_or_else(|| panic!("the paged incident never resolved:\n{all}"));
    let first_200 = traffic
        .wait_ok_after(restored, Duration::ZERO)
        .unwrap_or_else(|| panic!("PHP never answered after it was started:\n{all}"));
    assert!(
        last["at"].as_i64().unwrap() >= unix_ms(first_200.at),
        "{all}"
    );
    assert_eq!(last["body"]["paged"], 1, "{all}");
    // The three restarted incidents resolved too, each before the next kill.
    assert_eq!(resolved.len(), 4, "{all}");
    stack.verify_audit().unwrap();
}

/// The shipped policies, each paging again 20 s after its latest page while it keeps failing
/// (instead of 30 minutes).
fn renotify_every_20s() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "\n    mode: ",
            "\n    escalate: { renotify: 20s }\n    mode: ",
        );
        std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
    }
    dir
}

#[test]
fn a_killed_backend_no_unit_is_known_for_pages_once_stays_open_while_it_fails_and_is_paged_again() {
    let _one = serial();
    let policies = renotify_every_20s();
    let (stack, hook) = start(1, Some(policies.path()));
    let web = &stack.hosts()[0];
    let name = stack.agent_name(0);
    // Started after the agent, and not in its `units:`.
    web.write(backend::SCRIPT_PATH, backend::SCRIPT).unwrap();
    web.write(
        "/etc/systemd/system/backend.service",
        "[Service]\nExecStart=/usr/bin/python3 /opt/backend.py\n",
    )
    .unwrap();
    web.write("/etc/nginx/conf.d/proxy.conf", backend::PROXY_SITE)
        .unwrap();
    web.sh("systemctl daemon-reload && systemctl start backend && systemctl reload nginx")
        .unwrap();
    let site = SocketAddr::from((web.host_addr(), 8080));
    let traffic = Traffic::start(site, "/");
    assert!(
        traffic
            .wait_ok_after(SystemTime::now(), Duration::from_secs(10))
            .is_some(),
        "the backend did not answer before the fault"
    );

    web.exec(&["systemctl", "kill", "--signal=SIGKILL", "backend"])
        .unwrap();
    let Some(posts) = hook.wait_for(WAIT, |p| p.iter().any(|p| p["event"] == "page")) else {
        panic!("nobody was paged:\n{}", dump(&audit(&stack.audit_url())));
    };
    let incident = posts[0]["incident"].as_str().unwrap().to_owned();
    // Still failing 20 s after the page: paged again, and not resolved meanwhile.
    let renotified = hook.wait_for(WAIT, |p| p.iter().any(|p| p["event"] == "renotify"));
    let records = audit(&stack.audit_url());
    let all = dump(&records);
    assert!(
        renotified.is_some(),
        "no re-notification: {:?}\n{all}",
        hook.posts()
    );
    let started = SystemTime::now();
    assert!(
        traffic
            .since(started - Duration::from_secs(1))
            .iter()
            .all(|a| a.status == 502),
        "the backend answers again by itself"
    );
    assert!(
        of_kind(&records, &name, "resolved").is_empty(),
        "resolved while every request got a 502:\n{all}"
    );
    assert!(
        records.iter().any(|r| r["kind"] == "renotified"
            && r["incident"] == incident.as_str()
            && r["body"]["page"] == 2),
        "{all}"
    );

    // Back: resolved now, and only now.
    web.exec(&["systemctl", "start", "backend"]).unwrap();
    let records = wait_audit(&stack, "the resolution", |r| {
        !of_kind(r, &name, "resolved").is_empty()
    });
    let notice = hook.wait_for(WAIT, |p| p.iter().any(|p| p["event"] == "resolved"));
    let answers = traffic.stop();
    let all = dump(&records);
    assert!(notice.is_some(), "no resolution notice: {:?}", hook.posts());
    let resolved = of_kind(&records, &name, "resolved");
    assert_eq!(resolved.len(), 1, "{all}");
    assert_eq!(resolved[0]["incident"], incident.as_str(), "{all}");
    let first_200 = answers
        .iter()
        .find(|a| a.at >= started && a.ok())
        .unwrap_or_else(|| panic!("the backend never answered again:\n{all}"));
    assert!(
        resolved[0]["at"].as_i64().unwrap() >= unix_ms(first_200.at),
        "resolved before the backend answered:\n{all}"
    );
    // One page: the first and its re-notifications, never a second first page.
    assert_eq!(hook.events("page").len(), 1, "{:?}", hook.posts());
    assert!(
        hook.posts()
            .iter()
            .all(|p| p["incident"] == incident.as_str()),
        "{:?}",
        hook.posts()
    );
    stack.verify_audit().unwrap();
}

/// A deploy that crashes every PHP request: the worker serving it kills itself.
const CRASH_PHP: &str = "<?php posix_kill(getmypid(), 9);\n";

#[test]
fn the_same_crash_on_three_hosts_at_once_is_one_page_for_the_storm() {
    let _one = serial();
    let (stack, hook) = start(3, None);
    for host in stack.hosts() {
        host.write("/var/www/html/crash.php", CRASH_PHP).unwrap();
    }
    // The same bad deploy reaches every host at once, and their users with it.
    let traffic: Vec<Traffic> = stack
        .hosts()
        .iter()
        .map(|h| Traffic::start(php(h), "/crash.php"))
        .collect();
    let Some(_) = hook.wait_for(WAIT, |p| p.iter().any(|p| p["event"] == "page")) else {
        panic!("nobody was paged:\n{}", dump(&audit(&stack.audit_url())));
    };
    // The crashes go on everywhere for a while: still the one page.
    std::thread::sleep(Duration::from_secs(10));
    drop(traffic);
    let records = audit(&stack.audit_url());
    let all = dump(&records);
    let pages = hook.events("page");
    assert_eq!(pages.len(), 1, "one page: {:?}\n{all}", hook.posts());
    assert!(
        pages[0]["why"]
            .as_str()
            .is_some_and(|w| w.contains("storm")),
        "{pages:?}"
    );
    assert_eq!(
        records.iter().filter(|r| r["kind"] == "escalated").count(),
        1,
        "{all}"
    );
    // Every host failed, and nothing ran on any: a restart cannot mend a bad deploy.
    for i in 0..stack.hosts().len() {
        let name = stack.agent_name(i);
        assert!(
            !of_kind(&records, &name, "finding").is_empty(),
            "{name} had no finding:\n{all}"
        );
        assert!(
            of_kind(&records, &name, "action_dispatched").is_empty(),
            "{all}"
        );
    }
    stack.verify_audit().unwrap();
}
