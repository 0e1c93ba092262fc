//! Which systemd unit serves an upstream (read with `Target::from_log`).
//!
//! The unit is found, in this order: the agent config's explicit `units:` mapping; the php-fpm
//! pool that listens there (`listen =` → `phpX.Y-fpm.service`); the unit whose process listens
//! on that port now (`/proc/net/tcp*` → pid → cgroup); the unit that was last seen listening
//! there (the agent remembers listeners while they are up, so a unit that died can still be
//! named after its port went quiet).

use std::path::Path;

use super::Probes;
use crate::probe::nginx::Target;
use crate::probe::php_fpm::Pool;

/// The unit serving `upstream`, and how it was found (for the evidence).
pub fn unit_for(upstream: &str, probes: &Probes) -> Option<(String, &'static str)> {
    if let Some(unit) = probes.units_map.get(upstream) {
        return Some((unit.clone(), "agent config"));
    }
    match Target::from_log(upstream)? {
        Target::Unix(path) => pool_at(&probes.pools, &path)
            .and_then(Pool::unit)
            .map(|u| (u, "php-fpm pool")),
        Target::Tcp { host, port } => pool_on_port(&probes.pools, port)
            .and_then(Pool::unit)
            .map(|u| (u, "php-fpm pool"))
            .or_else(|| {
                crate::probe::listeners::listening_on(&probes.listeners, &host, port)
                    .and_then(|l| l.unit.clone())
                    .map(|u| (u, "listener"))
            })
            .or_else(|| {
                probes
                    .remembered
                    .get(&port)
                    .cloned()
                    .map(|u| (u, "last listener"))
            }),
        Target::Upstream(_) | Target::Variable(_) => None,
    }
}

/// The pool that listens on this socket path.
pub fn pool_at<'p>(pools: &'p [Pool], path: &Path) -> Option<&'p Pool> {
    pools
        .iter()
        .find(|p| p.socket_path().is_some_and(|s| Path::new(s) == path))
}

/// The pool that listens on this TCP port (`listen = 9000` or `127.0.0.1:9000`).
pub fn pool_on_port(pools: &[Pool], port: u16) -> Option<&Pool> {
    pools.iter().find(|p| {
        p.listen
            .as_deref()
            .filter(|l| !l.starts_with('/'))
            .and_then(|l| l.rsplit(':').next())
            .and_then(|l| l.trim().parse::<u16>().ok())
            == Some(port)
    })
}
