//! Decisions per second: 10,000 hosts in the fleet state, 100 policies, one core.
//!
//! `cargo bench -p gatemend-controller --bench decide`
//!
//! Measures `decide::decide` alone (the pure engine: matching, every guard verdict), on a
//! fleet with findings recorded on 2,000 hosts, 50 actions in flight and cooldowns running,
//! over 4,096 findings cycling through every cause, root cause and host. Every policy has a
//! storm guard (`NO_STORM=1` drops them, for comparison). It prints the figure; it does not
//! pass or fail on it.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use gatemend_controller::decide::{self, Finding, FleetState, InFlight, Options};
use gatemend_controller::policy;
use gatemend_proto::{Cause, RootCause};

const HOSTS: usize = 10_000;
const POLICIES: usize = 100;
const NOW: i64 = 1_763_686_800_000;

fn policies_yaml(storm: bool) -> String {
    let causes: Vec<Cause> = Cause::ALL.to_vec();
    let roots = RootCause::ALL;
    let mut y = String::from("policies:\n");
    for i in 0..POLICIES {
        let cause = causes[i % causes.len()];
        let root = roots[(i / causes.len()) % roots.len()];
        let (mode, actions) = match i % 4 {
            0 => ("auto", "[restart_unit]"),
            1 => ("approve", "[fix_socket_ownership]"),
            2 => ("dry_run", "[reload_nginx]"),
            _ => ("auto", "[escalate]"),
        };
        let extra = match i % 3 {
            0 => {
                "      unit: [\"php*-fpm.service\"]\n      hosts: { names: [\"web-*\"], labels: { env: prod } }\n"
            }
            1 => "      threshold: { count: 3, within: 5m }\n",
            _ => "",
        };
        let _ = write!(
            y,
            "  - name: p{i}
    priority: {}
    match:
      cause: [{cause}]
      root_cause: [{root}]
{extra}    mode: {mode}
    actions: {actions}
    guards:
      cooldown: 5m
      max_attempts: 3
      fleet: {{ max_concurrent: 100, max_percent: 10 }}
{}",
            POLICIES - i,
            if storm {
                "      storm: { hosts_percent: 30, min_hosts: 3, within: 2m }\n"
            } else {
                ""
            }
        );
    }
    y
}

fn finding(i: usize) -> Finding {
    let cause = Cause::ALL[i % Cause::ALL.len()];
    let root = RootCause::ALL[(i / 7) % RootCause::ALL.len()];
    let host = format!("web-{}", (i * 7919) % HOSTS);
    Finding {
        id: format!("{host}/{cause}"),
        revision: 1,
        labels: BTreeMap::new(),
        edit: None,
        host,
        cause,
        root_cause: root,
        root_cause_detail: String::new(),
        upstream: "unix:/run/php/php8.2-fpm.sock".into(),
        unit: "php8.2-fpm.service".into(),
        count: 10,
        first_seen: NOW - 60_000,
        last_seen: NOW - 1_000,
        resolved: false,
    }
}

fn main() {
    let dir = std::env::temp_dir().join(format!("gatemend-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bench.yaml"),
        policies_yaml(std::env::var_os("NO_STORM").is_none()),
    )
    .unwrap();
    let set = policy::load(&dir).unwrap_or_else(|e| panic!("{e:#?}"));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(set.policies().len(), POLICIES);

    let mut state = FleetState::new();
    let labels = BTreeMap::from([("env".to_owned(), "prod".to_owned())]);
    for h in 0..HOSTS {
        state.host_online(&format!("web-{h}"), labels.clone(), "");
    }
    let findings: Vec<Finding> = (0..4096).map(finding).collect();
    // History: findings on 2,000 hosts, cooldowns, 50 actions in flight.
    for (i, f) in findings.iter().enumerate().take(2000) {
        state.record_finding(f, NOW - 30_000, "");
        if i % 10 == 0 {
            state.record_acted(&f.host, &format!("p{}", i % POLICIES), NOW - 60_000);
        }
        if i % 40 == 0 {
            state.record_dispatched(
                &format!("a{i}"),
                InFlight {
                    host: f.host.clone(),
                    policy: format!("p{}", i % POLICIES),
                    cause: f.cause,
                    since: NOW - 10_000,
                    chain: None,
                },
                Duration::from_secs(3600),
                NOW - 10_000,
            );
        }
    }
    for f in &findings {
        state.record_finding(f, NOW, "");
    }

    let opts = Options::default();
    let mut kinds = BTreeMap::<&str, usize>::new();
    for f in &findings {
        *kinds
            .entry(decide::decide(&set, &state, f, NOW, opts).outcome.id())
            .or_default() += 1;
    }
    // Warm up, then measure.
    let rounds = |n: usize| {
        let start = Instant::now();
        let mut acc = 0usize;
        for r in 0..n {
            for f in &findings {
                let d = decide::decide(&set, black_box(&state), black_box(f), NOW + r as i64, opts);
                acc += usize::from(d.outcome.acts());
            }
        }
        (start.elapsed(), acc)
    };
    rounds(20);
    let n = 500;
    let (elapsed, acc) = rounds(n);
    let decisions = n * findings.len();
    let per_sec = decisions as f64 / elapsed.as_secs_f64();
    println!(
        "decide: {decisions} decisions in {:.3}s = {:.0} decisions/s ({:.0} ns each), \
         {HOSTS} hosts, {POLICIES} policies, one thread; outcomes per round {kinds:?}; acts {acc}",
        elapsed.as_secs_f64(),
        per_sec,
        elapsed.as_nanos() as f64 / decisions as f64,
    );
}
