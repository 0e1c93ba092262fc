//! The whole loop on real hosts, one scenario of issue 8 per test, each asserted from the
//! controller's log and the hosts' state: what was decided, what ran (and what did not).
//!
//! The binaries must be built first: `cargo build --workspace --bins`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gatemend_tests::stack::{LogLine, Stack, StackSpec};
use gatemend_tests::testbed::{Host, backend, http};

const WAIT: Duration = Duration::from_secs(60);

/// Requests to a host's page every 25 ms while alive, as its users would.
struct Traffic {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn to(hosts: &[&Host], port: u16, path: &'static str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = hosts
            .iter()
            .map(|h| {
                let flag = Arc::clone(&stop);
                let addr = SocketAddr::from((h.host_addr(), port));
                std::thread::spawn(move || {
                    while !flag.load(Ordering::Relaxed) {
                        let _ = http::get(addr, path);
                        std::thread::sleep(Duration::from_millis(25));
                    }
                })
            })
            .collect();
        Traffic { stop, threads }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A policy directory holding `files`.
fn policies(files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let path = dir.path().to_path_buf();
    (dir, path)
}

fn spec(hosts: usize, policies: &Path) -> StackSpec {
    StackSpec {
        policies: policies.to_path_buf(),
        ..StackSpec::shipped(hosts)
    }
}

fn start(spec: &StackSpec) -> Stack {
    match Stack::start(spec) {
        Ok(stack) => stack,
        Err(e) => panic!("{e:#}"),
    }
}

fn prop(host: &Host, unit: &str, name: &str) -> String {
    host.unit_property(unit, name).unwrap()
}

/// Lines of the controller's log (every run) about `host` that say `message`.
fn said(stack: &Stack, host: &Host, message: &str) -> Vec<String> {
    let name = host.name();
    stack
        .controller()
        .unwrap()
        .matching(|l| l.says(message) && l.field("host").as_deref() == Some(name.as_str()))
}

#[track_caller]
fn wait_said(stack: &Stack, host: &Host, message: &str) -> String {
    let name = host.name();
    match stack.controller().unwrap().wait_for(message, WAIT, |l| {
        l.says(message) && l.field("host").as_deref() == Some(name.as_str())
    }) {
        Ok(line) => line,
        Err(e) => panic!("{e:#}"),
    }
}

#[test]
fn nginx_pointed_at_the_old_socket_is_escalated_with_both_paths_and_nothing_runs() {
    let stack = start(&StackSpec::shipped(1));
    let web = &stack.hosts()[0];
    let pid = prop(web, "php8.2-fpm.service", "MainPID");
    web.sh("sed -i 's/php8.2-fpm.sock/php7.4-fpm.sock/' /etc/nginx/sites-available/default && systemctl reload nginx")
        .unwrap();
    let _traffic = Traffic::to(&[web], 80, "/index.php");
    let escalated = wait_said(&stack, web, "Escalated to a human.");
    let why = LogLine::new(&escalated)
        .field("why")
        .unwrap_or_default()
        .to_owned();
    assert!(
        why.contains("/run/php/php7.4-fpm.sock") && why.contains("/run/php/php8.2-fpm.sock"),
        "{escalated}"
    );
    let decided = wait_said(&stack, web, "Decided.");
    assert_eq!(
        LogLine::new(&decided).field("root_cause").as_deref(),
        Some("wrong_target")
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(said(&stack, web, "Action dispatched.").is_empty());
    assert_eq!(
        prop(web, "php8.2-fpm.service", "MainPID"),
        pid,
        "php-fpm was restarted"
    );
    stack.verify_audit().unwrap();
}

#[test]
fn a_killed_proxied_backend_is_restarted() {
    let spec = StackSpec {
        agent_yaml: "units: { \"127.0.0.1:3000\": backend.service }\n\
                     actions: { units: [\"php*-fpm.service\", \"nginx.service\", \"backend.service\"] }\n"
            .into(),
        ..StackSpec::shipped(1)
    };
    let stack = start(&spec);
    let web = &stack.hosts()[0];
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
    let pid = prop(web, "backend.service", "MainPID");
    web.exec(&["systemctl", "kill", "--signal=SIGKILL", "backend"])
        .unwrap();
    let _traffic = Traffic::to(&[web], 8080, "/");
    let decided = wait_said(&stack, web, "Decided.");
    let d = LogLine::new(&decided);
    assert_eq!(
        (
            d.field("root_cause").as_deref(),
            d.field("unit").as_deref(),
            d.field("decision").as_deref()
        ),
        (
            Some("service_down"),
            Some("backend.service"),
            Some("execute")
        ),
        "{decided}"
    );
    wait_said(&stack, web, "Action succeeded and verified.");
    assert_eq!(prop(web, "backend.service", "ActiveState"), "active");
    assert_ne!(prop(web, "backend.service", "MainPID"), pid);
    stack.verify_audit().unwrap();
}

const RELOAD_ON_CONFIG_ERROR: &str = "policies:
  - name: reload-on-config-error
    description: a policy that would reload nginx on a config error; nginx -t must stop it
    match: { cause: [config_invalid] }
    mode: auto
    actions: [reload_nginx]
    guards: { cooldown: 1m }
";

#[test]
fn a_broken_config_is_never_reloaded_even_when_a_policy_says_so() {
    let (_dir, dir) = policies(&[("reload.yaml", RELOAD_ON_CONFIG_ERROR)]);
    let stack = start(&spec(1, &dir));
    let web = &stack.hosts()[0];
    let master = web.read("/run/nginx.pid").unwrap();
    web.write(
        "/etc/nginx/conf.d/broken.conf",
        "this_is_not_a_directive;\n",
    )
    .unwrap();
    wait_said(&stack, web, "Action dispatched.");
    let failed = wait_said(&stack, web, "Action did not mend it.");
    let outcome = LogLine::new(&failed)
        .field("outcome")
        .unwrap_or_default()
        .to_owned();
    assert!(outcome.contains("this_is_not_a_directive"), "{failed}");
    wait_said(&stack, web, "Escalated to a human.");
    // nginx was not reloaded and serves as before.
    assert_eq!(web.read("/run/nginx.pid").unwrap(), master);
    let page = http::get(SocketAddr::from((web.host_addr(), 80)), "/index.php").unwrap();
    assert_eq!(page.status, 200);
    stack.verify_audit().unwrap();
}

#[test]
fn a_controller_wide_dry_run_plans_and_touches_nothing() {
    let spec = StackSpec {
        controller_args: vec!["--dry-run".into()],
        ..StackSpec::shipped(1)
    };
    let stack = start(&spec);
    let web = &stack.hosts()[0];
    web.exec(&["systemctl", "stop", "php8.2-fpm"]).unwrap();
    let _traffic = Traffic::to(&[web], 80, "/index.php");
    let decided = wait_said(&stack, web, "Decided.");
    assert_eq!(
        LogLine::new(&decided).field("decision").as_deref(),
        Some("dry_run"),
        "{decided}"
    );
    wait_said(&stack, web, "Dry run: plan requested, nothing runs.");
    let result = wait_said(&stack, web, "Action result.");
    assert_eq!(
        LogLine::new(&result).field("status").as_deref(),
        Some("planned"),
        "{result}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(prop(web, "php8.2-fpm.service", "ActiveState"), "inactive");
    // The plan is recorded in the audit, under the incident, with the agent's steps.
    let records = stack.audit_records().unwrap();
    let plan = records
        .iter()
        .find(|r| r["kind"] == "action_result" && r["body"]["status"] == "planned")
        .unwrap_or_else(|| panic!("no planned result in {records:?}"));
    assert!(
        plan["incident"].as_str().is_some_and(|i| !i.is_empty()),
        "{plan}"
    );
    assert!(
        !plan["body"]["steps"].as_array().unwrap().is_empty(),
        "{plan}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "action_dispatched" && r["body"]["dry_run"] == true),
        "{records:?}"
    );
    stack.verify_audit().unwrap();
}

const RESTART_QUICKLY: &str = "policies:
  - name: restart-quickly
    description: restart a down php-fpm, retrying soon, at most twice
    match: { cause: [upstream_socket_missing, upstream_refused], root_cause: [service_down] }
    mode: auto
    actions: [restart_unit]
    verify: { timeout: 5s }
    guards: { cooldown: 1s, max_attempts: 2, attempts_window: 1h }
";

#[test]
fn a_unit_that_fails_every_restart_is_escalated_after_max_attempts_and_left_alone() {
    let (_dir, dir) = policies(&[("restart.yaml", RESTART_QUICKLY)]);
    let stack = start(&spec(1, &dir));
    let web = &stack.hosts()[0];
    // A pool php-fpm refuses to start with, then php-fpm down.
    web.sh("echo 'pm = nonsense' >> /etc/php/8.2/fpm/pool.d/www.conf && systemctl stop php8.2-fpm")
        .unwrap();
    let _traffic = Traffic::to(&[web], 80, "/index.php");
    let name = web.name();
    match stack
        .controller()
        .unwrap()
        .wait_for("attempts exhausted", WAIT, |l| {
            l.says("Escalated to a human.")
                && l.field("host").as_deref() == Some(name.as_str())
                && l.field("why").is_some_and(|w| w.contains("max_attempts"))
        }) {
        Ok(_) => {}
        Err(e) => panic!("{e:#}"),
    }
    // No loop: however long the errors go on, two attempts were all.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(said(&stack, web, "Action dispatched.").len(), 2);
    assert_eq!(said(&stack, web, "Action did not mend it.").len(), 2);
    assert_ne!(prop(web, "php8.2-fpm.service", "ActiveState"), "active");
    stack.verify_audit().unwrap();
}

const RESTART_CONFIRMED: &str = "policies:
  - name: restart-when-down-confirmed
    description: restart a down php-fpm once three lines confirm it, never during a storm
    match:
      cause: [upstream_socket_missing, upstream_refused]
      root_cause: [service_down]
      threshold: { count: 3, within: 1m }
    mode: auto
    actions: [restart_unit]
    guards:
      fleet: { max_concurrent: 3, max_percent: 100 }
      storm: { hosts_percent: 60, min_hosts: 3, within: 2m }
";

#[test]
fn the_same_fault_on_every_host_at_once_is_a_storm_held_with_one_escalation() {
    let (_dir, dir) = policies(&[("restart.yaml", RESTART_CONFIRMED)]);
    let stack = start(&spec(3, &dir));
    let hosts: Vec<&Host> = stack.hosts().iter().collect();
    for h in &hosts {
        h.exec(&["systemctl", "stop", "php8.2-fpm"]).unwrap();
    }
    let _traffic = Traffic::to(&hosts, 80, "/index.php");
    let ctl = stack.controller().unwrap();
    match ctl.wait_for("the storm escalation", WAIT, |l| {
        l.says("Escalated to a human.") && l.field("why").is_some_and(|w| w.contains("storm"))
    }) {
        Ok(_) => {}
        Err(e) => panic!("{e:#}"),
    }
    // Every host goes on failing for a while: still one escalation, and nothing restarted.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        ctl.matching(|l| l.says("Escalated to a human.")).len(),
        1,
        "{}",
        ctl.log()
    );
    assert!(
        ctl.matching(|l| l.says("Action dispatched.")).is_empty(),
        "{}",
        ctl.log()
    );
    for h in &hosts {
        assert_eq!(prop(h, "php8.2-fpm.service", "ActiveState"), "inactive");
    }
    stack.verify_audit().unwrap();
}

#[test]
fn a_controller_killed_mid_incident_loses_nothing_and_runs_nothing_twice() {
    let mut stack = start(&StackSpec::shipped(1));
    let traffic = {
        let web = &stack.hosts()[0];
        web.exec(&["systemctl", "stop", "php8.2-fpm"]).unwrap();
        let traffic = Traffic::to(&[web], 80, "/index.php");
        wait_said(&stack, web, "Action dispatched.");
        traffic
    };
    // Killed the moment it dispatched: the agent's result and the finding's later revisions
    // wait in the agent's outbox for the next controller, which remembers (its state file)
    // that it already acted.
    stack.kill_controller();
    std::thread::sleep(Duration::from_secs(3));
    stack.start_controller().unwrap();
    let web = &stack.hosts()[0];
    wait_said(&stack, web, "Finding resolved.");
    drop(traffic);
    let ctl = stack.controller().unwrap();
    // The new controller may send the request again (the old one may have died with it in its
    // socket), always under the same id, and the agent runs it once: php-fpm was started once
    // after boot.
    let ids: std::collections::BTreeSet<String> = said(&stack, web, "Action dispatched.")
        .iter()
        .filter_map(|l| LogLine::new(l).field("action"))
        .collect();
    assert_eq!(ids.len(), 1, "{}", ctl.log());
    let started = web
        .sh("journalctl -u php8.2-fpm.service -o cat --no-pager | grep -c '^Started php8.2-fpm'")
        .unwrap();
    assert_eq!(started.trim(), "2", "boot and one restart");
    assert_eq!(prop(web, "php8.2-fpm.service", "ActiveState"), "active");
    // Every finding revision stored once across both controller runs, none lost.
    let stored = std::fs::read_to_string(stack.dir().join("findings.jsonl")).unwrap();
    let keys: Vec<(String, u64)> = stored
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "finding")
        .map(|v| {
            (
                v["id"].as_str().unwrap().to_owned(),
                v["revision"].as_u64().unwrap(),
            )
        })
        .collect();
    let distinct: std::collections::BTreeSet<_> = keys.iter().collect();
    assert_eq!(
        distinct.len(),
        keys.len(),
        "a finding revision was stored twice"
    );
    let last = keys.iter().map(|(_, r)| *r).max().unwrap_or(0);
    assert_eq!(keys.len() as u64, last, "a revision is missing: {keys:?}");
    stack.verify_audit().unwrap();
}

#[test]
fn a_socket_chowned_to_root_is_fixed_once_an_operator_approves_through_the_api() {
    let stack = start(&StackSpec::shipped(1));
    let web = &stack.hosts()[0];
    web.sh("chown root:root /run/php/php8.2-fpm.sock && chmod 600 /run/php/php8.2-fpm.sock")
        .unwrap();
    let traffic = Traffic::to(&[web], 80, "/index.php");
    let decided = wait_said(&stack, web, "Decided.");
    let d = LogLine::new(&decided);
    assert_eq!(
        (d.field("decision").as_deref(), d.field("policy").as_deref()),
        (Some("await_approval"), Some("fix-socket-ownership")),
        "{decided}"
    );
    // Nothing runs before an operator says so.
    std::thread::sleep(Duration::from_secs(2));
    assert!(said(&stack, web, "Action dispatched.").is_empty());
    let listed = stack
        .approvals(&["list", "--state", "pending", "--json"])
        .unwrap();
    let pending: Vec<serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let id = pending[0]["id"].as_str().unwrap().to_owned();
    stack
        .approvals(&["approve", &id, "--reason", "the pool says www-data 0660"])
        .unwrap();
    wait_said(&stack, web, "Action succeeded and verified.");
    drop(traffic);
    let page = http::get(SocketAddr::from((web.host_addr(), 80)), "/index.php").unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        web.exec(&["stat", "-c", "%U:%G %a", "/run/php/php8.2-fpm.sock"])
            .unwrap()
            .trim(),
        "www-data:www-data 660"
    );
    // The audit names the operator who approved, and the chain holds.
    let records = stack.audit_records().unwrap();
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "approved" && r["actor"] == "demo"),
        "{records:?}"
    );
    stack.verify_audit().unwrap();
}
