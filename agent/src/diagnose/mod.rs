//! Diagnose: a classified line and what the probes found → why nginx failed (the root cause),
//! the systemd unit behind the upstream, and the evidence. Then aggregation: the lines of one
//! (cause, upstream) become one [`Finding`] with a count, re-sent when it changes and resolved
//! when the errors stop and something shows the site works again (`resolve`: the access log,
//! the active probe, or the probes showing the fault mended; never silence alone).
//!
//! Pure: no I/O and no clock. The probes are read beforehand into a [`Probes`] snapshot
//! (`probe::snapshot`), and times are passed in.
//!
//! One file per root cause, each a `check` that says whether its root cause explains the
//! line; they are asked in [`ORDER`] and the first that answers wins, `unknown` otherwise.
//! The order is from the most certain to the least: a configuration or DNS error is what the
//! line says it is; a unit that is down explains a refused connection before anything else; a
//! socket nobody serves while php-fpm listens elsewhere is nginx pointing at the wrong place.
//!
//! Where the runbooks mend a root cause by editing the configuration (the pass's target, a
//! location's timeout or buffer, `resolver`, `pm.max_children`, `worker_connections`), the
//! root cause's file also proposes the edit (`propose`): computed with the editor against the
//! file's current text, carried by the finding with its diff and the file's hash. An edit the
//! editor refuses, or that the host's means do not allow, is not proposed; the detail says why.

mod aggregate;
mod finding;
mod propose;
pub mod resolve;
mod target;

mod capacity_exhausted;
mod config_invalid;
mod dns_failure;
mod service_down;
mod service_not_listening;
mod socket_permission;
mod tls_failure;
mod upstream_crashing;
mod upstream_slow;
mod wrong_target;

use std::collections::BTreeMap;

use gatemend_proto::{Cause, RootCause};

pub use aggregate::{Aggregator, EVIDENCE_LINES, MAX_PATHS, Requests};
pub use finding::{Evidence, Finding, unix_ms};
pub use propose::{EditBounds, ProposedEdit};
pub use target::unit_for;

use crate::detect::Classified;
pub use crate::probe::snapshot::Probes;

/// Why, for one line: the root cause, a sentence for humans, the unit, and the probe results
/// that led there (`unit.ActiveState` -> `failed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub root_cause: RootCause,
    pub detail: String,
    /// The systemd unit that serves the upstream, when one was found.
    pub unit: Option<String>,
    pub probes: BTreeMap<String, String>,
    /// The configuration edit that would mend it, when the runbooks have one and it could be
    /// computed.
    pub edit: Option<ProposedEdit>,
}

impl Diagnosis {
    fn new(root_cause: RootCause, detail: impl Into<String>) -> Diagnosis {
        Diagnosis {
            root_cause,
            detail: detail.into(),
            unit: None,
            probes: BTreeMap::new(),
            edit: None,
        }
    }

    fn unit(mut self, unit: Option<String>) -> Diagnosis {
        self.unit = unit;
        self
    }

    fn probe(mut self, key: &str, value: impl Into<String>) -> Diagnosis {
        self.probes.insert(key.to_owned(), value.into());
        self
    }
}

/// A root cause's check: `Some` when it explains the line.
type Check = fn(&Classified<'_>, &Probes) -> Option<Diagnosis>;

/// The order the checks are asked in (see the module docs).
const ORDER: &[(RootCause, Check)] = &[
    (RootCause::ConfigInvalid, config_invalid::check),
    (RootCause::DnsFailure, dns_failure::check),
    (RootCause::TlsFailure, tls_failure::check),
    (RootCause::CapacityExhausted, capacity_exhausted::check),
    (RootCause::SocketPermission, socket_permission::check),
    (RootCause::ServiceDown, service_down::check),
    (RootCause::WrongTarget, wrong_target::check),
    (RootCause::ServiceNotListening, service_not_listening::check),
    (RootCause::UpstreamCrashing, upstream_crashing::check),
    (RootCause::UpstreamSlow, upstream_slow::check),
];

/// Diagnoses one classified line against the probes. A `none` line is not diagnosed (`None`).
pub fn diagnose(line: &Classified<'_>, probes: &Probes) -> Option<Diagnosis> {
    if line.cause == Cause::None {
        return None;
    }
    let found = ORDER.iter().find_map(|(_, check)| check(line, probes));
    let found = found.map(|d| match propose::propose(line, &d, probes) {
        Some(proposal) => propose::attach(d, proposal),
        None => d,
    });
    Some(found.unwrap_or_else(|| {
        let upstream = line.upstream.as_deref().unwrap_or("");
        let unit = unit_for(upstream, probes).map(|(unit, _)| unit);
        let detail = match &unit {
            Some(unit) => format!(
                "{} at {upstream}: {unit} looks healthy; see the evidence",
                line.cause
            ),
            None if upstream.is_empty() => format!("{}; see the evidence", line.cause),
            None => format!(
                "{} at {upstream}: no unit is known to serve it (map one under `units:` in the agent config)",
                line.cause
            ),
        };
        Diagnosis::new(RootCause::Unknown, detail).unit(unit)
    }))
}

/// What the probes say now about a finding's upstream: `Some(false)` while they still show the
/// fault (the unit down, the socket missing or closed to the worker, nginx -t failing),
/// `Some(true)` when they show it mended (the socket or port nginx connects to accepts again,
/// for the worker), `None` when probes cannot tell (a slow or crashing upstream, DNS, TLS, a
/// limit, or an upstream no known unit serves that does not accept yet): then only answers in
/// the access log or the active probe can (see `resolve`). Nothing showing the fault is not
/// the same as the probes showing it mended.
pub fn healthy(cause: Cause, upstream: &str, probes: &Probes) -> Option<bool> {
    if cause == Cause::ConfigInvalid {
        return Some(probes.nginx_error.is_none());
    }
    let line = Classified {
        cause,
        upstream: Some(upstream.into()),
        ..Classified::none()
    };
    let checks: [Check; 4] = [
        socket_permission::check,
        service_down::check,
        wrong_target::check,
        service_not_listening::check,
    ];
    if checks.iter().any(|check| check(&line, probes).is_some()) {
        return Some(false);
    }
    let connect_failures = matches!(
        cause,
        Cause::UpstreamSocketMissing
            | Cause::UpstreamRefused
            | Cause::UpstreamSocketPermission
            | Cause::NoLiveUpstreams
    );
    (connect_failures && accepts(upstream, probes, 0)).then_some(true)
}

/// Whether the probes see nginx's worker able to connect to `upstream` now: a unix socket that
/// accepts and that the worker user may open, a TCP port something listens on, or any server
/// of an `upstream {}` block that does.
fn accepts(upstream: &str, probes: &Probes, depth: u8) -> bool {
    match crate::probe::nginx::Target::from_log(upstream) {
        Some(crate::probe::nginx::Target::Unix(path)) => probes
            .sockets
            .get(&path)
            .is_some_and(|s| s.info.is_socket && s.accepts && s.worker.allowed),
        Some(crate::probe::nginx::Target::Tcp { host, port }) => {
            crate::probe::listeners::listening_on(&probes.listeners, &host, port).is_some()
        }
        // A group's servers are addresses, never groups; the depth only guards against a
        // configuration that says otherwise.
        Some(crate::probe::nginx::Target::Upstream(group)) if depth == 0 => probes
            .nginx
            .iter()
            .flat_map(|n| n.upstreams.iter())
            .filter(|block| block.name == group)
            .flat_map(|block| block.servers.iter())
            .any(|server| accepts(&server.target.to_string(), probes, depth + 1)),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
