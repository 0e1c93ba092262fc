//! service_not_listening: the unit runs, but nothing is at the socket or port nginx connects
//! to (the service is still starting, listens elsewhere by its own config, or lost its socket).

use gatemend_proto::{Cause, RootCause};

use super::{Diagnosis, Probes, unit_for};
use crate::detect::Classified;
use crate::probe::nginx::Target;

pub(super) fn check(line: &Classified<'_>, p: &Probes) -> Option<Diagnosis> {
    if !matches!(
        line.cause,
        Cause::UpstreamSocketMissing | Cause::UpstreamRefused | Cause::UpstreamConnectTimeout
    ) {
        return None;
    }
    let upstream = line.upstream.as_deref()?;
    let (unit, how) = unit_for(upstream, p)?;
    let state = p.units.get(&unit)?;
    if super::service_down::is_down(state) {
        return None;
    }
    let missing = match Target::from_log(upstream)? {
        Target::Unix(path) => match p.sockets.get(&path) {
            Some(sock) if sock.info.is_socket && sock.accepts => return None,
            Some(sock) if sock.info.is_socket => "the socket is there but refuses connections",
            Some(sock) if sock.info.exists => "the path is not a socket",
            _ => "the socket does not exist",
        },
        Target::Tcp { host, port } => {
            if crate::probe::listeners::listening_on(&p.listeners, &host, port).is_some() {
                return None;
            }
            "nothing listens on that port"
        }
        Target::Upstream(_) | Target::Variable(_) => return None,
    };
    Some(
        Diagnosis::new(
            RootCause::ServiceNotListening,
            format!(
                "{unit} (found by {how}) is {} but {missing} at {upstream}",
                state.active_state
            ),
        )
        .unit(Some(unit.clone()))
        .probe("unit.ActiveState", state.active_state.clone()),
    )
}
