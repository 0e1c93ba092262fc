//! The whole loop on a real fleet with the shipped policies: a fault injected into a host is
//! detected by the agent inside it, decided by the controller, mended by the agent, verified,
//! and the finding resolved — asserted from the controller's log and the host's state.
//!
//! The binaries must be built first: `cargo build --workspace --bins`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gatemend_tests::stack::{Stack, StackSpec};
use gatemend_tests::testbed::{Host, http};

/// Requests from outside until nginx answers `status`.
fn until_status(host: &Host, path: &str, status: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from((host.host_addr(), 80));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if http::get(addr, path).is_ok_and(|r| r.status == status) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn main_pid(host: &Host, unit: &str) -> String {
    host.unit_property(unit, "MainPID").unwrap()
}

#[test]
fn php_fpm_stopped_on_one_host_is_restarted_verified_and_resolved() {
    let stack = Stack::start(&StackSpec::shipped(3)).unwrap();
    let [web, others @ ..] = stack.hosts() else {
        panic!("three hosts")
    };
    let name = web.name();
    let untouched: Vec<(String, String)> = others
        .iter()
        .map(|h| (h.name(), main_pid(h, "php8.2-fpm.service")))
        .collect();

    web.exec(&["systemctl", "stop", "php8.2-fpm"]).unwrap();
    // Traffic makes nginx fail, and then succeed again once php-fpm is back.
    assert!(
        until_status(web, "/index.php", 200, Duration::from_secs(60)),
        "PHP was not served again on {name}; controller log:\n{}",
        stack.controller().unwrap().log()
    );
    let ctl = stack.controller().unwrap();
    let decided = ctl
        .wait_for("the decision", Duration::from_secs(30), |l| {
            l.says("Decided.") && l.field("host").as_deref() == Some(name.as_str())
        })
        .unwrap();
    let line = gatemend_tests::stack::LogLine::new(&decided);
    assert_eq!(
        line.field("decision").as_deref(),
        Some("execute"),
        "{decided}"
    );
    assert_eq!(
        line.field("policy").as_deref(),
        Some("restart-when-service-down"),
        "{decided}"
    );
    assert_eq!(
        line.field("root_cause").as_deref(),
        Some("service_down"),
        "{decided}"
    );
    assert_eq!(
        line.field("unit").as_deref(),
        Some("php8.2-fpm.service"),
        "{decided}"
    );
    ctl.wait_for("the verified result", Duration::from_secs(30), |l| {
        l.says("Action succeeded and verified.")
            && l.field("host").as_deref() == Some(name.as_str())
    })
    .unwrap();
    ctl.wait_for("the resolution", Duration::from_secs(60), |l| {
        l.says("Finding resolved.") && l.field("host").as_deref() == Some(name.as_str())
    })
    .unwrap();
    assert_eq!(
        web.unit_property("php8.2-fpm.service", "ActiveState")
            .unwrap(),
        "active"
    );
    // Nothing else happened: no escalation (a hardened unit that could not run `nginx -t`
    // would report a config error on every host), exactly one action, on that host only.
    assert!(
        ctl.matching(|l| l.says("Escalated to a human.")).is_empty(),
        "{}",
        ctl.log()
    );
    assert_eq!(
        ctl.matching(|l| l.says("Action dispatched.")).len(),
        1,
        "{}",
        ctl.log()
    );
    for (host, (name, pid)) in others.iter().zip(untouched) {
        assert_eq!(
            main_pid(host, "php8.2-fpm.service"),
            pid,
            "{name} was touched"
        );
    }
}
