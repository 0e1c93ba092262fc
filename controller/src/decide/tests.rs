//! Every decision kind, every guard, the matching rules and the state transitions.

use std::collections::BTreeMap;
use std::path::PathBuf;

use gatemend_proto::{Cause, RootCause};

use super::*;
use crate::policy::{self, PolicySet};

const MIN: i64 = 60_000;
const T0: i64 = 1_763_686_800_000;

fn set(yaml: &str) -> PolicySet {
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "gatemend-decide-{}-{}",
        std::process::id(),
        std::thread::current()
            .name()
            .unwrap_or("t")
            .replace("::", "-")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("p.yaml"), yaml).unwrap();
    let set = policy::load(&dir).unwrap_or_else(|e| panic!("{e:#?}"));
    std::fs::remove_dir_all(&dir).unwrap();
    set
}

fn one(body: &str) -> PolicySet {
    set(&format!(
        "policies:\n  - name: p\n    match: {{ cause: [upstream_refused] }}\n{body}"
    ))
}

fn finding(host: &str) -> Finding {
    Finding {
        id: format!("{host}/refused"),
        revision: 0,
        host: host.to_owned(),
        cause: Cause::UpstreamRefused,
        root_cause: RootCause::ServiceDown,
        root_cause_detail: String::new(),
        upstream: "127.0.0.1:9000".into(),
        unit: "php8.2-fpm.service".into(),
        count: 5,
        first_seen: T0 - MIN,
        last_seen: T0,
        resolved: false,
        labels: BTreeMap::new(),
        edit: None,
    }
}

/// Records `f`, decides at `now`, applies the decision, dispatches when it executes.
fn step<'p>(
    set: &'p PolicySet,
    state: &mut FleetState,
    f: &Finding,
    now: UnixMs,
    opts: Options,
) -> Decision<'p> {
    state.record_finding(f, now, "");
    let d = decide(set, state, f, now, opts);
    apply(state, &d, f, now);
    if let (Outcome::Execute, Some(p)) = (d.outcome, d.policy) {
        state.record_dispatched(
            &format!("{}-{now}", f.host),
            InFlight {
                host: f.host.clone(),
                policy: p.name.clone(),
                cause: f.cause,
                since: now,
                chain: None,
            },
            p.guards.attempts_window,
            now,
        );
    }
    d
}

const AUTO: &str = "    mode: auto\n    actions: [restart_unit]\n";

#[test]
fn auto_executes_approve_awaits_dry_run_plans() {
    let state = FleetState::new();
    let f = finding("web-1");
    for (mode, outcome) in [
        ("auto", Outcome::Execute),
        ("approve", Outcome::AwaitApproval),
        ("dry_run", Outcome::DryRun),
    ] {
        let set = one(&format!("    mode: {mode}\n    actions: [restart_unit]\n"));
        let d = decide(&set, &state, &f, T0, Options::default());
        assert_eq!(d.outcome, outcome, "{mode}");
        assert_eq!(d.policy.map(|p| p.name.as_str()), Some("p"));
    }
}

#[test]
fn a_controller_wide_dry_run_turns_execute_and_approval_into_dry_run() {
    let state = FleetState::new();
    let f = finding("web-1");
    let opts = Options { dry_run: true };
    for mode in ["auto", "approve"] {
        let set = one(&format!("    mode: {mode}\n    actions: [restart_unit]\n"));
        assert_eq!(decide(&set, &state, &f, T0, opts).outcome, Outcome::DryRun);
    }
    // Escalating touches no host: it still happens.
    let set = one("    mode: auto\n    actions: [escalate]\n");
    assert_eq!(
        decide(&set, &state, &f, T0, opts).outcome,
        Outcome::Escalate { why: Why::Policy }
    );
}

#[test]
fn no_policy_and_resolved() {
    let set = one(AUTO);
    let state = FleetState::new();
    let mut f = finding("web-1");
    f.cause = Cause::DnsNoResolver;
    let d = decide(&set, &state, &f, T0, Options::default());
    assert_eq!(d.outcome, Outcome::NoPolicy);
    assert!(d.policy.is_none() && d.verdicts.is_none());
    let mut f = finding("web-1");
    f.resolved = true;
    assert_eq!(
        decide(&set, &state, &f, T0, Options::default()).outcome,
        Outcome::Resolved
    );
}

