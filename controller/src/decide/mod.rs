//! Deciding: finding + fleet state + policies + clock -> [`Decision`]. Pure: no I/O, no clock
//! of its own, no hidden state. [`decide`] reads; [`apply`] and the transitions of
//! [`FleetState`] write.
//!
//! The order of a decision:
//! 1. Policies are tried highest priority first; the first whose `match` accepts the finding
//!    decides ([`matches`]). None: [`Outcome::NoPolicy`]. One that matches in everything but
//!    its threshold holds the finding (watched: [`Guard::Threshold`]); lower-priority policies
//!    are not asked.
//! 2. Every guard of that policy gives a verdict ([`Verdicts`], kept for `explain`), and the
//!    first that objects, in this order, decides:
//!    - storm: that share of the online hosts shows the cause: escalate once, then hold;
//!    - busy: the host already has an action in flight: hold;
//!    - cooldown: this policy acted on this host too recently: hold until it ends;
//!    - max_attempts: this cause was tried that often on this host: escalate once, then hold;
//!    - fleet: one more busy host would exceed max_concurrent or max_percent: hold.
//! 3. Otherwise the mode decides: auto executes, approve awaits approval, dry_run records the
//!    plan; an escalate-only policy escalates. A controller-wide dry run turns every execute
//!    and approval into a dry run.
//!
//! Escalate-only policies run nothing on a host, so busy, max_attempts and fleet do not apply
//! to them; cooldown and storm do (one notification, not one per finding).

mod error;
mod finding;
pub mod incident;
mod state;

use std::fmt;
use std::time::Duration;

use gatemend_proto::{Cause, RootCause};

use crate::policy::{Mode, Policy, PolicySet, format_duration};

pub use error::FindingError;
pub use finding::{Edit, Finding, UnixMs};
pub use incident::{Incident, Stage};
pub use state::{
    Acted, Attempts, ChainState, Changes, FleetData, FleetState, HostState, InFlight,
    MAX_INCIDENTS_PER_HOST, Seen, StormEpisode,
};

use state::window_ms;

/// Controller-wide settings that override policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// `--dry-run`: nothing runs anywhere.
    pub dry_run: bool,
}

/// The guards, in the order they are consulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Guard {
    /// Many hosts show the same cause.
    Storm,
    /// The host already has an action in flight.
    Busy,
    /// The policy acted on the host too recently.
    Cooldown,
    /// Too many attempts on this host for this cause.
    MaxAttempts,
    /// The fleet-wide limits.
    Fleet,
    /// The finding is below the matching policy's threshold: watched, not handed to a
    /// lower-priority policy.
    Threshold,
}

impl Guard {
    /// The guard's id in output and the audit.
    pub fn id(self) -> &'static str {
        match self {
            Guard::Storm => "storm",
            Guard::Busy => "busy",
            Guard::Cooldown => "cooldown",
            Guard::MaxAttempts => "max_attempts",
            Guard::Fleet => "fleet",
            Guard::Threshold => "threshold",
        }
    }
}

impl fmt::Display for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// Why a decision escalates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The policy only escalates: nothing a host can do mends this.
    Policy,
    /// The cause was tried `attempts` times on this host and came back.
    AttemptsExhausted {
        /// Attempts made.
        attempts: u32,
        /// The policy's max_attempts.
        max: u32,
    },
    /// At least `hosts` of `online` hosts show the cause: it is likely shared.
    Storm {
        /// Hosts counted (counting stops at `need`).
        hosts: usize,
        /// Online hosts.
        online: usize,
        /// Hosts that make a storm.
        need: usize,
    },
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Policy => f.write_str("the policy escalates to a human"),
            Why::AttemptsExhausted { attempts, max } => write!(
                f,
                "{attempts} attempts (max_attempts {max}) did not mend it on this host"
            ),
            Why::Storm {
                hosts,
                online,
                need,
            } => write!(
                f,
                "storm: at least {hosts} of {online} online hosts show this cause (a storm is \
                 {need}); the cause is likely shared, holding every host"
            ),
        }
    }
}

/// What to do about a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Dispatch the policy's actions now.
    Execute,
    /// Ask an operator; dispatch on approval.
    AwaitApproval,
    /// Record the plan; nothing runs.
    DryRun,
    /// A guard holds it.
    Held {
        /// Which guard.
        guard: Guard,
        /// When the hold ends at the earliest, when that is known.
        until: Option<UnixMs>,
    },
    /// Notify a human.
    Escalate {
        /// Why.
        why: Why,
    },
    /// No policy matches.
    NoPolicy,
    /// The finding is resolved: nothing to do.
    Resolved,
}

