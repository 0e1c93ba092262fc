//! `gatemend-demo`: the README's main command. Boots a fleet of real Debian hosts, starts the
//! controller with the shipped policies and the agent in every host (through the hardened
//! deploy unit, with certificates from `gatemend pki`), then breaks the hosts one fault at a
//! time and narrates, from the audit log, what gatemend detected, decided, did and verified,
//! who was paged, and when the incident resolved, with the time of each step since the fault.
//!
//! A fault counts as handled as expected only when it took the expected path and PHP answers
//! 200 at the end, with the fault's incident resolved. Faults go to the hosts in turn; with
//! fewer hosts than faults one host meets several, so each fault waits for the previous one's
//! incident to resolve, and a fault that a policy mends waits out that policy's cooldown on its
//! host first (a second restart within it is held until the cooldown ends: right for a
//! flapping service, not what this step shows).
//!
//! `--non-interactive` exits 0 when every fault was handled as expected (CI runs it, with the
//! default 3 hosts and with `--hosts 1`); otherwise the fleet keeps running until Ctrl-C.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use gatemend_tests::stack::{Stack, StackSpec};
use gatemend_tests::testbed::traffic::Traffic;
use gatemend_tests::testbed::{Host, binaries, http, preflight, rootfs};
use serde_json::Value;

#[derive(Debug, Parser)]
#[command(
    name = "gatemend-demo",
    about = "Boot the demo fleet, break it, watch gatemend mend it"
)]
struct Cli {
    /// How many hosts to boot. The faults go to the hosts in turn; with fewer hosts than
    /// faults, one host meets several of them, one after the other.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=20))]
    hosts: u16,
    /// Exit when the faults are done: 0 when each was handled as expected.
    #[arg(long)]
    non_interactive: bool,
}

/// How long one fault may take to be handled before the demo calls it a failure.
const FAULT_DEADLINE: Duration = Duration::from_secs(60);
/// How long PHP may take to answer 200 once a fault is handled (after a reload, old workers
/// finish first).
const SETTLE: Duration = Duration::from_secs(10);

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
    /// Mended automatically: an action verified, then the incident resolved.
    Mended,
    /// Nothing a machine should do: a human is asked, nothing runs. The demo then restores
    /// the host by hand, as that human would, and the incident resolves once PHP answers.
    Human,
    /// Mended once an operator approves (the demo approves through the API, as `demo`).
    Approved,
}

struct Fault {
    title: &'static str,
    /// Shell run inside the host to break it.
    inject: &'static str,
    /// Shell run inside the host when gatemend rightly leaves the fault to a human.
    restore: Option<&'static str>,
    expect: Expect,
    /// The shipped policies expected to decide (the first one mends or asks; the wrong socket
    /// may also be proposed as an edit of the site's `fastcgi_pass`).
    policies: &'static [&'static str],
}