#[test]
fn the_highest_priority_match_decides() {
    let set = set("policies:
  - { name: low, match: { cause: [upstream_refused] }, mode: auto, actions: [restart_unit] }
  - { name: high, priority: 10, match: { cause: [upstream_refused], root_cause: [service_down] }, mode: approve, actions: [restart_unit] }
  - { name: higher-other-root, priority: 20, match: { cause: [upstream_refused], root_cause: [wrong_target] }, mode: auto, actions: [escalate] }
");
    let state = FleetState::new();
    let d = decide(&set, &state, &finding("web-1"), T0, Options::default());
    assert_eq!(d.policy.map(|p| p.name.as_str()), Some("high"));
    assert_eq!(d.outcome, Outcome::AwaitApproval);
    let f = finding("web-1");
    let e = explain(&set, &state, &f, T0, Options::default());
    let seen: Vec<(&str, Consideration<'_>)> = e
        .considered
        .iter()
        .map(|(p, c)| (p.name.as_str(), *c))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "higher-other-root",
                Consideration::NotMatched(Mismatch::RootCause(RootCause::ServiceDown))
            ),
            ("high", Consideration::Matched),
            ("low", Consideration::NotReached),
        ]
    );
}

#[test]
fn units_hosts_and_labels_are_matched() {
    let set = set_with_match(
        "{ cause: [upstream_refused], unit: [\"php*-fpm.service\"], hosts: { names: [\"web-*\"], labels: { env: prod } } }",
    );
    let mut state = FleetState::new();
    let mut f = finding("web-1");
    f.labels.insert("env".into(), "prod".into());
    assert_eq!(matches(&set.policies()[0], &f, &state, T0), Ok(()));
    // The fleet state's labels (from the agent's Hello) win over the finding's.
    state.host_online(
        "web-1",
        BTreeMap::from([("env".into(), "staging".into())]),
        "",
    );
    assert_eq!(
        matches(&set.policies()[0], &f, &state, T0),
        Err(Mismatch::HostLabel {
            key: "env",
            want: "prod",
            got: Some("staging")
        })
    );
    let state = FleetState::new();
    let mut g = f.clone();
    g.host = "db-1".into();
    assert_eq!(
        matches(&set.policies()[0], &g, &state, T0),
        Err(Mismatch::HostName("db-1"))
    );
    let mut g = f.clone();
    g.unit = "nginx.service".into();
    assert_eq!(
        matches(&set.policies()[0], &g, &state, T0),
        Err(Mismatch::Unit("nginx.service"))
    );
    g.unit = String::new();
    assert_eq!(
        matches(&set.policies()[0], &g, &state, T0),
        Err(Mismatch::NoUnit)
    );
    let mut g = f.clone();
    g.labels.clear();
    assert_eq!(
        matches(&set.policies()[0], &g, &state, T0),
        Err(Mismatch::HostLabel {
            key: "env",
            want: "prod",
            got: None
        })
    );
}

fn set_with_match(matcher: &str) -> PolicySet {
    set(&format!(
        "policies:\n  - name: p\n    match: {matcher}\n    mode: auto\n    actions: [restart_unit]\n"
    ))
}

#[test]
fn thresholds_count_lines_within_the_sliding_window() {
    let set = set_with_match("{ cause: [upstream_refused], threshold: { count: 10, within: 1m } }");
    let state = FleetState::new();
    let p = &set.policies()[0];
    let mut f = finding("web-1");
    // 100 lines evenly over 10 minutes: about 10 in the last minute.
    f.first_seen = T0 - 10 * MIN;
    f.last_seen = T0;
    f.count = 100;
    assert_eq!(lines_within(&f, Duration::from_secs(60), T0), 9);
    assert_eq!(
        matches(p, &f, &state, T0),
        Err(Mismatch::Threshold {
            seen: 9,
            need: 10,
            within: Duration::from_secs(60)
        })
    );
    f.count = 120;
    assert_eq!(matches(p, &f, &state, T0), Ok(()));
    // All lines inside the window count; none once the window has passed them.
    f.first_seen = T0 - 30_000;
    f.count = 10;
    assert_eq!(matches(p, &f, &state, T0), Ok(()));
    assert_eq!(lines_within(&f, Duration::from_secs(60), T0 + 2 * MIN), 0);
}

