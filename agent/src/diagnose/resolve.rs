//! When a finding is resolved: when something shows the site works again, not when its lines
//! merely stop. nginx may stop logging a fault (or log it under another cause, `no live
//! upstreams`) while every request still fails, and an upstream no unit is known for has no
//! probe to say it is back.
//!
//! A finding resolves when
//! - (a) its lines have been quiet for the quiet period, and the access log shows no 502/504
//!   for its upstream (or the paths that failed) since the quiet period began;
//! - (b) the probes do not show its fault ([`super::healthy`] is not `Some(false)`);
//! - (c) and there is evidence, the first of:
//!   - answers through that upstream (or to those paths) in the access log after its last
//!     error line and after the access log's last 502/504;
//!   - the active probe (a GET the logs saw, sent to nginx on loopback) answered after the
//!     last error line, with a status below 500 that is not a redirect and not a 400 (what
//!     nginx itself answers: to an https site's plain-http port, to plain http on a TLS port);
//!   - the probes show it mended ([`super::healthy`] is `Some(true)`: the unit up, the socket
//!     accepting for the worker, the configuration testing clean);
//!   - or nothing can ever tell (no upstream, no request: a pool's `max_children` warning):
//!     the lines falling quiet is all there is.
//!
//! An unknown health alone is never enough. The evidence is recorded in the finding's probes
//! under [`RESOLVED_BY`], for the controller and the audit. Pure: times are passed in.

use crate::detect::access::Traffic;

use super::Finding;

/// The key of [`Finding::evidence`]'s probes that says what showed the finding resolved.
pub const RESOLVED_BY: &str = "resolved_by";

/// The key that says when the access log last showed a still-open finding's upstream fail.
pub const ACCESS_LAST_ERROR: &str = "access.last_error";

/// What the active probe got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeAnswer {
    /// When it answered, ms since the epoch.
    pub at: i64,
    /// What was sent: `GET /index.php via 127.0.0.1:80`.
    pub sent: String,
    /// The status, or why there was none.
    pub outcome: Result<u16, String>,
}

/// Everything that can tell whether a finding's upstream works again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// [`super::healthy`] for the finding.
    pub health: Option<bool>,
    /// The access log's view of what failed, each with its label: per upstream address
    /// (`via unix:/run/php/php8.2-fpm.sock`) or, when the log does not name upstreams, per
    /// path that failed (`to /index.php`).
    pub access: Vec<(String, Traffic)>,
    /// The active probe, if one ran.
    pub probe: Option<ProbeAnswer>,
    /// Whether anything could ever show the recovery: the finding names an upstream or a
    /// request. When nothing can, its lines falling quiet is all there is.
    pub checkable: bool,
}

/// Whether a finding resolves now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Resolved, by this evidence (the value of [`RESOLVED_BY`]).
    Resolved(String),
    Open(Pending),
}

/// Why a finding stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// The access log shows 502/504s for it since the quiet period began; the latest was
    /// recorded at this second.
    Failing { last_error: u64 },
    /// Its lines are not quiet yet.
    Lines,
    /// The probes still show the fault.
    Unhealthy,
    /// Quiet and not shown broken, but nothing shows it works again yet.
    NoEvidence,
}

