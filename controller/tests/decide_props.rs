//! Properties of the guards under any sequence of findings, clock steps, finished actions and
//! hosts coming and going: the fleet limits hold, no policy acts inside its cooldown, and a
//! storm never dispatches. Each is checked against an oracle kept apart from the engine.

// Helpers outside `#[test]` fns: a failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use gatemend_controller::decide::{self, Finding, FleetState, InFlight, Options, Outcome};
use gatemend_controller::policy::{self, PolicySet};
use gatemend_proto::{Cause, RootCause};
use proptest::prelude::*;

const HOSTS: usize = 12;
const CAUSES: [Cause; 3] = [
    Cause::UpstreamRefused,
    Cause::UpstreamSocketMissing,
    Cause::UpstreamReset,
];
const MAX_CONCURRENT: usize = 3;
const MAX_PERCENT: usize = 20;
const COOLDOWN_MS: i64 = 120_000;
const STORM_PERCENT: usize = 40;
const STORM_MIN: usize = 3;
const STORM_WITHIN_MS: i64 = 60_000;

const POLICIES: &str = "policies:
  - name: restart-refused
    match: { cause: [upstream_refused] }
    mode: auto
    actions: [restart_unit]
    guards: &g
      cooldown: 2m
      max_attempts: 4
      attempts_window: 10m
      fleet: { max_concurrent: 3, max_percent: 20 }
      storm: { hosts_percent: 40, min_hosts: 3, within: 1m }
  - name: restart-missing
    match: { cause: [upstream_socket_missing] }
    mode: dry_run
    actions: [restart_unit]
    guards: *g
  - name: restart-reset-approve
    match: { cause: [upstream_reset] }
    mode: approve
    actions: [restart_unit]
    guards: *g
";

fn policies() -> PolicySet {
    let dir: PathBuf = std::env::temp_dir().join(format!("gatemend-props-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("p.yaml"), POLICIES).unwrap();
    let set = policy::load(&dir).unwrap_or_else(|e| panic!("{e:#?}"));
    let _ = std::fs::remove_dir_all(&dir);
    set
}

#[derive(Debug, Clone)]
enum Op {
    Finding {
        host: usize,
        cause: usize,
        resolved: bool,
    },
    Advance(i64),
    Finish(usize),
    Online(usize),
    Offline(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..HOSTS, 0..CAUSES.len(), prop::bool::weighted(0.15))
            .prop_map(|(host, cause, resolved)| Op::Finding { host, cause, resolved }),
        3 => (0i64..90_000).prop_map(Op::Advance),
        2 => (0usize..8).prop_map(Op::Finish),
        1 => (0..HOSTS).prop_map(Op::Online),
        1 => (0..HOSTS).prop_map(Op::Offline),
    ]
}

fn host(i: usize) -> String {
    format!("web-{i}")
}

/// What the oracle knows: which hosts are online and when each showed each cause.
#[derive(Default)]
struct Oracle {
    online: HashMap<String, bool>,
    seen: HashMap<(String, Cause), i64>,
    last_act: HashMap<(String, String), i64>,
}

impl Oracle {
    fn online_count(&self) -> usize {
        self.online.values().filter(|o| **o).count()
    }

    fn storm(&self, cause: Cause, now: i64) -> bool {
        let online = self.online_count().max(1);
        let need = (online * STORM_PERCENT).div_ceil(100).max(STORM_MIN);
        let hosts = self
            .seen
            .iter()
            .filter(|((h, c), at)| *c == cause && **at >= now - STORM_WITHIN_MS && self.online[h])
            .count();
        hosts >= need
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn guards_hold_under_any_sequence(ops in prop::collection::vec(op(), 1..160)) {
        let set = policies();
        let mut state = FleetState::new();
        let mut oracle = Oracle::default();
        let mut now: i64 = 1_763_686_800_000;
        let mut in_flight: Vec<String> = Vec::new();
        let mut next_id = 0u64;
        for op in ops {
            match op {
                Op::Advance(ms) => now += ms,
                Op::Online(i) => {
                    state.host_online(&host(i), BTreeMap::new(), "");
                    oracle.online.insert(host(i), true);
                }
                Op::Offline(i) => {
                    state.host_offline(&host(i));
                    if oracle.online.contains_key(&host(i)) {
                        oracle.online.insert(host(i), false);
                    }
                }
                Op::Finish(k) => {
                    if !in_flight.is_empty() {
                        let id = in_flight.remove(k % in_flight.len());
                        prop_assert!(state.record_finished(&id).is_some());
                    }
                }
                Op::Finding { host: i, cause, resolved } => {
                    let cause = CAUSES[cause];
                    let f = Finding {
                        id: format!("{}/{cause}", host(i)),
                        revision: 0,
                        host: host(i),
                        cause,
                        root_cause: RootCause::ServiceDown,
                        root_cause_detail: String::new(),
                        upstream: String::new(),
                        unit: "php8.2-fpm.service".into(),
                        count: 3,
                        first_seen: now - 1_000,
                        last_seen: now,
                        resolved,
                        labels: BTreeMap::new(),
                        edit: None,
                    };
                    state.record_finding(&f, now, "");
                    oracle.online.insert(host(i), true);
                    if !resolved {
                        let seen = oracle.seen.entry((host(i), cause)).or_insert(now);
                        *seen = (*seen).max(now);
                    }
                    let d = decide::decide(&set, &state, &f, now, Options::default());
                    decide::apply(&mut state, &d, &f, now);
                    let Some(p) = d.policy else { continue };
                    if d.outcome.acts() {
                        // A storm never dispatches (nor asks to).
                        prop_assert!(!oracle.storm(cause, now), "acted in a storm: {:?}", d);
                        // No policy acts inside its cooldown.
                        let key = (host(i), p.name.clone());
                        if let Some(last) = oracle.last_act.get(&key) {
                            prop_assert!(now - last >= COOLDOWN_MS, "acted {}ms after the last act", now - last);
                        }
                        oracle.last_act.insert(key, now);
                    }
                    if matches!(d.outcome, Outcome::Execute | Outcome::DryRun) {
                        next_id += 1;
                        let id = format!("a{next_id}");
                        state.record_dispatched(
                            &id,
                            InFlight { host: host(i), policy: p.name.clone(), cause, since: now, chain: None },
                            p.guards.attempts_window,
                            now,
                        );
                        in_flight.push(id);
                        let online = oracle.online_count().max(1);
                        prop_assert!(
                            state.busy_hosts() <= (online * MAX_PERCENT).div_ceil(100),
                            "{} busy hosts of {} online exceed {}%", state.busy_hosts(), online, MAX_PERCENT
                        );
                    }
                }
            }
            prop_assert!(state.busy_hosts() <= MAX_CONCURRENT);
            let busy: std::collections::BTreeSet<&str> =
                state.data().in_flight.values().map(|a| a.host.as_str()).collect();
            prop_assert_eq!(busy.len(), state.busy_hosts());
        }
    }
}
