//! Incidents: the question an operator asks — is this site down right now, and who is
//! handling it? Pure: plain data and transitions, the clock passed in.
//!
//! An incident is one fault of one upstream on one host. Every finding of that host whose
//! upstream (or, without one, unit or cause) is the incident's joins it while it is open: a
//! reset logged while php-fpm restarts, the `no live upstreams` lines after the refusals. The
//! findings, decisions, actions, approvals and pages of those findings all carry the incident's
//! id in the audit log.
//!
//! Its lifecycle is [`Stage`]: detected, then acting, awaiting approval, held or escalated,
//! then recovering (an action succeeded, the agent has not yet seen the site work), then
//! resolved: every finding of it resolved, which the agent says only with evidence that
//! requests through that upstream succeed again.
//!
//! The invariant: while an incident has an open finding (its upstream keeps failing), it has an
//! action in flight, a pending approval, or a human paged ([`Incident::handled`]). A decision
//! that leaves it with none of them pages, once ([`page_for`]); the page is re-sent every
//! `renotify` while it keeps failing, and a paged incident says when it resolves.

use std::collections::BTreeSet;
use std::fmt;

use gatemend_proto::{Cause, RootCause};
use serde::{Deserialize, Serialize};

use super::finding::{Finding, UnixMs};
use super::{Guard, Outcome};

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Seen; nothing decided that acts or pages yet (watched below a threshold, say).
    Detected,
    /// An action chain runs.
    Acting,
    /// An operator is asked to approve.
    AwaitingApproval,
    /// A guard holds the action; a human is paged.
    Held,
    /// A human is paged; nothing runs.
    Escalated,
    /// An action succeeded; waiting for the agent to see the site work.
    Recovering,
    /// Every finding resolved with evidence that the site works.
    Resolved,
}

impl Stage {
    /// Every stage, in lifecycle order.
    pub const ALL: [Stage; 7] = [
        Stage::Detected,
        Stage::Acting,
        Stage::AwaitingApproval,
        Stage::Held,
        Stage::Escalated,
        Stage::Recovering,
        Stage::Resolved,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Stage::Detected => "detected",
            Stage::Acting => "acting",
            Stage::AwaitingApproval => "awaiting_approval",
            Stage::Held => "held",
            Stage::Escalated => "escalated",
            Stage::Recovering => "recovering",
            Stage::Resolved => "resolved",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// The pages sent about an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paged {
    /// The first page.
    pub first_at: UnixMs,
    /// The latest page (first or re-notification).
    pub last_at: UnixMs,
    /// Pages sent: the first and every re-notification.
    pub count: u32,
    /// How long after the latest page an incident still failing is paged again.
    pub renotify_ms: i64,
    /// Covered by the page of a storm of its cause (sent for another host): re-notified with
    /// the storm, not on its own.
    #[serde(default)]
    pub by_storm: bool,
    /// Where the first page went when its policy named a webhook: re-notifications and the
    /// resolution notice go there too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

/// A guard holding the incident's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hold {
    /// The guard's id.
    pub guard: GuardId,
    /// When it ends at the earliest, when known.
    pub until: Option<UnixMs>,
}

/// A guard, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardId {
    Storm,
    Busy,
    Cooldown,
    MaxAttempts,
    Fleet,
    Threshold,
}

impl From<Guard> for GuardId {
    fn from(g: Guard) -> GuardId {
        match g {
            Guard::Storm => GuardId::Storm,
            Guard::Busy => GuardId::Busy,
            Guard::Cooldown => GuardId::Cooldown,
            Guard::MaxAttempts => GuardId::MaxAttempts,
            Guard::Fleet => GuardId::Fleet,
            Guard::Threshold => GuardId::Threshold,
        }
    }
}