#[test]
fn below_its_threshold_a_finding_is_watched_not_handed_to_a_lower_catch_all() {
    let set = set("policies:
  - name: restart-when-crashing
    priority: 80
    match: { cause: [upstream_refused], threshold: { count: 5, within: 5m } }
    mode: approve
    actions: [restart_unit]
  - name: escalate-everything-else
    priority: 0
    match: { cause: [upstream_refused] }
    mode: auto
    actions: [escalate]
");
    let mut state = FleetState::new();
    let mut f = finding("web-1");
    f.count = 1;
    f.first_seen = T0;
    let d = step(&set, &mut state, &f, T0, Options::default());
    assert_eq!(
        d.outcome,
        Outcome::Held {
            guard: Guard::Threshold,
            until: None
        }
    );
    assert_eq!(
        d.policy.map(|p| p.name.as_str()),
        Some("restart-when-crashing")
    );
    // Past the threshold, the policy that watched it decides.
    f.count = 5;
    let d = step(&set, &mut state, &f, T0 + 1_000, Options::default());
    assert_eq!(d.outcome, Outcome::AwaitApproval);
    assert_eq!(
        d.policy.map(|p| p.name.as_str()),
        Some("restart-when-crashing")
    );
}

#[test]
fn cooldown_holds_until_it_ends() {
    let set = one(&format!(
        "{AUTO}    guards: {{ cooldown: 5m, fleet: {{ max_concurrent: 10 }} }}\n"
    ));
    let mut state = FleetState::new();
    let f = finding("web-1");
    assert_eq!(
        step(&set, &mut state, &f, T0, Options::default()).outcome,
        Outcome::Execute
    );
    state.record_finished(&format!("web-1-{T0}"));
    let d = step(&set, &mut state, &f, T0 + MIN, Options::default());
    assert_eq!(
        d.outcome,
        Outcome::Held {
            guard: Guard::Cooldown,
            until: Some(T0 + 5 * MIN)
        }
    );
    assert_eq!(
        d.verdicts.unwrap().cooldown,
        CooldownVerdict::Cooling {
            last: T0,
            until: T0 + 5 * MIN
        }
    );
    assert_eq!(
        step(&set, &mut state, &f, T0 + 5 * MIN, Options::default()).outcome,
        Outcome::Execute
    );
}

#[test]
fn a_host_with_an_action_in_flight_is_held() {
    let set = one(&format!("{AUTO}    guards: {{ cooldown: 1s }}\n"));
    let mut state = FleetState::new();
    let f = finding("web-1");
    assert_eq!(
        step(&set, &mut state, &f, T0, Options::default()).outcome,
        Outcome::Execute
    );
    let d = step(&set, &mut state, &f, T0 + MIN, Options::default());
    assert_eq!(
        d.outcome,
        Outcome::Held {
            guard: Guard::Busy,
            until: None
        }
    );
    assert!(state.record_finished(&format!("web-1-{T0}")).is_some());
    assert!(state.record_finished(&format!("web-1-{T0}")).is_none());
    assert_eq!(
        step(&set, &mut state, &f, T0 + 2 * MIN, Options::default()).outcome,
        Outcome::Execute
    );
}

#[test]
fn exhausted_attempts_escalate_once_then_hold_and_reset_after_a_healthy_window() {
    let set = one(&format!(
        "{AUTO}    guards: {{ cooldown: 1s, max_attempts: 2, attempts_window: 1h }}\n"
    ));
    let mut state = FleetState::new();
    let f = finding("web-1");
    let mut now = T0;
    for _ in 0..2 {
        assert_eq!(
            step(&set, &mut state, &f, now, Options::default()).outcome,
            Outcome::Execute
        );
        state.record_finished(&format!("web-1-{now}"));
        now += MIN;
    }
    assert_eq!(
        step(&set, &mut state, &f, now, Options::default()).outcome,
        Outcome::Escalate {
            why: Why::AttemptsExhausted {
                attempts: 2,
                max: 2
            }
        }
    );
    now += MIN;
    assert_eq!(
        step(&set, &mut state, &f, now, Options::default()).outcome,
        Outcome::Held {
            guard: Guard::MaxAttempts,
            until: None
        }
    );
    // Healthy for less than the window: the attempts still count.
    let mut resolved = f.clone();
    resolved.resolved = true;
    state.record_finding(&resolved, now, "");
    now += 30 * MIN;
    assert_eq!(
        step(&set, &mut state, &f, now, Options::default()).outcome,
        Outcome::Held {
            guard: Guard::MaxAttempts,
            until: None
        }
    );
    // Healthy for the whole window: they reset.
    state.record_finding(&resolved, now, "");
    now += 60 * MIN;
    assert_eq!(state.attempts("web-1", "p", now), (0, false));
    assert_eq!(
        step(&set, &mut state, &f, now, Options::default()).outcome,
        Outcome::Execute
    );
    assert_eq!(state.attempts("web-1", "p", now), (1, false));
}

#[test]
fn fleet_limits_count_every_in_flight_action_of_every_policy() {
    let set = set("policies:
  - { name: a, match: { cause: [upstream_refused] }, mode: auto, actions: [restart_unit], guards: { fleet: { max_concurrent: 2, max_percent: 100 } } }
  - { name: b, match: { cause: [upstream_reset] }, mode: auto, actions: [restart_unit], guards: { fleet: { max_concurrent: 2, max_percent: 100 } } }
");
    let mut state = FleetState::new();
    for i in 0..10 {
        state.host_online(&format!("web-{i}"), BTreeMap::new(), "");
    }
    let mut reset = finding("web-0");
    reset.cause = Cause::UpstreamReset;
    assert_eq!(
        step(&set, &mut state, &reset, T0, Options::default()).outcome,
        Outcome::Execute
    );
    assert_eq!(
        step(&set, &mut state, &finding("web-1"), T0, Options::default()).outcome,
        Outcome::Execute
    );
    let d = step(&set, &mut state, &finding("web-2"), T0, Options::default());
    assert_eq!(
        d.outcome,
        Outcome::Held {
            guard: Guard::Fleet,
            until: None
        }
    );
    assert_eq!(
        d.verdicts.unwrap().fleet,
        FleetVerdict::Full {
            after: 3,
            limit: 2,
            online: 10
        }
    );
}

#[test]
fn max_percent_rounds_up_so_a_small_fleet_heals_one_host_at_a_time() {
    let set = one(&format!(
        "{AUTO}    guards: {{ fleet: {{ max_concurrent: 50, max_percent: 10 }} }}\n"
    ));
    let mut state = FleetState::new();
    for i in 0..3 {
        state.host_online(&format!("web-{i}"), BTreeMap::new(), "");
    }
    let d = step(&set, &mut state, &finding("web-0"), T0, Options::default());
    assert_eq!(d.outcome, Outcome::Execute);
    assert_eq!(
        d.verdicts.unwrap().fleet,
        FleetVerdict::Clear {
            after: 1,
            limit: 1,
            online: 3
        }
    );
    assert_eq!(
        step(&set, &mut state, &finding("web-1"), T0, Options::default()).outcome,
        Outcome::Held {
            guard: Guard::Fleet,
            until: None
        }
    );
}

#[test]
fn a_storm_escalates_once_holds_every_host_and_ends_with_its_window() {
    let set = one(&format!(
        "{AUTO}    guards: {{ fleet: {{ max_concurrent: 100 }}, storm: {{ hosts_percent: 30, min_hosts: 3, within: 2m }} }}\n"
    ));
    let mut state = FleetState::new();
    for i in 0..10 {
        state.host_online(&format!("web-{i}"), BTreeMap::new(), "");
    }
    // Two hosts: below both 30% of 10 (3) and min_hosts.
    assert_eq!(
        step(&set, &mut state, &finding("web-0"), T0, Options::default()).outcome,
        Outcome::Execute
    );
    assert_eq!(
        step(&set, &mut state, &finding("web-1"), T0, Options::default()).outcome,
        Outcome::Execute
    );
    let d = step(&set, &mut state, &finding("web-2"), T0, Options::default());
    assert_eq!(
        d.outcome,
        Outcome::Escalate {
            why: Why::Storm {
                hosts: 3,
                online: 10,
                need: 3
            }
        }
    );
    let d = step(
        &set,
        &mut state,
        &finding("web-3"),
        T0 + 1000,
        Options::default(),
    );
    assert_eq!(
        d.outcome,
        Outcome::Held {
            guard: Guard::Storm,
            until: Some(T0 + 2 * MIN)
        }
    );
    // Offline hosts do not count.
    for i in 0..4 {
        state.host_offline(&format!("web-{i}"));
    }
    let (hosts, _) = state.hosts_with_cause_since(Cause::UpstreamRefused, T0 - MIN, 100);
    assert_eq!(hosts, 0);
}

#[test]
fn a_storm_after_a_quiet_window_is_a_new_episode() {
    let set = one(&format!(
        "{AUTO}    guards: {{ storm: {{ hosts_percent: 1, min_hosts: 1, within: 1m }} }}\n"
    ));
    let mut state = FleetState::new();
    let f = finding("web-0");
    assert!(matches!(
        step(&set, &mut state, &f, T0, Options::default()).outcome,
        Outcome::Escalate {
            why: Why::Storm { .. }
        }
    ));
    assert!(matches!(
        step(&set, &mut state, &f, T0 + 1000, Options::default()).outcome,
        Outcome::Held {
            guard: Guard::Storm,
            ..
        }
    ));
    let mut later = f.clone();
    later.last_seen = T0 + 10 * MIN;
    assert!(matches!(
        step(&set, &mut state, &later, T0 + 10 * MIN, Options::default()).outcome,
        Outcome::Escalate {
            why: Why::Storm { .. }
        }
    ));
}

#[test]
fn escalate_only_policies_skip_host_guards_but_keep_the_cooldown() {
    let set = one(
        "    mode: auto\n    actions: [escalate]\n    guards: { cooldown: 30m, fleet: { max_concurrent: 1 } }\n",
    );
    let mut state = FleetState::new();
    // Another host busy would fill max_concurrent 1; escalation does not care.
    state.record_dispatched(
        "x",
        InFlight {
            host: "web-9".into(),
            policy: "other".into(),
            cause: Cause::UpstreamRefused,
            since: T0,
            chain: None,
        },
        Duration::from_secs(3600),
        T0,
    );
    let d = step(&set, &mut state, &finding("web-1"), T0, Options::default());
    assert_eq!(d.outcome, Outcome::Escalate { why: Why::Policy });
    let v = d.verdicts.unwrap();
    assert_eq!(v.fleet, FleetVerdict::NotApplicable);
    assert_eq!(v.busy, BusyVerdict::NotApplicable);
    assert_eq!(v.attempts, AttemptsVerdict::NotApplicable);
    assert_eq!(
        step(
            &set,
            &mut state,
            &finding("web-1"),
            T0 + MIN,
            Options::default()
        )
        .outcome,
        Outcome::Held {
            guard: Guard::Cooldown,
            until: Some(T0 + 30 * MIN)
        }
    );
}

#[test]
fn the_state_round_trips_through_json_with_its_indices_rebuilt() {
    let set = one(&format!(
        "{AUTO}    guards: {{ fleet: {{ max_concurrent: 5 }}, storm: {{ hosts_percent: 50, min_hosts: 2, within: 2m }} }}\n"
    ));
    let mut state = FleetState::new();
    step(&set, &mut state, &finding("web-0"), T0, Options::default());
    state.host_online("web-1", BTreeMap::new(), "");
    let json = serde_json::to_string(&state).unwrap();
    let back: FleetState = serde_json::from_str(&json).unwrap();
    assert_eq!(back.data(), state.data());
    assert_eq!(back.online_hosts(), 2);
    assert_eq!(back.busy_hosts(), 1);
    assert_eq!(
        back.hosts_with_cause_since(Cause::UpstreamRefused, T0 - MIN, 10),
        (1, Some(T0))
    );
    assert!(serde_json::from_str::<FleetState>(r#"{"hostz": {}}"#).is_err());
}
