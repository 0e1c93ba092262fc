//! service_down: the unit that serves the upstream is not running (failed, stopped, or
//! between restarts). Found for the failures a dead service causes — the socket gone, the
//! connection refused or timing out, a group with no live server, a connection cut short.

use gatemend_proto::{Cause, RootCause};

use super::{Diagnosis, Probes, unit_for};
use crate::detect::Classified;
use crate::probe::nginx::Target;
use crate::probe::systemd::UnitState;

/// The causes a stopped service produces.
pub(super) const CAUSES: &[Cause] = &[
    Cause::UpstreamSocketMissing,
    Cause::UpstreamRefused,
    Cause::UpstreamConnectTimeout,
    Cause::NoLiveUpstreams,
    Cause::UpstreamReset,
    Cause::UpstreamPrematureClose,
];

pub(super) fn check(line: &Classified<'_>, p: &Probes) -> Option<Diagnosis> {
    if !CAUSES.contains(&line.cause) {
        return None;
    }
    let upstream = line.upstream.as_deref()?;
    // A group: the first server whose unit is down.
    let candidates: Vec<String> = match Target::from_log(upstream)? {
        Target::Upstream(group) => p
            .nginx
            .as_ref()
            .and_then(|n| n.upstreams.iter().find(|u| u.name == group))
            .map(|u| u.servers.iter().map(|s| s.target.to_string()).collect())
            .unwrap_or_default(),
        _ => vec![upstream.to_owned()],
    };
    candidates.iter().find_map(|target| {
        let (unit, how) = unit_for(target, p)?;
        let state = p.units.get(&unit)?;
        is_down(state).then(|| {
            Diagnosis::new(
                RootCause::ServiceDown,
                format!(
                    "{unit} (serving {target}, found by {how}) is {}",
                    describe(state)
                ),
            )
            .unit(Some(unit.clone()))
            .probe("unit.ActiveState", state.active_state.clone())
            .probe("unit.SubState", state.sub_state.clone())
            .probe("unit.Result", state.result.clone().unwrap_or_default())
            .probe(
                "unit.NRestarts",
                state.n_restarts.map(|n| n.to_string()).unwrap_or_default(),
            )
        })
    })
}

/// Not running: failed, inactive, or on its way down or up again.
pub(super) fn is_down(state: &UnitState) -> bool {
    !matches!(state.active_state.as_str(), "active" | "reloading")
}

/// `failed (Result=exit-code)`, `inactive (dead)`.
pub(super) fn describe(state: &UnitState) -> String {
    match state.result.as_deref() {
        Some(result) if result != "success" => {
            format!("{} (Result={result})", state.active_state)
        }
        _ => format!("{} ({})", state.active_state, state.sub_state),
    }
}