const FAULTS: [Fault; 4] = [
    Fault {
        title: "php-fpm stopped",
        inject: "systemctl stop php8.2-fpm",
        restore: None,
        expect: Expect::Mended,
        policies: &["restart-when-service-down"],
    },
    Fault {
        title: "php-fpm master killed (SIGKILL)",
        inject: "systemctl kill --signal=SIGKILL php8.2-fpm",
        restore: None,
        expect: Expect::Mended,
        policies: &["restart-when-service-down"],
    },
    Fault {
        title: "nginx pointed at the old php7.4 socket (an upgrade gone wrong)",
        inject: "sed -i 's/php8.2-fpm.sock/php7.4-fpm.sock/' /etc/nginx/sites-available/default && systemctl reload nginx",
        restore: Some(
            "sed -i 's/php7.4-fpm.sock/php8.2-fpm.sock/' /etc/nginx/sites-available/default && systemctl reload nginx",
        ),
        expect: Expect::Human,
        policies: &["reload-nginx-after-approved-fix", "edit-upstream-target"],
    },
    Fault {
        title: "php-fpm's socket chowned to root:root 0600",
        inject: "chown root:root /run/php/php8.2-fpm.sock && chmod 600 /run/php/php8.2-fpm.sock",
        restore: None,
        expect: Expect::Approved,
        policies: &["fix-socket-ownership"],
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
    let spec = StackSpec::shipped(usize::from(cli.hosts));
    let stack = Stack::start(&spec)?;
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
        println!(
            "{:<8} {:<12} {:<10} {}",
            host.name(),
            host.host_addr(),
            agent,
            php_status(host)
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

    let mut acted = Acted::default();
    // Incidents of earlier faults: one still open is not this fault's.
    let mut earlier = BTreeSet::new();
    let mut all_ok = true;
    let hosts = stack.hosts().iter().enumerate().cycle();
    for (fault, (i, host)) in FAULTS.iter().zip(hosts) {
        println!();
        let name = stack.agent_name(i);
        for policy in fault.policies {
            acted.wait_out_cooldown(&spec.policies, &name, policy);
        }
        all_ok &= play(&stack, host, &name, fault, &mut acted, &mut earlier)?;
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

/// When each policy last dispatched an action on each host (the audit's `action_dispatched`),
/// for its cooldown.
#[derive(Debug, Default)]
struct Acted(BTreeMap<(String, String), SystemTime>);

impl Acted {
    fn record(&mut self, host: &str, policy: &str, at: SystemTime) {
        self.0.insert((host.to_owned(), policy.to_owned()), at);
    }

    /// Sleeps until `policy`'s cooldown since it last acted on `host` is over.
    fn wait_out_cooldown(&self, policies: &Path, host: &str, policy: &str) {
        let Some(at) = self.0.get(&(host.to_owned(), policy.to_owned())) else {
            return;
        };
        let Some(cooldown) = cooldown_of(policies, policy) else {
            return;
        };
        let left = (*at + cooldown)
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        if left.is_zero() {
            return;
        }
        say(&format!(
            "{host}: waiting {:.1} s for the {} cooldown of {policy} since its last action on \
             {host} (a second action within it waits for it: the step would show the guard, \
             not the mend)",
            left.as_secs_f64(),
            humantime::format_duration(cooldown)
        ));
        std::thread::sleep(left);
    }
}

/// The `cooldown:` of policy `name` in the policy files of `dir`, read as text: the demo
/// needs this one value of the shipped files, which the controller validates at start.
fn cooldown_of(dir: &Path, name: &str) -> Option<Duration> {
    let start = format!("- name: {name}");
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let mut lines = text.lines().map(str::trim);
        if lines.by_ref().any(|l| l == start) {
            return lines
                .take_while(|l| !l.starts_with("- name:"))
                .find_map(|l| l.strip_prefix("cooldown:"))
                .and_then(|v| humantime::parse_duration(v.trim()).ok());
        }
    }
    None
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn php_status(host: &Host) -> u16 {
    http::get(SocketAddr::from((host.host_addr(), 80)), "/index.php").map_or(0, |r| r.status)
}

/// The audit records about `host` at or after `since` (ms), oldest first.
fn audit_since(stack: &Stack, host: &str, since: i64) -> anyhow::Result<Vec<Value>> {
    let out = Command::new(binaries::path("gatemend")?)
        .args(["audit", "list", "--json", "--host", host, "--since"])
        .arg(since.to_string())
        .arg("--db")
        .arg(stack.audit_url())
        .output()
        .context("running gatemend audit list")?;
    if !out.status.success() {
        bail!(
            "gatemend audit list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).context("audit list printed a line that is not JSON"))
        .collect()
}

/// What the audit showed of one fault so far.
#[derive(Debug, Default)]
struct Seen {
    /// Records narrated, by seq.
    last_seq: i64,
    findings: BTreeSet<String>,
    /// The latest decision narrated per incident: (decision, detail).
    decided: BTreeMap<String, (String, String)>,
    /// Policies that decided (anything but `resolved`).
    policies: BTreeSet<String>,
    /// The policies the fault should be decided by.
    expected: &'static [&'static str],
    /// Decisions of other policies that acted, asked or paged: `decision by policy`.
    strays: Vec<String>,
    dispatched: usize,
    verified: usize,
    /// Approvals requested, newest last.
    approvals: Vec<String>,
    pages: usize,
    opened: BTreeSet<String>,
    resolved: BTreeMap<String, i64>,
    /// Incidents of earlier faults, told apart from this one's.
    earlier: BTreeSet<String>,
    /// Earlier incidents still open that this fault's records mention, said once each.
    still_open: BTreeSet<String>,
}

impl Seen {
    /// Every incident this fault opened resolved (at or after `after`, ms), and there was one.
    fn all_resolved(&self, after: i64) -> bool {
        !self.opened.is_empty()
            && self
                .opened
                .iter()
                .all(|i| self.resolved.get(i).is_some_and(|at| *at >= after))
    }

    /// Narrates one record and remembers what it says.
    fn narrate(&mut self, r: &Value, t0: i64, acted: &mut Acted, host: &str) {
        let seq = r["seq"].as_i64().unwrap_or(0);
        if seq <= self.last_seq {
            return;
        }
        self.last_seq = seq;
        let at_ms = r["at"].as_i64().unwrap_or(t0);
        let at = format!("+{:>6} ms", at_ms.saturating_sub(t0));
        let body = &r["body"];
        let text = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
        let incident = r["incident"].as_str().unwrap_or_default().to_owned();
        let policy = r["policy"].as_str().unwrap_or_default().to_owned();
        if self.earlier.contains(&incident) {
            if r["kind"] == "resolved" {
                println!(
                    "  {at}  resolved an earlier fault's incident: {}",
                    text("evidence")
                );
            } else if self.still_open.insert(incident.clone()) {
                println!("  {at}  (an earlier fault's incident is still open: {incident})");
            }
            return;
        }
        match r["kind"].as_str().unwrap_or_default() {
            "finding" => {
                if body["resolved"] == true || !self.findings.insert(text("id")) {
                    return;
                }
                self.opened.insert(incident);
                println!(
                    "  {at}  detected {} -> root cause {}: {}",
                    text("cause"),
                    text("root_cause"),
                    text("root_cause_detail")
                );
            }
            "decision" => {
                let decision = text("decision");
                if decision == "resolved" {
                    return;
                }
                self.policies.insert(policy.clone());
                // Another policy that acts or asks is a stray; one that would page is a stray
                // only if a page was sent (an incident already paged is not paged again).
                let acts = matches!(decision.as_str(), "execute" | "await_approval" | "dry_run");
                if !self.expected.contains(&policy.as_str()) && acts {
                    self.strays.push(format!("{decision} by {policy}"));
                }
                let now = (decision.clone(), text("detail"));
                if self.decided.get(&incident) == Some(&now) {
                    return;
                }
                let detail = if now.1 == decision {
                    String::new()
                } else {
                    format!(" ({})", now.1)
                };
                self.decided.insert(incident, now);
                println!("  {at}  decided {decision}{detail} by policy {policy}");
            }
            "incident" => {
                if let (Some(from), Some(to)) = (body["from"].as_str(), body["to"].as_str()) {
                    println!("  {at}  incident {from} -> {to}");
                } else if body["page"].is_string() {
                    println!("  {at}  a page was due ({}), {}", text("why"), text("page"));
                }
            }
            "action_dispatched" => {
                self.dispatched += 1;
                if let Ok(t) = u64::try_from(at_ms) {
                    acted.record(host, &policy, UNIX_EPOCH + Duration::from_millis(t));
                }
                println!("  {at}  dispatched {} {}", text("kind"), text("unit"));
            }
            "action_result" | "refused" => {
                if text("status") == "succeeded" {
                    self.verified += 1;
                    println!("  {at}  verified: {}", text("message"));
                } else {
                    println!("  {at}  action {}: {}", text("status"), text("message"));
                }
            }
            "approval_requested" => {
                if let Some(id) = body["approval"].as_str() {
                    self.approvals.push(id.to_owned());
                }
            }
            "approved" | "denied" => println!(
                "  {at}  operator {} {} {}: \"{}\"",
                r["actor"].as_str().unwrap_or_default(),
                r["kind"].as_str().unwrap_or_default(),
                text("approval"),
                text("reason")
            ),
            "escalated" => {
                self.pages += 1;
                if !policy.is_empty() && !self.expected.contains(&policy.as_str()) {
                    self.strays.push(format!("a page by {policy}"));
                }
                println!("  {at}  paged a human: {}", text("why"));
            }
            "renotified" => {
                self.pages += 1;
                println!("  {at}  paged again: {}", text("why"));
            }
            "resolved" => {
                self.resolved.insert(incident, at_ms);
                println!("  {at}  resolved: {}", text("evidence"));
            }
            _ => {}
        }
    }
}

/// Breaks `host` (whose agent is `name`), sends it traffic, and narrates the audit about it
/// until the fault is handled (or the deadline). Returns whether it went as expected.
fn play(
    stack: &Stack,
    host: &Host,
    name: &str,
    fault: &Fault,
    acted: &mut Acted,
    earlier: &mut BTreeSet<String>,
) -> anyhow::Result<bool> {
    say(&format!("{name}: {}", fault.title));
    let t0 = unix_ms(SystemTime::now());
    host.sh(fault.inject)?;
    let traffic = Traffic::start(SocketAddr::from((host.host_addr(), 80)), "/index.php");
    let deadline = Instant::now() + FAULT_DEADLINE;
    let mut seen = Seen {
        earlier: earlier.clone(),
        expected: fault.policies,
        ..Seen::default()
    };
    let mut approved = false;
    // When the demo restored the host by hand, if it did.
    let mut restored: Option<i64> = None;
    loop {
        for r in audit_since(stack, name, t0)? {
            seen.narrate(&r, t0, acted, name);
        }
        let done = match fault.expect {
            Expect::Mended => seen.verified > 0 && seen.all_resolved(t0),
            Expect::Approved => {
                if !approved && let Some(id) = seen.approvals.last() {
                    approve(stack, id)?;
                    approved = true;
                }
                approved && seen.verified > 0 && seen.all_resolved(t0)
            }
            Expect::Human => {
                if restored.is_none() && (seen.pages > 0 || !seen.approvals.is_empty()) {
                    restored = Some(restore(stack, host, name, fault, &seen)?);
                }
                restored.is_some_and(|at| seen.all_resolved(at))
            }
        };
        if done || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let failed = traffic.failed_since(UNIX_EPOCH + Duration::from_millis(t0.unsigned_abs()));
    drop(traffic);
    let php = {
        let settle = Instant::now() + SETTLE;
        let mut php = php_status(host);
        while php != 200 && Instant::now() < settle {
            std::thread::sleep(Duration::from_millis(100));
            php = php_status(host);
        }
        php
    };
    // The expected policy decided, and no other one acted, asked or paged.
    let by_policy =
        fault.policies.iter().any(|p| seen.policies.contains(*p)) && seen.strays.is_empty();
    let ok = match fault.expect {
        // Never noisy: a fault gatemend mends by itself pages nobody.
        Expect::Mended => {
            by_policy && seen.verified > 0 && seen.pages == 0 && seen.all_resolved(t0)
        }
        // The approval request is the one page.
        Expect::Approved => {
            by_policy && approved && seen.verified > 0 && seen.pages == 1 && seen.all_resolved(t0)
        }
        Expect::Human => {
            by_policy
                && seen.dispatched == 0
                && seen.pages > 0
                && restored.is_some_and(|at| seen.all_resolved(at))
        }
    };
    let ok = ok && php == 200;
    earlier.extend(seen.opened.iter().cloned());
    let open = seen
        .opened
        .iter()
        .filter(|i| !seen.resolved.contains_key(*i))
        .count();
    if !seen.strays.is_empty() {
        say(&format!(
            "{name}: decided by another policy than {} too: {}",
            fault.policies.join(" or "),
            seen.strays.join(", ")
        ));
    }
    let mut what = Vec::new();
    what.push(match (seen.dispatched, seen.verified) {
        (0, _) => "nothing ran".to_owned(),
        (n, v) if n == v => format!("{n} action(s) ran and were verified"),
        (n, v) => format!("{n} action(s) ran, {v} verified"),
    });
    if approved {
        what.push("an operator approved".to_owned());
    }
    if restored.is_some() {
        what.push("restored by hand, as the human who was asked would".to_owned());
    }
    what.push(match seen.pages {
        0 => "nobody paged".to_owned(),
        1 => "1 page".to_owned(),
        n => format!("{n} pages"),
    });
    what.push(if open == 0 {
        "the incident resolved".to_owned()
    } else {
        "the incident did NOT resolve".to_owned()
    });
    what.push(format!("{failed} requests failed"));
    say(&format!(
        "{name}: {}: {} (GET /index.php now answers {php})",
        if ok {
            "handled as expected"
        } else {
            "NOT handled as expected"
        },
        what.join("; ")
    ));
    Ok(ok)
}

/// Restores `host` by hand, as the human who was asked would, and denies the approval that
/// asked for a reload (the human fixed it another way). Returns when (ms).
fn restore(
    stack: &Stack,
    host: &Host,
    name: &str,
    fault: &Fault,
    seen: &Seen,
) -> anyhow::Result<i64> {
    let at = unix_ms(SystemTime::now());
    if let Some(restore) = fault.restore {
        host.sh(restore)?;
        say(&format!("{name}: restored by hand, as the human would"));
    }
    for id in &seen.approvals {
        let denied = stack.approvals(&[
            "deny",
            id,
            "--reason",
            "fixed by hand: the site points at php8.2-fpm's socket again",
        ]);
        // Already decided or expired: nothing is left to deny, and the step goes on.
        if let Err(e) = denied {
            say(&format!("{name}: could not deny {id}: {e:#}"));
        }
    }
    Ok(at)
}

/// The operator `demo` approves `id` through the API, as a person would in the review UI or
/// with `gatemend approvals approve`.
fn approve(stack: &Stack, id: &str) -> anyhow::Result<()> {
    let reason = "the pool file says www-data:www-data 0660";
    stack.approvals(&["approve", id, "--reason", reason])?;
    Ok(())
}

fn say(message: &str) {
    println!("demo: {message}");
}
