//! Properties of the incident state machine (`decide::incident`, pure) under any sequence of
//! failing and resolving findings, decisions, action results, approvals ending and clock steps,
//! driven the way the dispatcher drives it:
//! - never silent: after a failing finding is decided (other than watched below a threshold or
//!   waiting for another action on the host), the incident has an action in flight, a pending
//!   approval or a human paged;
//! - never noisy: one first page per incident, and re-notifications no closer together than
//!   the re-notify interval, only while it keeps failing.

// Helpers outside `#[test]` fns: a failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

use gatemend_controller::decide::incident::{self, Incident};
use gatemend_controller::decide::{Finding, Guard, Outcome, Stage, Why};
use proptest::prelude::*;

const RENOTIFY_MS: i64 = 600_000;

fn finding(k: u8) -> Finding {
    serde_json::from_value(serde_json::json!({
        "id": format!("web1/upstream_refused/unix:/run/php/php8.2-fpm.sock#{k}"),
        "host": "web1", "cause": "upstream_refused", "root_cause": "service_down",
        "upstream": "unix:/run/php/php8.2-fpm.sock", "unit": "php8.2-fpm.service",
        "first_seen": 1, "last_seen": 2,
    }))
    .unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    /// Finding `k` fails again and is decided with this outcome.
    Fail(u8, Outcome),
    /// Finding `k` resolved.
    Resolve(u8),
    /// The chain in flight ended.
    ChainEnded(bool),
    /// The pending approval was approved, denied or expired.
    ApprovalEnded,
    /// The clock moves (ms); the dispatcher's tick runs.
    Tick(i64),
}

fn outcome() -> impl Strategy<Value = Outcome> {
    let guard = prop_oneof![
        Just(Guard::Storm),
        Just(Guard::Busy),
        Just(Guard::Cooldown),
        Just(Guard::MaxAttempts),
        Just(Guard::Fleet),
        Just(Guard::Threshold),
    ];
    prop_oneof![
        Just(Outcome::Execute),
        Just(Outcome::AwaitApproval),
        Just(Outcome::DryRun),
        Just(Outcome::NoPolicy),
        Just(Outcome::Escalate { why: Why::Policy }),
        Just(Outcome::Escalate {
            why: Why::AttemptsExhausted {
                attempts: 3,
                max: 3
            }
        }),
        (guard, proptest::option::of(0i64..1_000_000))
            .prop_map(|(guard, until)| Outcome::Held { guard, until }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, outcome()).prop_map(|(k, o)| Op::Fail(k, o)),
        1 => (0u8..3).prop_map(Op::Resolve),
        1 => any::<bool>().prop_map(Op::ChainEnded),
        1 => Just(Op::ApprovalEnded),
        2 => (0i64..400_000).prop_map(Op::Tick),
    ]
}

/// What the dispatcher sent a human.
#[derive(Debug, Default)]
struct Pages {
    first: u32,
    renotified_at: Vec<i64>,
}

/// The dispatcher's use of the incident for one decided failing finding.
fn decided(i: &mut Incident, f: &Finding, outcome: Outcome, now: i64, pages: &mut Pages) {
    i.failing(f);
    let page = |i: &mut Incident, pages: &mut Pages| {
        if i.paged.is_none() {
            pages.first += 1;
            i.page(now, RENOTIFY_MS, false, None);
        }
    };
    match outcome {
        Outcome::Execute if i.chain.is_none() => {
            i.acting("chain");
        }
        Outcome::AwaitApproval => {
            i.awaiting("approval", now + 1_800_000);
            // The approval request notifies: it is the incident's page.
            page(i, pages);
        }
        Outcome::Held { guard, until } => {
            i.held(guard, until, now);
            if guard == Guard::Storm && i.paged.is_none() {
                i.page(now, 0, true, None);
            }
        }
        Outcome::Escalate { .. } => page(i, pages),
        _ => {}
    }
    if incident::page_for(i, &outcome, now, now).is_some() {
        page(i, pages);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_failing_incident_is_always_handled_and_pages_once_per_interval(
        ops in proptest::collection::vec(op(), 1..80)
    ) {
        let mut now = 1_000_000i64;
        let mut incident = Incident::open(&finding(0), now);
        let mut pages = Pages::default();
        for op in ops {
            if !incident.is_open() {
                break;
            }
            match op {
                Op::Fail(k, outcome) => {
                    decided(&mut incident, &finding(k), outcome, now, &mut pages);
                    let quiet = matches!(
                        outcome,
                        Outcome::Held { guard: Guard::Threshold | Guard::Busy, .. }
                    );
                    prop_assert!(
                        quiet || incident.handled(now).is_some(),
                        "silent after {outcome:?}: {incident:#?}"
                    );
                }
                Op::Resolve(k) => {
                    let change = incident.finding_resolved(&finding(k).id);
                    prop_assert_eq!(change.is_some(), incident.failing.is_empty());
                    if incident.failing.is_empty() {
                        prop_assert_eq!(incident.stage, Stage::Resolved);
                    }
                }
                Op::ChainEnded(ok) => {
                    incident.chain_ended("chain", ok, now);
                    if !ok && incident.paged.is_none() {
                        // A failed chain escalates.
                        pages.first += 1;
                        incident.page(now, RENOTIFY_MS, false, None);
                    }
                }
                Op::ApprovalEnded => incident.approval_ended("approval"),
                Op::Tick(dt) => {
                    now += dt;
                    if incident.renotify_due(now) {
                        incident.page(now, 0, false, None);
                        pages.renotified_at.push(now);
                    }
                }
            }
        }
        prop_assert!(pages.first <= 1, "paged {} times: {incident:#?}", pages.first);
        let first = incident.paged.as_ref().map(|p| p.first_at);
        let mut last = first;
        for at in &pages.renotified_at {
            let before = last.unwrap();
            prop_assert!(at - before >= RENOTIFY_MS, "re-notified {} ms after the page before", at - before);
            last = Some(*at);
        }
    }
}
