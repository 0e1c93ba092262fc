//! Figures, not a pass/fail test: how many pages each fault scenario of issue 15 sends, and how
//! many requests its users lose (BENCHMARKS.md, "Pages and failed requests per fault (#15)").
//! Run by hand:
//!
//! ```text
//! cargo build --workspace --bins && \
//!   cargo test -p gatemend-tests --test incident_bench -- --ignored --nocapture
//! ```
//!
//! Every scenario boots its own hosts with the shipped policies (`GATEMEND_BENCH_POLICIES`
//! names another directory: an older build's own policies), a webhook receiver as the
//! controller's `--escalate-webhook`, and users' traffic: `GET /index.php` (or `/` on the proxied
//! site) from outside every 25 ms. What is counted, from what any version of gatemend leaves:
//! - pages: the POSTs the webhook received (a POST with `event` other than `page` is a
//!   re-notification or a resolution notice, counted apart; a POST without one is a page);
//! - restarts: the controller's `Action dispatched.` lines;
//! - resolutions: its `Finding resolved.` lines, and how many came while every request of the
//!   surrounding second still failed (resolved while the site was down);
//! - failed requests: answers other than 200 (or none at all) from the fault on.
//!
//! Scenarios (`INCIDENT_BENCH_CASES`, a comma list; all by default):
//! - `kill`: php-fpm's master SIGKILLed once; `INCIDENT_BENCH_RUNS` runs (default 5), a
//!   fresh host each; counted until the fault's findings resolved or 30 s passed.
//! - `kills`: four kills 18 s apart on one host, then 30 s more; a human starts php-fpm
//!   then if it is down.
//! - `backend`: a proxied backend no unit is known for, SIGKILLed; a human starts it again
//!   45 s later; 15 s more.
//! - `storm`: a deploy that crashes every PHP request, on three hosts at once, for 30 s;
//!   `INCIDENT_BENCH_RUNS` runs, three fresh hosts each.
//!
//! The binaries are found beside the test executable, as every testbed test finds them: to
//! measure another build, copy this executable into `DIR/deps/` and that build's
//! `gatemend`, `gatemend-agent` and `gatemend-controller` into `DIR/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use gatemend_tests::stack::{LogLine, Stack, StackSpec};
use gatemend_tests::testbed::traffic::{Answer, Traffic};
use gatemend_tests::testbed::webhook::Webhook;
use gatemend_tests::testbed::{Host, backend};

const KILL_MASTER: &str = "systemctl kill --kill-whom=main --signal=SIGKILL php8.2-fpm";

fn policies() -> PathBuf {
    std::env::var_os("GATEMEND_BENCH_POLICIES").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies"),
        PathBuf::from,
    )
}

fn start(hosts: usize) -> (Stack, Webhook) {
    let hook = Webhook::start().unwrap();
    let spec = StackSpec {
        policies: policies(),
        controller_args: vec!["--escalate-webhook".into(), hook.url()],
        ..StackSpec::shipped(hosts)
    };
    match Stack::start(&spec) {
        Ok(stack) => (stack, hook),
        Err(e) => panic!("{e:#}"),
    }
}

fn php(host: &Host) -> SocketAddr {
    SocketAddr::from((host.host_addr(), 80))
}

/// What one scenario (or one run of it) came to.
#[derive(Debug, Default, Clone)]
struct Count {
    pages: usize,
    renotified: usize,
    notices: usize,
    restarts: usize,
    resolutions: usize,
    resolved_while_down: usize,
    failed: usize,
}

impl Count {
    fn add(&mut self, o: &Count) {
        self.pages += o.pages;
        self.renotified += o.renotified;
        self.notices += o.notices;
        self.restarts += o.restarts;
        self.resolutions += o.resolutions;
        self.resolved_while_down += o.resolved_while_down;
        self.failed += o.failed;
    }