impl Outcome {
    /// The decision kind's id: execute, await_approval, dry_run, held, escalate, no_policy,
    /// resolved.
    pub fn id(&self) -> &'static str {
        match self {
            Outcome::Execute => "execute",
            Outcome::AwaitApproval => "await_approval",
            Outcome::DryRun => "dry_run",
            Outcome::Held { .. } => "held",
            Outcome::Escalate { .. } => "escalate",
            Outcome::NoPolicy => "no_policy",
            Outcome::Resolved => "resolved",
        }
    }

    /// Whether the outcome sends something to a host or asks to (execute, dry run, approval).
    pub fn acts(&self) -> bool {
        matches!(
            self,
            Outcome::Execute | Outcome::AwaitApproval | Outcome::DryRun
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Held { guard, until } => {
                write!(f, "held by {guard}")?;
                if let Some(until) = until {
                    write!(f, " until {}", Time(*until))?;
                }
                Ok(())
            }
            Outcome::Escalate { why } => write!(f, "escalate: {why}"),
            other => f.write_str(other.id()),
        }
    }
}

/// The storm guard's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StormVerdict {
    /// The policy has no storm guard.
    Off,
    /// Fewer hosts than `need` show the cause.
    Clear {
        /// Online hosts that showed the cause within the window; when even the hosts that
        /// ever showed it are fewer than `need`, that (larger or equal) number, uncounted.
        hosts: usize,
        /// Hosts that make a storm.
        need: usize,
        /// Online hosts.
        online: usize,
    },
    /// A storm.
    Storm {
        /// Hosts counted (at least this many).
        hosts: usize,
        /// Hosts that make a storm.
        need: usize,
        /// Online hosts.
        online: usize,
        /// The storm lasts at least until then.
        until: Option<UnixMs>,
        /// No escalation yet for this episode.
        first: bool,
    },
}

/// The busy guard's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusyVerdict {
    /// Escalate-only policy.
    NotApplicable,
    /// No action in flight on the host.
    Clear,
    /// An action is in flight on the host.
    Busy,
}

/// The cooldown guard's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CooldownVerdict {
    /// The policy last acted on the host at `last` (if ever), long enough ago.
    Clear {
        /// The last act.
        last: Option<UnixMs>,
    },
    /// Too recent.
    Cooling {
        /// The last act.
        last: UnixMs,
        /// When the cooldown ends.
        until: UnixMs,
    },
}

/// The max_attempts guard's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptsVerdict {
    /// Escalate-only policy.
    NotApplicable,
    /// Attempts left.
    Clear {
        /// Attempts that count.
        attempts: u32,
        /// max_attempts.
        max: u32,
    },
    /// None left.
    Exhausted {
        /// Attempts that count.
        attempts: u32,
        /// max_attempts.
        max: u32,
        /// Already escalated.
        escalated: bool,
    },
}

/// The fleet guard's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetVerdict {
    /// Escalate-only policy.
    NotApplicable,
    /// Room for this host.
    Clear {
        /// Busy hosts if this one acts.
        after: usize,
        /// The effective limit: min(max_concurrent, ceil(max_percent% of online)).
        limit: usize,
        /// Online hosts.
        online: usize,
    },
    /// No room.
    Full {
        /// Busy hosts if this one acted.
        after: usize,
        /// The effective limit.
        limit: usize,
        /// Online hosts.
        online: usize,
    },
}

/// Every guard's verdict for the deciding policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdicts {
    /// storm.
    pub storm: StormVerdict,
    /// busy.
    pub busy: BusyVerdict,
    /// cooldown.
    pub cooldown: CooldownVerdict,
    /// max_attempts.
    pub attempts: AttemptsVerdict,
    /// fleet.
    pub fleet: FleetVerdict,
}

/// A decision: the policy that matched (if any), the outcome, every guard's verdict.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'p> {
    /// The deciding policy.
    pub policy: Option<&'p Policy>,
    /// What to do.
    pub outcome: Outcome,
    /// The guards' verdicts, when a policy matched.
    pub verdicts: Option<Verdicts>,
}

impl Decision<'_> {
    fn without_policy(outcome: Outcome) -> Self {
        Decision {
            policy: None,
            outcome,
            verdicts: None,
        }
    }
}

