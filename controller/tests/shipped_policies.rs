//! The shipped `policies/` load, and every cause id has an explicit answer.

// Helpers outside `#[test]` fns: a failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use gatemend_controller::decide::{self, Finding, FleetState, Options, Outcome};
use gatemend_controller::policy;
use gatemend_proto::{ActionKind, Cause, RootCause};

fn shipped() -> policy::PolicySet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    match policy::load(&dir) {
        Ok(set) => set,
        Err(errors) => panic!(
            "{}",
            errors.iter().map(|e| format!("{e}\n")).collect::<String>()
        ),
    }
}

fn finding(cause: Cause, root_cause: RootCause) -> Finding {
    Finding {
        id: "f".into(),
        revision: 0,
        host: "web-1".into(),
        cause,
        root_cause,
        root_cause_detail: String::new(),
        upstream: "unix:/run/php/php8.2-fpm.sock".into(),
        unit: "php8.2-fpm.service".into(),
        count: 100,
        first_seen: 1_000,
        last_seen: 60_000,
        resolved: false,
        labels: BTreeMap::new(),
        edit: None,
    }
}

#[test]
fn the_shipped_policies_load() {
    let set = shipped();
    assert!(set.policies().len() >= 10);
    assert!(
        set.files()
            .iter()
            .all(|f| f.digest.to_string().starts_with("sha256:"))
    );
}

#[test]
fn every_cause_with_every_root_cause_meets_a_policy() {
    let set = shipped();
    for &cause in Cause::ALL {
        for &root in RootCause::ALL {
            let f = finding(cause, root);
            let mut state = FleetState::new();
            state.record_finding(&f, 60_000, "");
            let d = decide::decide(&set, &state, &f, 60_000, Options::default());
            assert_ne!(d.outcome, Outcome::NoPolicy, "{cause} / {root}");
        }
    }
}

#[test]
fn only_a_proven_service_down_restarts_unattended() {
    let set = shipped();
    for p in set.policies() {
        let runs_on_host = p.actions.iter().any(|a| *a != ActionKind::Escalate);
        if runs_on_host && p.mode == policy::Mode::Auto {
            assert_eq!(
                p.matcher.root_causes,
                [RootCause::ServiceDown],
                "{}",
                p.name
            );
            assert_eq!(p.actions, [ActionKind::RestartUnit], "{}", p.name);
            assert!(
                p.guards.storm.is_some(),
                "{} acts without a storm guard",
                p.name
            );
        }
    }
    let f = finding(Cause::UpstreamSocketMissing, RootCause::ServiceDown);
    let mut state = FleetState::new();
    state.record_finding(&f, 60_000, "");
    let d = decide::decide(&set, &state, &f, 60_000, Options::default());
    assert_eq!(d.outcome, Outcome::Execute);
    for (cause, root, outcome) in [
        (
            Cause::UpstreamSocketPermission,
            RootCause::SocketPermission,
            "await_approval",
        ),
        (
            Cause::UpstreamSocketMissing,
            RootCause::WrongTarget,
            "await_approval",
        ),
        (
            Cause::DnsResolutionFailed,
            RootCause::DnsFailure,
            "escalate",
        ),
        (Cause::UpstreamTlsError, RootCause::TlsFailure, "escalate"),
        (
            Cause::FpmMaxChildren,
            RootCause::CapacityExhausted,
            "escalate",
        ),
        (Cause::ConfigInvalid, RootCause::ConfigInvalid, "escalate"),
        (Cause::UpstreamRefused, RootCause::Unknown, "escalate"),
    ] {
        let f = finding(cause, root);
        let mut state = FleetState::new();
        state.record_finding(&f, 60_000, "");
        let d = decide::decide(&set, &state, &f, 60_000, Options::default());
        assert_eq!(d.outcome.id(), outcome, "{cause} / {root}");
    }
}

#[test]
fn a_proposed_edit_is_approved_by_a_human_and_without_one_the_old_answer_stands() {
    let set = shipped();
    let edit = |directive: &str| decide::Edit {
        kind: gatemend_proto::ConfigKind::Nginx,
        file: "/etc/nginx/sites-enabled/default".into(),
        block: vec![
            "http".into(),
            "server[_]".into(),
            "location[~ \\.php$]".into(),
        ],
        block_outer: vec![],
        directive: directive.into(),
        old_value: "unix:/run/php/php7.4-fpm.sock".into(),
        new_value: "unix:/run/php/php8.2-fpm.sock".into(),
        file_sha256: "00".repeat(32),
        diff: "--- a/x\n+++ b/x\n".into(),
        why: String::new(),
    };
    let decided = |f: &Finding| {
        let mut state = FleetState::new();
        state.record_finding(f, 60_000, "");
        let d = decide::decide(&set, &state, f, 60_000, Options::default());
        (d.outcome, d.policy.map(|p| p.name.clone()))
    };
    let mut f = finding(Cause::UpstreamSocketMissing, RootCause::WrongTarget);
    f.edit = Some(edit("fastcgi_pass"));
    assert_eq!(
        decided(&f),
        (Outcome::AwaitApproval, Some("edit-upstream-target".into()))
    );
    f.edit = None;
    assert_eq!(
        decided(&f),
        (
            Outcome::AwaitApproval,
            Some("reload-nginx-after-approved-fix".into())
        )
    );
    // An edit of another directive than the policy names does not ride on it.
    let mut slow = finding(Cause::UpstreamReadTimeout, RootCause::UpstreamSlow);
    slow.edit = Some(edit("proxy_read_timeout"));
    assert_eq!(
        decided(&slow),
        (Outcome::AwaitApproval, Some("edit-raise-timeout".into()))
    );
    slow.edit = Some(edit("fastcgi_pass"));
    assert_ne!(decided(&slow).1.as_deref(), Some("edit-raise-timeout"));
    // Every shipped edit is approved by a human.
    for p in set.policies() {
        if p.actions.contains(&ActionKind::EditConfig) {
            assert_eq!(p.mode, policy::Mode::Approve, "{}", p.name);
            assert!(p.matcher.edits.is_some(), "{}", p.name);
        }
    }
}
