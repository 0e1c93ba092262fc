//! upstream_slow: the service is up and accepts connections, but does not answer in time
//! (nginx's `*_read_timeout`, `*_connect_timeout`). The timeouts nginx applies are the evidence.

use gatemend_proto::{Cause, RootCause};

use super::{Diagnosis, Probes, unit_for};
use crate::detect::Classified;

pub(super) fn check(line: &Classified<'_>, p: &Probes) -> Option<Diagnosis> {
    if !matches!(
        line.cause,
        Cause::UpstreamReadTimeout | Cause::UpstreamConnectTimeout
    ) {
        return None;
    }
    let upstream = line.upstream.as_deref().unwrap_or("?");
    let unit = unit_for(upstream, p).map(|(u, _)| u);
    let timeouts = p
        .nginx
        .as_ref()
        .map(|n| {
            n.timeouts
                .iter()
                .filter(|t| t.name.ends_with("read_timeout") || t.name.ends_with("connect_timeout"))
                .map(|t| format!("{} {}", t.name, t.args.join(" ")))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let phase = line
        .phase
        .as_ref()
        .map(|ph| format!(" while {ph}"))
        .unwrap_or_default();
    let limits = if timeouts.is_empty() {
        "nginx's defaults (60s)".to_owned()
    } else {
        timeouts.clone()
    };
    Some(
        Diagnosis::new(
            RootCause::UpstreamSlow,
            format!("{upstream} did not answer in time{phase}; timeouts: {limits}"),
        )
        .unit(unit)
        .probe("nginx.timeouts", timeouts),
    )
}
