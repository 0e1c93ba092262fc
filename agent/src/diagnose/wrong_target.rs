//! wrong_target: nginx points at a place no service serves, while the service it means is up
//! elsewhere — the php7.4 → php8.2 socket after an upgrade, a `proxy_pass` port typo. No
//! restart mends it: escalate with both addresses.

use gatemend_proto::{Cause, RootCause};

use super::target::pool_at;
use super::{Diagnosis, Probes};
use crate::detect::Classified;
use crate::probe::nginx::Target;

pub(super) fn check(line: &Classified<'_>, p: &Probes) -> Option<Diagnosis> {
    if !matches!(
        line.cause,
        Cause::UpstreamSocketMissing | Cause::UpstreamRefused
    ) {
        return None;
    }
    let upstream = line.upstream.as_deref()?;
    let pointed = p
        .nginx
        .as_ref()
        .and_then(|n| {
            n.passes_to(upstream)
                .first()
                .map(|pass| format!(" ({} in {}:{})", pass.raw, pass.file.display(), pass.line))
        })
        .unwrap_or_default();
    match Target::from_log(upstream)? {
        Target::Unix(path) => {
            if pool_at(&p.pools, &path).is_some() || p.units_map.contains_key(upstream) {
                return None;
            }
            // A pool that listens on a socket that is there.
            let serving = p.pools.iter().find(|pool| {
                pool.socket_path().is_some_and(|s| {
                    p.sockets
                        .get(std::path::Path::new(s))
                        .is_some_and(|sock| sock.info.is_socket)
                })
            })?;
            let at = serving.socket_path().unwrap_or("?");
            let unit = serving.unit();
            Some(
                Diagnosis::new(
                    RootCause::WrongTarget,
                    format!(
                        "nginx points at {}{pointed}, but php-fpm listens at {at} ({}, pool `{}` in {})",
                        path.display(),
                        unit.as_deref().unwrap_or("?"),
                        serving.name,
                        serving.file.display()
                    ),
                )
                .unit(unit)
                .probe("nginx.target", upstream)
                .probe("service.listens", format!("unix:{at}")),
            )
        }
        Target::Tcp { host, port } => {
            // Only with a unit named for this upstream: where does that unit listen instead?
            let unit = p.units_map.get(upstream)?;
            if crate::probe::listeners::listening_on(&p.listeners, &host, port).is_some() {
                return None;
            }
            let elsewhere = p
                .listeners
                .iter()
                .find(|l| l.unit.as_deref() == Some(unit.as_str()))?;
            Some(
                Diagnosis::new(
                    RootCause::WrongTarget,
                    format!(
                        "nginx points at {upstream}{pointed}, but {unit} listens at {}",
                        elsewhere.addr
                    ),
                )
                .unit(Some(unit.clone()))
                .probe("nginx.target", upstream)
                .probe("service.listens", elsewhere.addr.to_string()),
            )
        }
        Target::Upstream(_) | Target::Variable(_) => None,
    }
}