/// One fault of one upstream on one host; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incident {
    /// The id of the finding that opened it: the audit records' `incident`.
    pub id: String,
    /// What its findings share: the upstream, else the unit, else the cause ([`key_of`]).
    pub key: String,
    /// The unit behind the upstream, when diagnosis found one.
    #[serde(default)]
    pub unit: String,
    /// The cause and root cause of its latest failing finding.
    pub cause: Cause,
    pub root_cause: RootCause,
    pub opened_at: UnixMs,
    pub stage: Stage,
    /// Its findings still failing (not resolved), by id.
    pub failing: BTreeSet<String>,
    /// The action chain in flight for it.
    #[serde(default)]
    pub chain: Option<String>,
    /// A short cooldown holds its action: its finding's next revision retries by then, or the
    /// incident is unhandled ([`SHORT_COOLDOWN_MS`]).
    #[serde(default)]
    pub retry_by: Option<UnixMs>,
    /// Its pending approval: (id, expires at).
    #[serde(default)]
    pub approval: Option<(String, UnixMs)>,
    /// The guard holding its action, while one does.
    #[serde(default)]
    pub hold: Option<Hold>,
    /// The pages sent about it.
    #[serde(default)]
    pub paged: Option<Paged>,
    /// When its latest action succeeded, by the host's clock (the clock of its findings'
    /// `last_seen`): lines seen before that were logged before the fix.
    #[serde(default)]
    pub mended_at: Option<UnixMs>,
    /// When it started recovering, by the controller's clock.
    #[serde(default)]
    pub recovering_since: Option<UnixMs>,
    /// The latest finding whose decision waits for the incident to settle, and until when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settling: Option<(Finding, UnixMs)>,
}

/// What a finding's incident is keyed by: its upstream, else its unit, else its cause.
pub fn key_of(f: &Finding) -> String {
    if !f.upstream.is_empty() {
        f.upstream.clone()
    } else if !f.unit.is_empty() {
        format!("unit:{}", f.unit)
    } else {
        format!("cause:{}", f.cause)
    }
}

