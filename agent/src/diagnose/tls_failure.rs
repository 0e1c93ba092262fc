//! tls_failure: the TLS handshake with the upstream failed (certificate, protocol, a peer that
//! does not speak TLS). A restart does not mend a certificate; a human does.

use gatemend_proto::{Cause, RootCause};

use super::{Diagnosis, Probes, unit_for};
use crate::detect::Classified;

pub(super) fn check(line: &Classified<'_>, p: &Probes) -> Option<Diagnosis> {
    if line.cause != Cause::UpstreamTlsError {
        return None;
    }
    let upstream = line.upstream.as_deref().unwrap_or("?");
    let why = match line.errno {
        Some(errno) => format!(" (errno {errno})"),
        None => String::new(),
    };
    let phase = line
        .phase
        .as_ref()
        .map(|ph| format!(" while {ph}"))
        .unwrap_or_default();
    Some(
        Diagnosis::new(
            RootCause::TlsFailure,
            format!("TLS with the upstream {upstream} failed{phase}{why}; see the evidence line"),
        )
        .unit(unit_for(upstream, p).map(|(u, _)| u)),
    )
}