/// Decides on `f` at `now`. Pure; `state` must already hold `f` ([`FleetState::record_finding`]).
pub fn decide<'p>(
    set: &'p PolicySet,
    state: &FleetState,
    f: &Finding,
    now: UnixMs,
    opts: Options,
) -> Decision<'p> {
    if f.resolved {
        return Decision::without_policy(Outcome::Resolved);
    }
    for p in set.for_cause(f.cause) {
        match matches(p, f, state, now) {
            Ok(()) => return judge(p, f, state, now, opts),
            // Everything but the count matched: the policy watches it. A lower-priority policy
            // (a catch-all that pages) must not take what this one is waiting to act on.
            Err(Mismatch::Threshold { .. }) => {
                return Decision {
                    policy: Some(p),
                    outcome: Outcome::Held {
                        guard: Guard::Threshold,
                        until: None,
                    },
                    verdicts: None,
                };
            }
            Err(_) => {}
        }
    }
    Decision::without_policy(Outcome::NoPolicy)
}

/// Why a policy's `match` did not accept a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch<'a> {
    /// The cause is not listed.
    Cause(Cause),
    /// The root cause is not listed.
    RootCause(RootCause),
    /// The policy wants a unit and diagnosis found none.
    NoUnit,
    /// No unit glob matches.
    Unit(&'a str),
    /// No host name glob matches.
    HostName(&'a str),
    /// A label is missing or has another value.
    HostLabel {
        /// The label.
        key: &'a str,
        /// The value the policy wants.
        want: &'a str,
        /// The host's value.
        got: Option<&'a str>,
    },
    /// The policy applies a configuration edit and diagnosis proposed none.
    NoEdit,
    /// The proposed edit changes a directive the policy does not name.
    EditDirective(&'a str),
    /// Too few lines within the window.
    Threshold {
        /// Lines within the window.
        seen: u64,
        /// Lines needed.
        need: u64,
        /// The window.
        within: Duration,
    },
}

impl fmt::Display for Mismatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Cause(c) => write!(f, "cause {c} is not listed"),
            Mismatch::RootCause(r) => write!(f, "root cause {r} is not listed"),
            Mismatch::NoUnit => f.write_str("the finding names no unit"),
            Mismatch::Unit(u) => write!(f, "unit {u} matches no glob"),
            Mismatch::HostName(h) => write!(f, "host {h} matches no name glob"),
            Mismatch::HostLabel {
                key,
                want,
                got: Some(got),
            } => write!(f, "label {key}={got}, the policy wants {key}={want}"),
            Mismatch::HostLabel {
                key,
                want,
                got: None,
            } => write!(f, "no label {key}, the policy wants {key}={want}"),
            Mismatch::NoEdit => f.write_str("the finding proposes no configuration edit"),
            Mismatch::EditDirective(d) => write!(f, "the proposed edit changes {d}, not listed"),
            Mismatch::Threshold { seen, need, within } => write!(
                f,
                "{seen} lines within {}, the threshold is {need}",
                format_duration(*within)
            ),
        }
    }
}

/// Whether `p`'s `match` accepts `f` at `now`; the first reason if not.
pub fn matches<'a>(
    p: &'a Policy,
    f: &'a Finding,
    state: &'a FleetState,
    now: UnixMs,
) -> Result<(), Mismatch<'a>> {
    let m = &p.matcher;
    if !m.causes.contains(&f.cause) {
        return Err(Mismatch::Cause(f.cause));
    }
    if !m.root_causes.is_empty() && !m.root_causes.contains(&f.root_cause) {
        return Err(Mismatch::RootCause(f.root_cause));
    }
    if let Some(units) = &m.units {
        if f.unit.is_empty() {
            return Err(Mismatch::NoUnit);
        }
        if !units.is_match(&f.unit) {
            return Err(Mismatch::Unit(&f.unit));
        }
    }
    if let Some(hosts) = &m.hosts {
        if let Some(names) = &hosts.names
            && !names.is_match(&f.host)
        {
            return Err(Mismatch::HostName(&f.host));
        }
        let known = state.host(&f.host).map(|h| &h.labels);
        for (key, want) in &hosts.labels {
            // The fleet state's labels (from the agent's Hello) win over the finding's.
            let got = known
                .and_then(|l| l.get(key))
                .or_else(|| f.labels.get(key))
                .map(String::as_str);
            if got != Some(want.as_str()) {
                return Err(Mismatch::HostLabel { key, want, got });
            }
        }
    }
    if let Some(edits) = &m.edits {
        match &f.edit {
            None => return Err(Mismatch::NoEdit),
            Some(e) if !edits.contains(&e.directive) => {
                return Err(Mismatch::EditDirective(&e.directive));
            }
            Some(_) => {}
        }
    }
    if let Some(t) = m.threshold {
        let seen = lines_within(f, t.within, now);
        if seen < t.count {
            return Err(Mismatch::Threshold {
                seen,
                need: t.count,
                within: t.within,
            });
        }
    }
    Ok(())
}

