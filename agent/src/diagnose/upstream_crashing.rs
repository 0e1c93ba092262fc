//! upstream_crashing: the service is up, but it cut the connection mid-request — a worker
//! crashed, was killed, or exited. The unit's restart count and last result are the evidence.

use gatemend_proto::{Cause, RootCause};

use super::{Diagnosis, Probes, unit_for};
use crate::detect::Classified;

pub(super) fn check(line: &Classified<'_>, p: &Probes) -> Option<Diagnosis> {
    if !matches!(
        line.cause,
        Cause::UpstreamReset | Cause::UpstreamPrematureClose
    ) {
        return None;
    }
    let upstream = line.upstream.as_deref().unwrap_or("?");
    let unit = unit_for(upstream, p).map(|(u, _)| u);
    let state = unit.as_ref().and_then(|u| p.units.get(u));
    let how = match line.cause {
        Cause::UpstreamReset => "reset the connection",
        _ => "closed the connection before answering",
    };
    let mut d = Diagnosis::new(
        RootCause::UpstreamCrashing,
        format!(
            "{upstream} {how}{}: a worker likely crashed or was killed",
            unit.as_deref()
                .map(|u| format!(" ({u})"))
                .unwrap_or_default()
        ),
    )
    .unit(unit.clone());
    if let Some(state) = state {
        d = d
            .probe("unit.ActiveState", state.active_state.clone())
            .probe("unit.Result", state.result.clone().unwrap_or_default())
            .probe(
                "unit.NRestarts",
                state.n_restarts.map(|n| n.to_string()).unwrap_or_default(),
            );
    }
    Some(d)
}