/// Who is handling an incident now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler<'a> {
    /// An action chain in flight.
    Action(&'a str),
    /// A pending approval.
    Approval(&'a str),
    /// A short cooldown, after which the next revision retries (by then at the latest).
    Retry(UnixMs),
    /// A human was paged.
    Paged,
}

/// A cooldown that ends within this long of the decision it held is a retry, not a hold a
/// human must hear of: the finding's next revision after it is decided again.
pub const SHORT_COOLDOWN_MS: i64 = 30_000;
/// How long after a short cooldown ends its retry may take to come (the agent re-sends a
/// failing finding every few seconds) before the incident counts as unhandled.
pub const RETRY_GRACE_MS: i64 = 30_000;

/// How long after an incident opens with a root cause diagnosis could not establish, or after
/// its action was verified, a decision to ask or page waits for the next revision: the agent's
/// probes may still show the moment before the fault (or before the service finished
/// starting), and a second later the same finding says what really happened.
pub const SETTLE_MS: i64 = 5_000;

/// A stage change to audit: (from, to).
pub type Change = Option<(Stage, Stage)>;

impl Incident {
    /// Opens the incident of `f`, failing.
    pub fn open(f: &Finding, now: UnixMs) -> Incident {
        Incident {
            id: f.id.clone(),
            key: key_of(f),
            unit: f.unit.clone(),
            cause: f.cause,
            root_cause: f.root_cause,
            opened_at: now,
            stage: Stage::Detected,
            failing: BTreeSet::from([f.id.clone()]),
            chain: None,
            retry_by: None,
            approval: None,
            hold: None,
            paged: None,
            mended_at: None,
            recovering_since: None,
            settling: None,
        }
    }

    /// Whether finding `f` belongs to this (open) incident: it is one of its findings, or it
    /// shares its key, or it names the unit of its action in flight.
    pub fn takes(&self, f: &Finding) -> bool {
        self.failing.contains(&f.id)
            || self.id == f.id
            || self.key == key_of(f)
            || (self.chain.is_some() && !self.unit.is_empty() && self.unit == f.unit)
    }

    pub fn is_open(&self) -> bool {
        self.stage != Stage::Resolved
    }

    /// A failing revision of `f` arrived.
    pub fn failing(&mut self, f: &Finding) {
        self.failing.insert(f.id.clone());
        self.cause = f.cause;
        self.root_cause = f.root_cause;
        if self.unit.is_empty() {
            self.unit.clone_from(&f.unit);
        }
    }

    /// Finding `id` resolved (with evidence that the site works); when it was the last failing
    /// one, the incident is resolved.
    pub fn finding_resolved(&mut self, id: &str) -> Change {
        self.failing.remove(id);
        if self.failing.is_empty() {
            self.hold = None;
            return self.to(Stage::Resolved);
        }
        None
    }

    /// Who handles it at `now`: an action in flight, a pending unexpired approval, a page.
    pub fn handled(&self, now: UnixMs) -> Option<Handler<'_>> {
        if let Some(chain) = &self.chain {
            return Some(Handler::Action(chain));
        }
        if let Some((id, expires_at)) = &self.approval
            && *expires_at > now
        {
            return Some(Handler::Approval(id));
        }
        if let Some(by) = self.retry_by
            && now <= by
            && self.paged.is_none()
        {
            return Some(Handler::Retry(by));
        }
        self.paged.as_ref().map(|_| Handler::Paged)
    }

    /// An action of it succeeded and was verified at `at` (the host's clock).
    pub fn action_succeeded(&mut self, at: UnixMs) {
        self.mended_at = Some(self.mended_at.map_or(at, |m| m.max(at)));
    }

    /// Whether a finding whose latest line is at `last_seen` (the host's clock) only reports
    /// what happened before its action mended it.
    pub fn before_mended(&self, last_seen: UnixMs) -> bool {
        self.stage == Stage::Recovering && self.mended_at.is_some_and(|m| last_seen <= m)
    }

    /// Whether a short cooldown's retry is overdue at `now`: still failing, nothing else
    /// handling it, and the retry did not come in time.
    pub fn retry_overdue(&self, now: UnixMs) -> bool {
        self.is_open()
            && !self.failing.is_empty()
            && self.retry_by.is_some_and(|by| now > by)
            && self.chain.is_none()
            && self.paged.is_none()
            && self.approval.as_ref().is_none_or(|(_, e)| *e <= now)
    }

    /// An action chain started for it.
    pub fn acting(&mut self, chain: &str) -> Change {
        self.chain = Some(chain.to_owned());
        self.retry_by = None;
        self.hold = None;
        self.to(Stage::Acting)
    }

    /// Its chain ended: succeeded (recovering, until the agent sees the site work) or not
    /// (the caller pages).
    pub fn chain_ended(&mut self, chain: &str, succeeded: bool, now: UnixMs) -> Change {
        if self.chain.as_deref() != Some(chain) {
            return None;
        }
        self.chain = None;
        if succeeded && self.is_open() {
            self.recovering_since = Some(now);
            return self.to(Stage::Recovering);
        }
        None
    }

    /// Why a decision of `outcome` about `f` (a request for approval, a page, no policy, a dry
    /// run) waits for the finding's next revision instead ([`SETTLE_MS`]): the incident just
    /// opened and diagnosis does not know the root cause yet, or its action was just verified
    /// and the service may still be starting. `None`: decide now.
    pub fn settling(&self, f: &Finding, outcome: &Outcome, now: UnixMs) -> Option<String> {
        let asks_or_pages = matches!(
            outcome,
            Outcome::AwaitApproval
                | Outcome::Escalate {
                    why: super::Why::Policy
                }
                | Outcome::NoPolicy
        );
        if !asks_or_pages || self.paged.is_some() {
            return None;
        }
        if now.saturating_sub(self.opened_at) < SETTLE_MS {
            let unknown = if f.root_cause == RootCause::Unknown {
                " (diagnosis does not know the root cause yet: the probes may still show the \
                 moment before the fault)"
            } else {
                ""
            };
            return Some(format!(
                "the incident is new{unknown}; other hosts may show the same cause (a storm) \
                 or diagnosis may change: decided again when it settles"
            ));
        }
        if self.stage == Stage::Recovering
            && self
                .recovering_since
                .is_some_and(|r| now.saturating_sub(r) < SETTLE_MS)
        {
            return Some(
                "its action was just verified and the service may still be starting; decided \
                 again when it settles"
                    .to_owned(),
            );
        }
        None
    }

    /// Keeps `f` to be decided again once the incident settles ([`Incident::settled_due`]);
    /// handled meanwhile, as a short cooldown is.
    pub fn settle(&mut self, f: &Finding, now: UnixMs) {
        let until = self
            .opened_at
            .max(self.recovering_since.unwrap_or(i64::MIN))
            .saturating_add(SETTLE_MS)
            .max(now);
        self.settling = Some((f.clone(), until));
        self.retry_by = Some(until.saturating_add(RETRY_GRACE_MS));
    }

    /// Whether a settling finding is due to be decided again at `now`.
    pub fn settled_due(&self, now: UnixMs) -> bool {
        self.is_open()
            && self
                .settling
                .as_ref()
                .is_some_and(|(_, until)| *until <= now)
    }

    /// The settling finding, to decide again; the incident no longer waits.
    pub fn take_settled(&mut self) -> Option<Finding> {
        // Decided afresh: whatever it decides now says who handles the incident.
        self.retry_by = None;
        self.settling.take().map(|(f, _)| f)
    }

    /// An approval was requested for it.
    pub fn awaiting(&mut self, approval: &str, expires_at: UnixMs) -> Change {
        self.approval = Some((approval.to_owned(), expires_at));
        self.hold = None;
        self.to(Stage::AwaitingApproval)
    }

    /// Its approval was approved, denied or expired: no longer pending.
    pub fn approval_ended(&mut self, approval: &str) {
        if self.approval.as_ref().is_some_and(|(id, _)| id == approval) {
            self.approval = None;
        }
    }

    /// A guard holds its action (decided at `now`).
    pub fn held(&mut self, guard: Guard, until: Option<UnixMs>, now: UnixMs) -> Change {
        self.hold = Some(Hold {
            guard: guard.into(),
            until,
        });
        if guard == Guard::Cooldown
            && let Some(until) = until
            && until.saturating_sub(now) <= SHORT_COOLDOWN_MS
        {
            self.retry_by = Some(until.saturating_add(RETRY_GRACE_MS));
            return None;
        }
        match guard {
            // Watched below the threshold, or waiting for another action on the host: nothing
            // is held that a human must hear of.
            Guard::Threshold | Guard::Busy => None,
            // Mended and waiting for the agent to see the site work: still recovering.
            _ if self.chain.is_some() || self.stage == Stage::Recovering => None,
            _ => self.to(Stage::Held),
        }
    }

    /// A human was paged about it at `now` (the first page, or one that covers it; a later
    /// call counts a re-notification and keeps the first page's settings).
    pub fn page(
        &mut self,
        now: UnixMs,
        renotify_ms: i64,
        by_storm: bool,
        webhook: Option<String>,
    ) -> Change {
        match &mut self.paged {
            Some(p) => {
                p.last_at = now;
                p.count = p.count.saturating_add(1);
            }
            None => {
                self.paged = Some(Paged {
                    first_at: now,
                    last_at: now,
                    count: 1,
                    renotify_ms,
                    by_storm,
                    webhook,
                });
            }
        }
        match self.stage {
            Stage::Detected | Stage::Recovering => self.to(Stage::Escalated),
            _ => None,
        }
    }

    /// Whether a page about it is due again at `now`: paged (on its own), still failing, and
    /// the re-notify interval since the latest page has passed.
    pub fn renotify_due(&self, now: UnixMs) -> bool {
        self.is_open()
            && !self.failing.is_empty()
            && self.paged.as_ref().is_some_and(|p| {
                !p.by_storm && p.renotify_ms > 0 && now.saturating_sub(p.last_at) >= p.renotify_ms
            })
    }

    fn to(&mut self, stage: Stage) -> Change {
        if self.stage == stage {
            return None;
        }
        let from = std::mem::replace(&mut self.stage, stage);
        Some((from, stage))
    }
}

