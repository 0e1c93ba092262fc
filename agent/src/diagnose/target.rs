//! Which upstream a line names, and which systemd unit serves it.
//!
//! The unit is found, in this order: the agent config's explicit `units:` mapping; the php-fpm
//! pool that listens there (`listen =` → `phpX.Y-fpm.service`); the unit whose process listens
//! on that port now (`/proc/net/tcp*` → pid → cgroup); the unit that was last seen listening
//! there (the agent remembers listeners while they are up, so a unit that died can still be
//! named after its port went quiet).

use std::path::Path;

use super::Probes;
use crate::probe::php_fpm::Pool;

/// An upstream as the classifier writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addr<'a> {
    /// `unix:/run/php/php8.2-fpm.sock`
    Unix(&'a Path),
    /// `127.0.0.1:3000`, `[::1]:3000`
    Tcp { host: &'a str, port: u16 },
    /// An `upstream {}` group name or a host name.
    Name(&'a str),
}

impl<'a> Addr<'a> {
    /// Reads the classifier's form; `None` for an empty upstream.
    pub fn parse(upstream: &'a str) -> Option<Addr<'a>> {
        if upstream.is_empty() {
            return None;
        }
        if let Some(path) = upstream.strip_prefix("unix:") {
            return Some(Addr::Unix(Path::new(path.trim_end_matches(':'))));
        }
        let tcp = upstream.rsplit_once(':').and_then(|(host, port)| {
            let port = port.parse().ok()?;
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            (!host.is_empty()).then_some(Addr::Tcp { host, port })
        });
        Some(tcp.unwrap_or(Addr::Name(upstream)))
    }
}

/// The unit serving `upstream`, and how it was found (for the evidence).
pub fn unit_for(upstream: &str, probes: &Probes) -> Option<(String, &'static str)> {
    if let Some(unit) = probes.units_map.get(upstream) {
        return Some((unit.clone(), "agent config"));
    }
    match Addr::parse(upstream)? {
        Addr::Unix(path) => pool_at(&probes.pools, path)
            .and_then(Pool::unit)
            .map(|u| (u, "php-fpm pool")),
        Addr::Tcp { host, port } => pool_on_port(&probes.pools, port)
            .and_then(Pool::unit)
            .map(|u| (u, "php-fpm pool"))
            .or_else(|| {
                crate::probe::listeners::listening_on(&probes.listeners, host, port)
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
        Addr::Name(_) => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_classifiers_upstream_forms() {
        assert_eq!(
            Addr::parse("unix:/run/php/php8.2-fpm.sock"),
            Some(Addr::Unix(Path::new("/run/php/php8.2-fpm.sock")))
        );
        assert_eq!(
            Addr::parse("unix:/run/app.sock:"),
            Some(Addr::Unix(Path::new("/run/app.sock")))
        );
        assert_eq!(
            Addr::parse("127.0.0.1:3000"),
            Some(Addr::Tcp {
                host: "127.0.0.1",
                port: 3000
            })
        );
        assert_eq!(
            Addr::parse("[::1]:3000"),
            Some(Addr::Tcp {
                host: "::1",
                port: 3000
            })
        );
        assert_eq!(Addr::parse("flaky"), Some(Addr::Name("flaky")));
        assert_eq!(Addr::parse("x:notaport"), Some(Addr::Name("x:notaport")));
        assert_eq!(Addr::parse(""), None);
    }
}
