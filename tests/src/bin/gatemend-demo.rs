//! `gatemend-demo`: the README's main command. Boots a fleet of real Debian hosts, starts the
//! controller with the shipped policies and the agent in every host (through the hardened
//! deploy unit, with certificates from `gatemend pki`), then breaks the hosts one fault at a
//! time and narrates what gatemend detected, decided, did and verified, and how long each took.
//!
//! `--non-interactive` exits 0 when every fault was handled as expected (CI runs it);
//! otherwise the fleet keeps running until Ctrl-C.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::Parser;
use gatemend_tests::stack::{LogLine, Stack, StackSpec};
use gatemend_tests::testbed::{Host, http, preflight, rootfs};

#[derive(Debug, Parser)]
#[command(
    name = "gatemend-demo",
    about = "Boot the demo fleet, break it, watch gatemend mend it"
)]
struct Cli {
    /// How many hosts to boot. The faults go to the hosts in turn; with fewer than 3, one host
    /// meets the restart policy twice and its cooldown rightly holds the second restart.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=20))]
    hosts: u16,
    /// Exit when the faults are done: 0 when each was handled as expected.
    #[arg(long)]
    non_interactive: bool,
}

/// How long one fault may take to be handled before the demo calls it a failure.
const FAULT_DEADLINE: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("gatemend-demo: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// What a fault should end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Mended automatically: an action verified, then the finding resolved.
    Mended,
    /// Nothing a machine should do: escalated to a human, nothing run.
    Escalated,
    /// Mended once an operator approves (the demo approves through the API, as `demo`).
    Approved,
}

struct Fault {
    title: &'static str,
    /// Shell run inside the host to break it.
    inject: &'static str,
    /// Shell run inside the host afterwards when gatemend rightly does not mend it.
    restore: Option<&'static str>,
    expect: Expect,
}

const FAULTS: [Fault; 4] = [
    Fault {
        title: "php-fpm stopped",
        inject: "systemctl stop php8.2-fpm",
        restore: None,
        expect: Expect::Mended,
    },
    Fault {
        title: "php-fpm master killed (SIGKILL)",
        inject: "systemctl kill --signal=SIGKILL php8.2-fpm",
        restore: None,
        expect: Expect::Mended,
    },
    Fault {
        title: "nginx pointed at the old php7.4 socket (an upgrade gone wrong)",
        inject: "sed -i 's/php8.2-fpm.sock/php7.4-fpm.sock/' /etc/nginx/sites-available/default && systemctl reload nginx",
        restore: Some(
            "sed -i 's/php7.4-fpm.sock/php8.2-fpm.sock/' /etc/nginx/sites-available/default && systemctl reload nginx",
        ),
        expect: Expect::Escalated,
    },
    Fault {
        title: "php-fpm's socket chowned to root:root 0600",
        inject: "chown root:root /run/php/php8.2-fpm.sock && chmod 600 /run/php/php8.2-fpm.sock",
        restore: None,
        expect: Expect::Approved,
    },
];

