//! socket_permission: the socket is there, but nginx's worker user may not connect to it (the
//! owner, group or mode changed — by hand, or by a pool file that says so). The fix is the
//! pool's `listen.owner/group/mode`; the evidence says what they should be.

use gatemend_proto::{Cause, RootCause};

use super::target::pool_at;
use super::{Diagnosis, Probes};
use crate::detect::Classified;
use crate::probe::nginx::Target;

pub(super) fn check(line: &Classified<'_>, p: &Probes) -> Option<Diagnosis> {
    if !matches!(
        line.cause,
        Cause::UpstreamSocketPermission | Cause::UpstreamSocketMissing | Cause::UpstreamRefused
    ) {
        return None;
    }
    let upstream = line.upstream.as_deref()?;
    let Target::Unix(path) = Target::from_log(upstream)? else {
        return None;
    };
    let path = path.as_path();
    let socket = p.sockets.get(path)?;
    if !socket.info.is_socket || socket.worker.allowed {
        return None;
    }
    let pool = pool_at(&p.pools, path);
    let expected = pool
        .map(|pool| {
            format!(
                "; the pool `{}` ({}) expects {}:{} {}",
                pool.name,
                pool.file.display(),
                pool.listen_owner.as_deref().unwrap_or("?"),
                pool.listen_group.as_deref().unwrap_or("?"),
                pool.listen_mode
            )
        })
        .unwrap_or_default();
    let worker = p.worker_user();
    let mut d = Diagnosis::new(
        RootCause::SocketPermission,
        format!(
            "nginx's worker user {worker} may not connect to {} ({}): {}{expected}",
            path.display(),
            socket.info.ownership(),
            socket.worker.why
        ),
    )
    .unit(pool.and_then(|pool| pool.unit()))
    .probe("socket.path", path.display().to_string())
    .probe("socket.ownership", socket.info.ownership())
    .probe("nginx.user", worker);
    if let Some(pool) = pool {
        d = d.probe(
            "fpm.listen",
            format!(
                "{}:{} {}",
                pool.listen_owner.as_deref().unwrap_or("?"),
                pool.listen_group.as_deref().unwrap_or("?"),
                pool.listen_mode
            ),
        );
    }
    Some(d)
}