/// Why a human must be paged about `incident` after a decision of `outcome`, or `None` when
/// no page is needed: something already handles it, or the outcome is one of those that need
/// none (an action runs; an approval request, which notifies by itself; a finding watched below
/// its threshold; a host busy with another action, decided again at the next revision; a storm
/// whose one page covers every host).
///
/// `last_seen` is the deciding finding's latest line (the host's clock): a finding that only
/// reports lines logged before the incident's action mended it pages nobody.
pub fn page_for(
    incident: &Incident,
    outcome: &Outcome,
    last_seen: UnixMs,
    now: UnixMs,
) -> Option<String> {
    if !incident.is_open() || incident.failing.is_empty() || incident.before_mended(last_seen) {
        return None;
    }
    let why = match outcome {
        Outcome::Execute | Outcome::AwaitApproval | Outcome::Resolved => return None,
        Outcome::Held {
            guard: Guard::Threshold | Guard::Busy | Guard::Storm,
            ..
        } => return None,
        Outcome::Held { guard, until } => {
            let until = until.map_or_else(String::new, |t| format!(" until {}", super::Time(t)));
            format!(
                "the {guard} guard holds the action{until}; nothing runs meanwhile and the \
                 upstream keeps failing"
            )
        }
        Outcome::Escalate { why } => {
            // An escalation pages the incident once, even while an approval waits.
            if incident.paged.is_some() {
                return None;
            }
            return Some(why.to_string());
        }
        Outcome::NoPolicy => "no policy matches; nothing runs".to_owned(),
        Outcome::DryRun => "dry run: the plan is recorded and nothing runs".to_owned(),
    };
    if incident.handled(now).is_some() {
        return None;
    }
    Some(why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::Why;

    fn finding(id: &str, upstream: &str) -> Finding {
        serde_json::from_value(serde_json::json!({
            "id": id, "host": "web1", "cause": "upstream_refused", "root_cause": "service_down",
            "upstream": upstream, "unit": "php8.2-fpm.service", "first_seen": 1, "last_seen": 2,
        }))
        .unwrap()
    }

    #[test]
    fn findings_of_one_upstream_join_one_incident_and_resolve_it_together() {
        let a = finding("web1/a#1", "unix:/run/php/php8.2-fpm.sock");
        let b = finding("web1/b#2", "unix:/run/php/php8.2-fpm.sock");
        let other = finding("web1/c#3", "127.0.0.1:3000");
        let mut i = Incident::open(&a, 10);
        assert!(i.takes(&b));
        assert!(!i.takes(&{
            let mut o = other.clone();
            o.unit = "app.service".into();
            o
        }));
        i.failing(&b);
        assert_eq!(i.finding_resolved(&a.id), None);
        assert_eq!(
            i.finding_resolved(&b.id),
            Some((Stage::Detected, Stage::Resolved))
        );
    }

    #[test]
    fn a_hold_pages_once_an_action_or_approval_or_page_in_place_does_not() {
        let f = finding("web1/a#1", "unix:/run/php/php8.2-fpm.sock");
        let mut i = Incident::open(&f, 0);
        let cooldown = Outcome::Held {
            guard: Guard::Cooldown,
            until: Some(300_000),
        };
        assert!(page_for(&i, &cooldown, 0, 1).is_some());
        i.page(1, 1_800_000, false, None);
        assert_eq!(page_for(&i, &cooldown, 0, 2), None, "paged already");
        let mut acting = Incident::open(&f, 0);
        acting.acting("chain");
        assert_eq!(page_for(&acting, &cooldown, 0, 2), None);
        let mut waiting = Incident::open(&f, 0);
        waiting.awaiting("ab12", 100);
        assert_eq!(page_for(&waiting, &cooldown, 0, 50), None);
        assert!(
            page_for(&waiting, &cooldown, 0, 100).is_some(),
            "an expired approval handles nothing"
        );
        for quiet in [Guard::Threshold, Guard::Busy, Guard::Storm] {
            let held = Outcome::Held {
                guard: quiet,
                until: None,
            };
            assert_eq!(page_for(&Incident::open(&f, 0), &held, 0, 1), None);
        }
        let escalate = Outcome::Escalate { why: Why::Policy };
        assert!(page_for(&waiting, &escalate, 0, 50).is_some());
        waiting.page(50, 1_000, false, None);
        assert_eq!(page_for(&waiting, &escalate, 0, 60), None);
    }

    #[test]
    fn lines_logged_before_the_fix_page_nobody_lines_after_it_do() {
        let f = finding("web1/a#1", "unix:/run/php/php8.2-fpm.sock");
        let mut i = Incident::open(&f, 0);
        i.acting("chain");
        i.action_succeeded(5_000);
        i.chain_ended("chain", true, 5_000);
        assert_eq!(i.stage, Stage::Recovering);
        let cooldown = Outcome::Held {
            guard: Guard::Cooldown,
            until: Some(400_000),
        };
        assert_eq!(i.held(Guard::Cooldown, Some(400_000), 6_000), None);
        assert_eq!(page_for(&i, &cooldown, 4_999, 6_000), None);
        assert_eq!(page_for(&i, &cooldown, 5_000, 6_000), None);
        assert!(page_for(&i, &cooldown, 5_001, 6_000).is_some());
    }

    #[test]
    fn a_short_cooldown_is_a_retry_until_it_is_overdue_a_long_one_pages() {
        let f = finding("web1/a#1", "unix:/run/php/php8.2-fpm.sock");
        let mut i = Incident::open(&f, 0);
        let short = Outcome::Held {
            guard: Guard::Cooldown,
            until: Some(10_000),
        };
        i.held(Guard::Cooldown, Some(10_000), 1_000);
        assert_eq!(page_for(&i, &short, 0, 1_000), None);
        assert_eq!(i.handled(1_000), Some(Handler::Retry(40_000)));
        assert!(!i.retry_overdue(40_000));
        assert!(i.retry_overdue(40_001));
        i.acting("chain");
        assert!(!i.retry_overdue(50_000));
        let mut long = Incident::open(&f, 0);
        let hold = Outcome::Held {
            guard: Guard::Cooldown,
            until: Some(300_000),
        };
        long.held(Guard::Cooldown, Some(300_000), 1_000);
        assert!(page_for(&long, &hold, 0, 1_000).is_some());
    }

    #[test]
    fn a_new_incident_or_a_fresh_recovery_settles_before_asking_or_paging() {
        let mut f = finding("web1/a#1", "unix:/run/php/php8.2-fpm.sock");
        f.root_cause = RootCause::Unknown;
        let mut i = Incident::open(&f, 1_000);
        let page = Outcome::Escalate { why: Why::Policy };
        assert!(i.settling(&f, &page, 2_000).is_some());
        assert!(
            i.settling(&f, &Outcome::Execute, 2_000).is_none(),
            "a restart never waits"
        );
        assert!(i.settling(&f, &page, 6_000).is_none(), "settled");
        i.settle(&f, 2_000);
        assert_eq!(i.handled(2_000), Some(Handler::Retry(36_000)));
        assert!(!i.settled_due(5_999));
        assert!(i.settled_due(6_000));
        assert_eq!(i.take_settled().map(|s| s.id), Some(f.id.clone()));
        assert!(!i.settled_due(7_000));
        i.acting("chain");
        i.chain_ended("chain", true, 10_000);
        assert!(i.settling(&f, &Outcome::AwaitApproval, 12_000).is_some());
        assert!(i.settling(&f, &Outcome::AwaitApproval, 15_000).is_none());
    }

    #[test]
    fn a_paged_incident_is_renotified_while_it_keeps_failing() {
        let f = finding("web1/a#1", "unix:/run/php/php8.2-fpm.sock");
        let mut i = Incident::open(&f, 0);
        i.page(0, 1_000, false, None);
        assert!(!i.renotify_due(999));
        assert!(i.renotify_due(1_000));
        i.page(1_000, 1_000, false, None);
        assert_eq!(i.paged.as_ref().map(|p| p.count), Some(2));
        assert!(!i.renotify_due(1_500));
        i.finding_resolved(&f.id);
        assert!(!i.renotify_due(10_000), "resolved");
    }
}