fn run(cli: Cli) -> anyhow::Result<bool> {
    preflight()?;
    let started = Instant::now();
    let (root, origin) = rootfs::ensure()?;
    say(&format!(
        "root filesystem {} ({origin:?}, {:.1} s)",
        root.display(),
        started.elapsed().as_secs_f64()
    ));
    say(&format!(
        "booting {} hosts, the controller (shipped policies in policies/) and an agent in each host",
        cli.hosts
    ));
    let stack = Stack::start(&StackSpec::shipped(usize::from(cli.hosts)))?;
    say(&format!(
        "fleet up and every agent connected after {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    println!();
    println!(
        "{:<8} {:<12} {:<10} GET /index.php",
        "HOST", "ADDRESS", "AGENT"
    );
    for host in stack.hosts() {
        let agent = host
            .unit_property("gatemend-agent.service", "ActiveState")
            .unwrap_or_else(|_| "?".into());
        let php = http::get(SocketAddr::from((host.host_addr(), 80)), "/index.php")
            .map(|r| r.status)
            .unwrap_or(0);
        println!(
            "{:<8} {:<12} {:<10} {}",
            host.name(),
            host.host_addr(),
            agent,
            php
        );
    }
    println!();
    say(&format!(
        "review UI: {}  login token: {}",
        stack.ui_url(),
        stack.token()
    ));
    say(&format!(
        "controller log: {}  audit log: {}",
        stack.dir().join("controller.log").display(),
        stack.audit_url()
    ));

    let mut all_ok = true;
    for (fault, host) in FAULTS.iter().zip(stack.hosts().iter().cycle()) {
        println!();
        all_ok &= play(&stack, host, fault)?;
    }
    println!();
    say(if all_ok {
        "every fault was handled as expected"
    } else {
        "some fault was NOT handled as expected"
    });
    if cli.non_interactive {
        return Ok(all_ok);
    }
    say("the fleet keeps running; reach a host with `nsenter -t PID1 -a bash`. Ctrl-C stops it.");
    for host in stack.hosts() {
        say(&format!("  {} PID1 {}", host.name(), host.pid1()));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime
        .block_on(tokio::signal::ctrl_c())
        .context("waiting for Ctrl-C")?;
    say("stopping the fleet");
    Ok(all_ok)
}

/// Breaks `host`, sends it traffic, and narrates the controller's log about it until the
/// fault is handled (or the deadline). Returns whether it went as expected.
fn play(stack: &Stack, host: &Host, fault: &Fault) -> anyhow::Result<bool> {
    let name = host.name();
    let controller = stack.controller()?;
    let seen_before = controller.log().lines().count();
    say(&format!("{name}: {}", fault.title));
    let t0 = SystemTime::now();
    host.sh(fault.inject)?;
    let traffic = Traffic::start(host);
    let deadline = Instant::now() + FAULT_DEADLINE;
    let mut seen = seen_before;
    let (mut verified, mut resolved, mut escalated) = (false, false, false);
    let done = |v: bool, r: bool, e: bool| match fault.expect {
        Expect::Mended | Expect::Approved => v && r,
        Expect::Escalated => e,
    };
    let mut approved = false;
    while !done(verified, resolved, escalated) && Instant::now() < deadline {
        let log = controller.log();
        for text in log.lines().skip(seen) {
            let line = LogLine::new(text);
            if line.field("host").as_deref() != Some(name.as_str()) {
                continue;
            }
            let at = line
                .time()
                .and_then(|t| t.duration_since(t0).ok())
                .map_or_else(
                    || "?".to_owned(),
                    |d| format!("+{:>6.0} ms", d.as_secs_f64() * 1e3),
                );
            let field = |k: &str| line.field(k).unwrap_or_default();
            if line.says("Decided.") {
                println!(
                    "  {at}  detected {} -> root cause {}: {}",
                    field("cause"),
                    field("root_cause"),
                    field("why"),
                );
                println!(
                    "  {at}  decided {} by policy {}",
                    field("decision"),
                    field("policy")
                );
                if fault.expect == Expect::Approved
                    && field("decision") == "await_approval"
                    && !approved
                {
                    approved = approve(stack, &name)?;
                }
            } else if line.says("Action dispatched.") {
                println!("  {at}  dispatched {} {}", field("kind"), field("unit"));
            } else if line.says("Action succeeded and verified.") {
                verified = true;
                println!("  {at}  verified: {}", field("outcome"));
            } else if line.says("Action did not mend it.") {
                println!("  {at}  action FAILED: {}", field("outcome"));
            } else if line.says("Escalated to a human.") {
                escalated = true;
                println!("  {at}  escalated to a human: {}", field("why"));
            } else if line.says("Finding resolved.") {
                resolved = true;
                println!("  {at}  resolved: the errors stopped and the probes are healthy");
            }
        }
        seen = log.lines().count();
        std::thread::sleep(Duration::from_millis(20));
    }
    traffic.stop();
    if let Some(restore) = fault.restore {
        host.sh(restore)?;
        say(&format!("{name}: restored by hand, as the human would"));
    }
    // The host serves PHP again (after a reload, old workers finish first).
    let page = SocketAddr::from((host.host_addr(), 80));
    let status = || http::get(page, "/index.php").map(|r| r.status).unwrap_or(0);
    let settle = Instant::now() + Duration::from_secs(10);
    let mut php = status();
    while php != 200 && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(100));
        php = status();
    }
    let ok = done(verified, resolved, escalated)
        && match fault.expect {
            // Escalated: nothing restarted, so no action may have been dispatched.
            Expect::Escalated => !controller.lines().iter().skip(seen_before).any(|l| {
                let l = LogLine::new(l);
                l.says("Action dispatched.") && l.field("host").as_deref() == Some(name.as_str())
            }),
            Expect::Mended | Expect::Approved => php == 200,
        };
    say(&format!(
        "{name}: {} (GET /index.php now answers {php})",
        if ok {
            "handled as expected"
        } else {
            "NOT handled as expected"
        }
    ));
    Ok(ok)
}

/// The operator `demo` approves `host`'s pending approval through the API, as a person would in
/// the review UI or with `gatemend approvals approve`.
fn approve(stack: &Stack, host: &str) -> anyhow::Result<bool> {
    let listed = stack.approvals(&["list", "--state", "pending", "--json"])?;
    let mut pending = Vec::new();
    for line in listed.lines() {
        pending.push(serde_json::from_str::<serde_json::Value>(line)?);
    }
    let Some(mine) = pending.iter().find(|a| a["host"] == host) else {
        return Ok(false);
    };
    let id = mine["id"].as_str().unwrap_or_default();
    let reason = "the pool file says www-data:www-data 0660";
    stack.approvals(&["approve", id, "--reason", reason])?;
    println!("             operator demo approves {id} through the API: \"{reason}\"");
    Ok(true)
}

/// Requests to a host's PHP page every 25 ms, as its users would, while a fault plays.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Traffic {
    fn start(host: &Host) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let addr = SocketAddr::from((host.host_addr(), 80));
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let _ = http::get(addr, "/index.php");
                std::thread::sleep(Duration::from_millis(25));
            }
        });
        Traffic { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

fn say(message: &str) {
    println!("demo: {message}");
}