/// The verdict on `f` at `now` (ms since the epoch), `quiet_ms` being the quiet period and
/// `utc_offset_secs` the host's offset (the evidence names local times, as the logs do).
pub fn verdict(
    f: &Finding,
    now: i64,
    quiet_ms: i64,
    utc_offset_secs: i64,
    r: &Recovery,
) -> Verdict {
    let quiet_since = now.saturating_sub(quiet_ms);
    // A second is counted at its end: an error recorded in it may be that late.
    let after = |second: u64, ms: i64| second_ms(second) > ms;
    let ends = |second: u64| second_ms(second.saturating_add(1));
    if let Some(last_error) = r.access.iter().filter_map(|(_, t)| t.last_error).max()
        && ends(last_error) > quiet_since
    {
        return Verdict::Open(Pending::Failing { last_error });
    }
    if f.last_seen > quiet_since {
        return Verdict::Open(Pending::Lines);
    }
    if r.health == Some(false) {
        return Verdict::Open(Pending::Unhealthy);
    }
    let answered = r
        .access
        .iter()
        .filter(|(_, t)| {
            t.answers_since_error > 0 && t.last_answer.is_some_and(|a| after(a, f.last_seen))
        })
        .max_by_key(|(_, t)| t.answers_since_error);
    if let Some((label, t)) = answered {
        let status = t
            .last_status
            .map_or_else(String::new, |s| format!(" (latest {s})"));
        let since = t.first_answer_since_error.map_or_else(String::new, |s| {
            format!(" since {}", clock(s, utc_offset_secs))
        });
        let n = t.answers_since_error;
        let answers = if n == 1 { "answer" } else { "answers" };
        return Verdict::Resolved(format!("access log: {n} {answers}{status} {label}{since}"));
    }
    if let Some(p) = &r.probe
        && p.at > f.last_seen
        && let Ok(status) = p.outcome
        && shows_recovery(status)
    {
        return Verdict::Resolved(format!("{} -> {status}", p.sent));
    }
    let quiet_at = clock_ms(f.last_seen, utc_offset_secs);
    if r.health == Some(true) {
        let what = if f.upstream.is_empty() {
            String::new()
        } else {
            format!(" ({})", f.upstream)
        };
        let logs = if r.access.is_empty() {
            "no error line"
        } else {
            "no error line and no 502/504 for it in the access log"
        };
        return Verdict::Resolved(format!(
            "probes: healthy again{what}; {logs} since {quiet_at}"
        ));
    }
    if !r.checkable {
        return Verdict::Resolved(format!(
            "quiet: no line since {quiet_at}; it names no upstream or request to check"
        ));
    }
    Verdict::Open(Pending::NoEvidence)
}

/// Whether a probe's status shows the upstream behind the location answers: below 500, and
/// not what nginx answers by itself for a request it never passed on (a redirect, e.g. to
/// https; a 400, e.g. plain http on a TLS port).
pub fn shows_recovery(status: u16) -> bool {
    status < 500 && !(300..400).contains(&status) && status != 400
}

/// One answer from the probes of one request on several ports (when the logs do not say which
/// port it came in on, it is sent to each of nginx's): a 400 is a port the probe cannot speak
/// to (plain http on TLS) and does not count; of the others, the first error, else the
/// highest status, so that the answer shows a recovery only when every port does.
pub fn combine(at: i64, sent: String, outcomes: &[Result<u16, String>]) -> ProbeAnswer {
    let counted: Vec<&Result<u16, String>> = outcomes.iter().filter(|o| **o != Ok(400)).collect();
    let outcome = if counted.is_empty() {
        outcomes
            .first()
            .cloned()
            .unwrap_or_else(|| Err("nothing was sent".to_owned()))
    } else if let Some(Err(e)) = counted.iter().find(|o| o.is_err()) {
        Err(e.clone())
    } else {
        Ok(counted
            .iter()
            .filter_map(|o| o.as_ref().ok().copied())
            .max()
            .unwrap_or(0))
    };
    ProbeAnswer { at, sent, outcome }
}

fn second_ms(second: u64) -> i64 {
    i64::try_from(second)
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000)
}

/// `14:03:22`, the local time of Unix second `secs`.
pub fn clock(secs: u64, utc_offset_secs: i64) -> String {
    clock_ms(second_ms(secs), utc_offset_secs)
}

fn clock_ms(ms: i64, utc_offset_secs: i64) -> String {
    let t = ms
        .div_euclid(1_000)
        .saturating_add(utc_offset_secs)
        .rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", t / 3_600, t / 60 % 60, t % 60)
}
