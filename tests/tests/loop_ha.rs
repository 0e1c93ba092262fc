//! Several controllers on one PostgreSQL (issue 9), on real hosts: three controllers share one
//! real PostgreSQL database, the hosts spread over them (host `i` lists controller `i` first),
//! and one controller is SIGKILLed in the middle of an incident. Asserted from every
//! controller's log, the audit in the database, the host's journal and its units.
//!
//! The binaries must be built first: `cargo build --workspace --bins`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use gatemend_tests::stack::{LogLine, Stack, StackSpec, controller_id};
use gatemend_tests::testbed::{Host, http};

const WAIT: Duration = Duration::from_secs(60);
/// The agent's ledger of the actions it was asked to run (`state_dir` of the stack's config).
const LEDGER_INSIDE: &str = "/var/lib/gatemend/state/actions";

/// Every controller's log (killed ones too), for a failure message.
fn logs(stack: &Stack) -> String {
    (0..stack.controller_count())
        .map(|i| {
            let path = stack.controller_log(i);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            format!("==> {} ({}) <==\n{text}", controller_id(i), path.display())
        })
        .collect()
}

/// The lines of controllers `which` (killed ones too) that match, each with its controller.
fn lines_of(
    stack: &Stack,
    which: &[usize],
    matches: impl Fn(&LogLine<'_>) -> bool,
) -> Vec<(usize, String)> {
    which
        .iter()
        .flat_map(|&i| {
            std::fs::read_to_string(stack.controller_log(i))
                .unwrap_or_default()
                .lines()
                .filter(|l| matches(&LogLine::new(l)))
                .map(|l| (i, l.to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Lines of controllers `which` about `host` that say `message`.
fn said(stack: &Stack, which: &[usize], host: &str, message: &str) -> Vec<(usize, String)> {
    lines_of(stack, which, |l| {
        l.says(message) && l.field("host").as_deref() == Some(host)
    })
}

/// Waits until one of controllers `which` logs a matching line; returns the first one found.
#[track_caller]
fn wait_any(
    stack: &Stack,
    which: &[usize],
    what: &str,
    matches: impl Fn(&LogLine<'_>) -> bool,
) -> (usize, String) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = lines_of(stack, which, &matches).into_iter().next() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; controller logs:\n{}",
            logs(stack)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn prop(host: &Host, unit: &str, name: &str) -> String {
    host.unit_property(unit, name).unwrap()
}

/// Users asking `host` for PHP every 25 ms, until the returned sender is dropped.
fn users(host: &Host) -> mpsc::Sender<()> {
    let (stop, stopped) = mpsc::channel::<()>();
    let page = SocketAddr::from((host.host_addr(), 80));
    std::thread::spawn(move || {
        while let Err(mpsc::RecvTimeoutError::Timeout) =
            stopped.recv_timeout(Duration::from_millis(25))
        {
            let _ = http::get(page, "/index.php");
        }
    });
    stop
}

/// The actions the agent inside `host` started: its ledger's `<hex id>.started` files.
fn ledger_started(host: &Host) -> Vec<String> {
    host.exec(&["find", LEDGER_INSIDE, "-name", "*.started"])
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_controller_killed_mid_incident_hands_its_agents_over_and_the_incident_is_resolved_once() {
    let spec = StackSpec {
        controllers: 3,
        postgres: true,
        ..StackSpec::shipped(3)
    };
    let mut stack = match Stack::start(&spec) {
        Ok(stack) => stack,
        Err(e) => panic!("{e:#}"),
    };
    let name = stack.hosts()[0].name();
    let untouched: Vec<(String, String)> = stack.hosts()[1..]
        .iter()
        .map(|h| (h.name(), prop(h, "php8.2-fpm.service", "MainPID")))
        .collect();
    // Stack::start saw every host connect to its first controller: the first host to c1.
    assert_eq!(said(&stack, &[0], &name, "Agent connected.").len(), 1);

    // php-fpm down on the first host while its users ask for PHP, until c1 committed the
    // restart to the fleet state in the shared database: its log says "Action dispatched."
    // and its audit holds the record before that commit. Its result, when it came first, ends
    // the wait too.
    let stop_users = {
        let web = &stack.hosts()[0];
        web.exec(&["systemctl", "stop", "php8.2-fpm"]).unwrap();
        users(web)
    };
    let pg = stack.postgres().expect("the stack runs on PostgreSQL");
    let committed = format!(
        "SELECT (SELECT count(*) FROM fleet_in_flight WHERE action LIKE '%\"{name}\"%') \
         + (SELECT count(*) FROM audit_log WHERE kind = 'action_result' AND host = '{name}')"
    );
    let deadline = Instant::now() + WAIT;
    while pg.psql("gatemend", &committed).unwrap().trim() == "0" {
        assert!(
            Instant::now() < deadline,
            "c1 dispatched nothing for {name}; controller logs:\n{}",
            logs(&stack)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let killed_at = SystemTime::now();
    stack.kill_controller_n(0);

    // The agent moves to another controller.
    let (to, connected) = wait_any(&stack, &[1, 2], "the agent to move", |l| {
        l.says("Agent connected.")
            && l.field("host").as_deref() == Some(name.as_str())
            && l.time().is_some_and(|t| t >= killed_at)
    });
    let failover = LogLine::new(&connected)
        .time()
        .and_then(|t| t.duration_since(killed_at).ok())
        .unwrap_or_default();
    eprintln!(
        "failover: {name} connected to {} {} ms after c1 was killed",
        controller_id(to),
        failover.as_millis()
    );

    // The incident ends there, once.
    wait_any(&stack, &[1, 2], "the resolution", |l| {
        l.says("Finding resolved.") && l.field("host").as_deref() == Some(name.as_str())
    });
    drop(stop_users);
    let web = &stack.hosts()[0];
    assert_eq!(prop(web, "php8.2-fpm.service", "ActiveState"), "active");
    let page = http::get(SocketAddr::from((web.host_addr(), 80)), "/index.php").unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        said(&stack, &[1, 2], &name, "Finding resolved.").len(),
        1,
        "{}",
        logs(&stack)
    );

    // Whichever controller sent the request (c1, or again the one the agent moved to), it went
    // under one id, the agent's ledger started that one action, and it ran once: php-fpm was
    // started at boot and restarted once.
    let records = stack.audit_records().unwrap();
    let about = |kind: &str| -> Vec<&serde_json::Value> {
        records
            .iter()
            .filter(|r| r["kind"] == kind && r["host"] == name.as_str())
            .collect()
    };
    let ids: BTreeSet<&str> = about("action_dispatched")
        .iter()
        .filter_map(|r| r["body"]["action_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 1, "{:?}", about("action_dispatched"));
    let senders: Vec<&serde_json::Value> = about("action_dispatched")
        .iter()
        .map(|r| &r["body"]["controller"])
        .collect();
    eprintln!("the action {ids:?} was dispatched by {senders:?}");
    let started = ledger_started(web);
    assert_eq!(started.len(), 1, "{started:?}");
    let restarts = web
        .sh("journalctl -u php8.2-fpm.service -o cat --no-pager | grep -c '^Started php8.2-fpm'")
        .unwrap();
    assert_eq!(restarts.trim(), "2", "boot and one restart");

    // The audit, one chain in the shared database, holds one resolution, of that incident, and
    // the host online with c1 and then with the controller it moved to.
    let incident = about("action_dispatched")[0]["incident"].clone();
    let resolved = about("resolved");
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(resolved[0]["incident"], incident, "{resolved:?}");
    let online: Vec<&serde_json::Value> = about("host_online")
        .iter()
        .map(|r| &r["body"]["controller"])
        .collect();
    assert_eq!(
        online,
        [
            &serde_json::json!("c1"),
            &serde_json::json!(controller_id(to))
        ],
        "{:?}",
        about("host_online")
    );
    stack.verify_audit().unwrap();

    // The controllers left are deciding, and nothing happened on the other hosts.
    for i in [1, 2] {
        let (status, body) = stack.health_n(i).unwrap();
        assert_eq!(
            (status, &body["deciding"]),
            (200, &serde_json::Value::Bool(true)),
            "{body}"
        );
    }
    for (host, (other, pid)) in stack.hosts()[1..].iter().zip(untouched) {
        assert_eq!(
            prop(host, "php8.2-fpm.service", "MainPID"),
            pid,
            "{other} was touched"
        );
        assert!(
            said(&stack, &[0, 1, 2], &other, "Action dispatched.").is_empty(),
            "{}",
            logs(&stack)
        );
    }
}