/// Lines of `f` within `within` before `now`.
///
/// A finding carries its line count and the times of its first and last line, not every
/// line's time; the lines are taken as spread evenly between the two, and the lines before the
/// window's start are rounded up, so the estimate never overstates the rate.
pub fn lines_within(f: &Finding, within: Duration, now: UnixMs) -> u64 {
    let start = now.saturating_sub(window_ms(within));
    if f.last_seen < start {
        return 0;
    }
    if f.first_seen >= start || f.count <= 1 {
        return f.count;
    }
    // first_seen < start <= last_seen, so the span is positive.
    let span = u128::try_from(f.last_seen - f.first_seen)
        .unwrap_or(1)
        .max(1);
    let before_start = u128::try_from(start - f.first_seen).unwrap_or(0);
    let rest = u128::from(f.count - 1);
    // 1 line at first_seen, the rest spread over the span; ceil.
    let before = 1 + (rest * before_start).div_ceil(span);
    f.count
        .saturating_sub(u64::try_from(before).unwrap_or(u64::MAX))
}

/// `percent`% of `n`, rounded up.
fn ceil_percent(percent: u8, n: usize) -> usize {
    (n * usize::from(percent)).div_ceil(100)
}

/// Runs the guards of the matching policy `p` and picks the outcome.
pub fn judge<'p>(
    p: &'p Policy,
    f: &Finding,
    state: &FleetState,
    now: UnixMs,
    opts: Options,
) -> Decision<'p> {
    let verdicts = verdicts(p, f, state, now);
    let outcome = outcome(p, &verdicts, opts);
    Decision {
        policy: Some(p),
        outcome,
        verdicts: Some(verdicts),
    }
}

fn verdicts(p: &Policy, f: &Finding, state: &FleetState, now: UnixMs) -> Verdicts {
    let g = &p.guards;
    let escalate_only = p.escalates_only();
    // The finding's host is online (it spoke), whatever the state says.
    let online = state.online_hosts().max(1);
    let storm = match g.storm {
        None => StormVerdict::Off,
        Some(s) => {
            let need = ceil_percent(s.hosts_percent, online).max(s.min_hosts as usize);
            let within = window_ms(s.within);
            let since = now.saturating_sub(within);
            let ever = state.hosts_with_cause(f.cause);
            // Counting within the window walks the hosts; skip it when even every host that
            // ever showed the cause is too few (the common case, and the hot path).
            let (hosts, oldest) = if ever < need {
                (ever, None)
            } else {
                state.hosts_with_cause_since(f.cause, since, need)
            };
            if hosts >= need {
                StormVerdict::Storm {
                    hosts,
                    need,
                    online,
                    until: oldest.map(|t| t.saturating_add(within)),
                    first: state.storm(f.cause).is_none_or(|e| e.last_seen < since),
                }
            } else {
                StormVerdict::Clear {
                    hosts,
                    need,
                    online,
                }
            }
        }
    };
    let busy = if escalate_only {
        BusyVerdict::NotApplicable
    } else if state.is_busy(&f.host) {
        BusyVerdict::Busy
    } else {
        BusyVerdict::Clear
    };
    let cooldown = match state.last_acted(&f.host, &p.name) {
        Some(last) if now < last.saturating_add(window_ms(g.cooldown)) => {
            CooldownVerdict::Cooling {
                last,
                until: last.saturating_add(window_ms(g.cooldown)),
            }
        }
        last => CooldownVerdict::Clear { last },
    };
    let attempts = if escalate_only {
        AttemptsVerdict::NotApplicable
    } else {
        let (attempts, escalated) = state.attempts(&f.host, &p.name, now);
        if attempts >= g.max_attempts {
            AttemptsVerdict::Exhausted {
                attempts,
                max: g.max_attempts,
                escalated,
            }
        } else {
            AttemptsVerdict::Clear {
                attempts,
                max: g.max_attempts,
            }
        }
    };
    let fleet = if escalate_only {
        FleetVerdict::NotApplicable
    } else {
        let after = state.busy_hosts() + usize::from(!state.is_busy(&f.host));
        let limit =
            (g.fleet.max_concurrent as usize).min(ceil_percent(g.fleet.max_percent, online));
        if after > limit {
            FleetVerdict::Full {
                after,
                limit,
                online,
            }
        } else {
            FleetVerdict::Clear {
                after,
                limit,
                online,
            }
        }
    };
    Verdicts {
        storm,
        busy,
        cooldown,
        attempts,
        fleet,
    }
}