    fn row(&self, what: &str) -> String {
        format!(
            "| {what} | {} | {} | {} | {} | {} ({} while down) | {} |",
            self.pages,
            self.renotified,
            self.notices,
            self.restarts,
            self.resolutions,
            self.resolved_while_down,
            self.failed
        )
    }
}

/// Counts what the stack, its webhook and the traffic show from `t0` on.
fn count(stack: &Stack, hook: &Webhook, answers: &[Answer], t0: SystemTime) -> Count {
    let posts = hook.posts();
    let event = |p: &serde_json::Value| p["event"].as_str().unwrap_or("page").to_owned();
    let log = stack.controller().unwrap().log();
    let lines: Vec<LogLine<'_>> = log
        .lines()
        .map(LogLine::new)
        .filter(|l| l.time().is_some_and(|t| t >= t0))
        .collect();
    let resolved: Vec<SystemTime> = lines
        .iter()
        .filter(|l| l.says("Finding resolved."))
        .filter_map(LogLine::time)
        .collect();
    // Down at `t`: every answer of the second before it failed.
    let down_at = |t: SystemTime| {
        let window: Vec<&Answer> = answers
            .iter()
            .filter(|a| a.at <= t && a.at + Duration::from_secs(1) > t)
            .collect();
        !window.is_empty() && window.iter().all(|a| !a.ok())
    };
    // What each page and restart was about, for the notes.
    for p in &posts {
        let why: String = p["why"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(160)
            .collect();
        println!(
            "  {} {}: {} ({})",
            event(p),
            p["host"].as_str().unwrap_or_default(),
            why,
            p["policy"].as_str().unwrap_or_default()
        );
    }
    for l in lines.iter().filter(|l| l.says("Action dispatched.")) {
        println!("  restart: {}", l.field("action").unwrap_or_default());
    }
    Count {
        pages: posts.iter().filter(|p| event(p) == "page").count(),
        renotified: posts.iter().filter(|p| event(p) == "renotify").count(),
        notices: posts.iter().filter(|p| event(p) == "resolved").count(),
        restarts: lines
            .iter()
            .filter(|l| l.says("Action dispatched."))
            .count(),
        resolutions: resolved.len(),
        resolved_while_down: resolved.iter().filter(|t| down_at(**t)).count(),
        failed: answers.iter().filter(|a| a.at >= t0 && !a.ok()).count(),
    }
}

fn wait_ok(traffic: &Traffic, after: SystemTime) {
    assert!(
        traffic
            .wait_ok_after(after, Duration::from_secs(10))
            .is_some(),
        "the site did not answer 200"
    );
}

fn cases() -> Vec<String> {
    std::env::var("INCIDENT_BENCH_CASES").map_or_else(
        |_| {
            ["kill", "kills", "backend", "storm"]
                .map(str::to_owned)
                .to_vec()
        },
        |v| v.split(',').map(|c| c.trim().to_owned()).collect(),
    )
}

fn header() {
    println!(
        "| scenario | pages | re-notified | resolution notices | restarts | findings resolved | failed requests |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
}

fn kill(runs: usize) {
    let mut total = Count::default();
    let mut paged_runs = 0;
    for run in 1..=runs {
        let (stack, hook) = start(1);
        let web = &stack.hosts()[0];
        let traffic = Traffic::start(php(web), "/index.php");
        wait_ok(&traffic, SystemTime::now());
        let t0 = SystemTime::now();
        web.sh(KILL_MASTER).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let resolved = stack
                .controller()
                .unwrap()
                .matching(|l| l.says("Finding resolved."));
            if !resolved.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // Late pages (a reset logged during the restart) come within seconds.
        std::thread::sleep(Duration::from_secs(5));
        let answers = traffic.stop();
        let c = count(&stack, &hook, &answers, t0);
        println!("{}", c.row(&format!("kill, run {run}")));
        paged_runs += usize::from(c.pages > 0);
        total.add(&c);
    }
    println!("{}", total.row(&format!("kill, {runs} runs together")));
    println!("kill: {paged_runs} of {runs} runs paged a human");
}

fn kills() {
    let (stack, hook) = start(1);
    let web = &stack.hosts()[0];
    let traffic = Traffic::start(php(web), "/index.php");
    wait_ok(&traffic, SystemTime::now());
    let t0 = SystemTime::now();
    let mut at = Vec::new();
    for n in 1..=4 {
        at.push(SystemTime::now());
        // A php-fpm left down by the previous kill has no master to kill.
        let out = web
            .sh(&format!(
                "if systemctl is-active --quiet php8.2-fpm; then {KILL_MASTER}; else echo down; fi"
            ))
            .unwrap();
        if out.trim() == "down" {
            println!("kills: kill {n}: php-fpm was still down");
        }
        if n < 4 {
            std::thread::sleep(Duration::from_secs(18));
        }
    }
    std::thread::sleep(Duration::from_secs(30));
    at.push(SystemTime::now());
    // The human: php-fpm is started if it is down.
    web.sh("systemctl is-active --quiet php8.2-fpm || systemctl start php8.2-fpm")
        .unwrap();
    wait_ok(&traffic, SystemTime::now());
    std::thread::sleep(Duration::from_secs(8));
    let answers = traffic.stop();
    let c = count(&stack, &hook, &answers, t0);
    println!("{}", c.row("four kills 18 s apart, then a human"));
    for (i, w) in at.windows(2).enumerate() {
        let failed = answers
            .iter()
            .filter(|a| a.at >= w[0] && a.at < w[1] && !a.ok())
            .count();
        println!("kills: failed requests after kill {}: {failed}", i + 1);
    }
    let first_page = hook
        .posts()
        .iter()
        .filter(|p| p["event"].as_str().unwrap_or("page") == "page")
        .count();
    println!("kills: pages {first_page}");
}

fn backend_down() {
    let (stack, hook) = start(1);
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
    let traffic = Traffic::start(SocketAddr::from((web.host_addr(), 8080)), "/");
    wait_ok(&traffic, SystemTime::now());
    let t0 = SystemTime::now();
    web.exec(&["systemctl", "kill", "--signal=SIGKILL", "backend"])
        .unwrap();
    std::thread::sleep(Duration::from_secs(45));
    web.exec(&["systemctl", "start", "backend"]).unwrap();
    wait_ok(&traffic, SystemTime::now());
    std::thread::sleep(Duration::from_secs(15));
    let answers = traffic.stop();
    let c = count(&stack, &hook, &answers, t0);
    println!(
        "{}",
        c.row("backend no unit is known for, killed; started by a human after 45 s")
    );
}

fn storm(runs: usize) {
    let mut total = Count::default();
    for run in 1..=runs {
        let (stack, hook) = start(3);
        for host in stack.hosts() {
            host.write(
                "/var/www/html/crash.php",
                "<?php posix_kill(getmypid(), 9);\n",
            )
            .unwrap();
        }
        let t0 = SystemTime::now();
        let traffic: Vec<Traffic> = stack
            .hosts()
            .iter()
            .map(|h| Traffic::start(php(h), "/crash.php"))
            .collect();
        std::thread::sleep(Duration::from_secs(30));
        let answers: Vec<Answer> = traffic.into_iter().flat_map(Traffic::stop).collect();
        let c = count(&stack, &hook, &answers, t0);
        println!(
            "{}",
            c.row(&format!(
                "a crashing deploy on 3 hosts at once, 30 s, run {run}"
            ))
        );
        total.add(&c);
    }
    println!("{}", total.row(&format!("storm, {runs} runs together")));
}

#[test]
#[ignore = "figures: run by hand (see the module documentation)"]
fn pages_and_failed_requests_per_fault() {
    let runs = std::env::var("INCIDENT_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    println!("policies: {}", policies().display());
    header();
    for case in cases() {
        match case.as_str() {
            "kill" => kill(runs),
            "kills" => kills(),
            "backend" => backend_down(),
            "storm" => storm(runs),
            other => panic!("unknown case {other}"),
        }
    }
}
