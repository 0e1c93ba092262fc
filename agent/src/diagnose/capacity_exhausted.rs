//! capacity_exhausted: a limit was reached — nginx's `worker_connections`, php-fpm's
//! `pm.max_children`, or the backlog of the upstream's socket (every worker busy). Restarting
//! throws away the work in progress and mends nothing; the limit or the load has to change.

use gatemend_proto::{Cause, RootCause};

use super::{Diagnosis, Probes, unit_for};
use crate::detect::Classified;
use crate::probe::nginx::Target;

pub(super) fn check(line: &Classified<'_>, p: &Probes) -> Option<Diagnosis> {
    let upstream = line.upstream.as_deref().unwrap_or("");
    match line.cause {
        Cause::WorkerConnectionsExhausted => {
            let limit = line
                .limit
                .or_else(|| p.nginx.as_ref().and_then(|n| n.worker_connections));
            let processes = p
                .nginx
                .as_ref()
                .and_then(|n| n.worker_processes.clone())
                .unwrap_or_else(|| "?".into());
            let limit_text = limit.map_or_else(|| "?".to_owned(), |l| l.to_string());
            Some(
                Diagnosis::new(
                    RootCause::CapacityExhausted,
                    format!(
                        "nginx's worker_connections ({limit_text} per worker, worker_processes {processes}) are all in use"
                    ),
                )
                .unit(Some("nginx.service".into()))
                .probe("nginx.worker_connections", limit_text)
                .probe("nginx.worker_processes", processes),
            )
        }
        Cause::FpmMaxChildren => {
            let pool_name = line.pool.as_deref().unwrap_or("?");
            let pool = p.pools.iter().find(|pool| pool.name == pool_name);
            let limit = line
                .limit
                .or_else(|| pool.and_then(|pool| pool.max_children));
            let limit_text = limit.map_or_else(|| "?".to_owned(), |l| l.to_string());
            let file = pool
                .map(|pool| format!(" ({})", pool.file.display()))
                .unwrap_or_default();
            Some(
                Diagnosis::new(
                    RootCause::CapacityExhausted,
                    format!("php-fpm pool `{pool_name}` reached pm.max_children = {limit_text}{file}: requests queue"),
                )
                .unit(pool.and_then(|pool| pool.unit()))
                .probe("fpm.pool", pool_name)
                .probe("fpm.max_children", limit_text),
            )
        }
        Cause::UpstreamOverloaded => {
            let unit = unit_for(upstream, p).map(|(u, _)| u);
            let max = match Target::from_log(upstream) {
                Some(Target::Unix(path)) => super::target::pool_at(&p.pools, &path),
                _ => None,
            }
            .and_then(|pool| pool.max_children)
            .map(|m| format!(" (pm.max_children = {m})"))
            .unwrap_or_default();
            Some(
                Diagnosis::new(
                    RootCause::CapacityExhausted,
                    format!("the listen backlog of {upstream} is full: every worker is busy{max}"),
                )
                .unit(unit),
            )
        }
        _ => None,
    }
}