fn outcome(p: &Policy, v: &Verdicts, opts: Options) -> Outcome {
    if let StormVerdict::Storm {
        hosts,
        need,
        online,
        until,
        first,
    } = v.storm
    {
        return if first {
            Outcome::Escalate {
                why: Why::Storm {
                    hosts,
                    online,
                    need,
                },
            }
        } else {
            Outcome::Held {
                guard: Guard::Storm,
                until,
            }
        };
    }
    if v.busy == BusyVerdict::Busy {
        return Outcome::Held {
            guard: Guard::Busy,
            until: None,
        };
    }
    if let CooldownVerdict::Cooling { until, .. } = v.cooldown {
        return Outcome::Held {
            guard: Guard::Cooldown,
            until: Some(until),
        };
    }
    if let AttemptsVerdict::Exhausted {
        attempts,
        max,
        escalated,
    } = v.attempts
    {
        return if escalated {
            Outcome::Held {
                guard: Guard::MaxAttempts,
                until: None,
            }
        } else {
            Outcome::Escalate {
                why: Why::AttemptsExhausted { attempts, max },
            }
        };
    }
    if let FleetVerdict::Full { .. } = v.fleet {
        return Outcome::Held {
            guard: Guard::Fleet,
            until: None,
        };
    }
    if p.escalates_only() {
        return Outcome::Escalate { why: Why::Policy };
    }
    match (p.mode, opts.dry_run) {
        (Mode::DryRun, _) | (_, true) => Outcome::DryRun,
        (Mode::Auto, false) => Outcome::Execute,
        (Mode::Approve, false) => Outcome::AwaitApproval,
    }
}

/// Records what `decision` changes in the state: a cooldown starts when a policy acts or
/// escalates, a storm episode opens or goes on, exhausted attempts are marked escalated.
/// Dispatching is separate ([`FleetState::record_dispatched`]): only the dispatcher knows the
/// action ids.
pub fn apply(state: &mut FleetState, decision: &Decision<'_>, f: &Finding, now: UnixMs) {
    let Some(policy) = decision.policy else {
        return;
    };
    match decision.outcome {
        Outcome::Execute
        | Outcome::AwaitApproval
        | Outcome::DryRun
        | Outcome::Escalate { why: Why::Policy } => state.record_acted(&f.host, &policy.name, now),
        Outcome::Escalate {
            why: Why::Storm { .. },
        } => state.record_storm(f.cause, true, now),
        Outcome::Held {
            guard: Guard::Storm,
            ..
        } => state.record_storm(f.cause, false, now),
        Outcome::Escalate {
            why: Why::AttemptsExhausted { .. },
        } => state.record_attempts_escalated(&f.host, &policy.name),
        Outcome::Held { .. } | Outcome::NoPolicy | Outcome::Resolved => {}
    }
}

/// How `explain` saw one policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consideration<'a> {
    /// It matched and decided.
    Matched,
    /// It did not match, for this reason.
    NotMatched(Mismatch<'a>),
    /// A higher-priority policy matched first.
    NotReached,
}

/// Every policy's consideration, in evaluation order, and the decision.
#[derive(Debug, Clone)]
pub struct Explanation<'a> {
    /// (policy, how it was seen), in evaluation order.
    pub considered: Vec<(&'a Policy, Consideration<'a>)>,
    /// The decision, as [`decide`] makes it.
    pub decision: Decision<'a>,
}

/// [`decide`] with its reasons, for `gatemend policy explain`.
pub fn explain<'a>(
    set: &'a PolicySet,
    state: &'a FleetState,
    f: &'a Finding,
    now: UnixMs,
    opts: Options,
) -> Explanation<'a> {
    let mut decided = false;
    let considered = set
        .policies()
        .iter()
        .map(|p| {
            let seen = if decided {
                Consideration::NotReached
            } else {
                match matches(p, f, state, now) {
                    Ok(()) => {
                        decided = true;
                        Consideration::Matched
                    }
                    Err(why) => Consideration::NotMatched(why),
                }
            };
            (p, seen)
        })
        .collect();
    Explanation {
        considered,
        decision: decide(set, state, f, now, opts),
    }
}

/// A time for humans: RFC 3339 in UTC with milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Time(pub UnixMs);

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match u64::try_from(self.0) {
            Ok(ms) => {
                let t = std::time::UNIX_EPOCH + Duration::from_millis(ms);
                write!(f, "{}", humantime::format_rfc3339_millis(t))
            }
            Err(_) => write!(f, "{}ms before the epoch", self.0.unsigned_abs()),
        }
    }
}

#[cfg(test)]
mod tests;
