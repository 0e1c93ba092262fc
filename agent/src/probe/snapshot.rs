//! One reading of everything diagnosis needs, taken together: the nginx configuration
//! (`nginx -T`), php-fpm's pools, the units behind them over D-Bus, every unix socket nginx
//! points at (owner, mode, whether the worker user may connect, whether it accepts), and the TCP
//! listeners with their units.
//!
//! A probe that fails does not stop the others: its error is kept in [`Probes::errors`] and
//! shown as evidence, and diagnosis works with what it has.

use gatemend_proto::error_chain;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::listeners::{self, Listener};
use super::nginx::{self, NginxConfig, Target};
use super::php_fpm::{self, Pool};
use super::socket::{self, Access, SocketInfo};
use super::systemd::{Systemd, UnitState};

/// nginx's worker user when its configuration names none (Debian's build default).
pub const DEFAULT_WORKER_USER: &str = "www-data";

/// How long a connect to a unix socket may take before it counts as not accepting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A unix socket as nginx's worker would meet it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketProbe {
    pub info: SocketInfo,
    /// Whether nginx's worker user may connect (permissions only).
    pub worker: Access,
    /// Whether a connect() from the agent succeeded (something serves the socket).
    pub accepts: bool,
}

/// Everything diagnosis reads; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probes {
    /// The parsed `nginx -T`, when it ran.
    pub nginx: Option<NginxConfig>,
    /// `nginx -T`'s stderr when it failed: the configuration does not test clean.
    pub nginx_error: Option<String>,
    pub pools: Vec<Pool>,
    /// Units by name: php-fpm's, nginx's, the mapped ones, the listeners'.
    pub units: BTreeMap<String, UnitState>,
    /// Every unix socket nginx points at, and every pool's.
    pub sockets: BTreeMap<PathBuf, SocketProbe>,
    pub listeners: Vec<Listener>,
    /// The agent config's explicit `units:` mapping: upstream (as the classifier writes it) →
    /// unit.
    pub units_map: BTreeMap<String, String>,
    /// Units last seen listening on a TCP port, kept by the running agent across snapshots.
    pub remembered: BTreeMap<u16, String>,
    /// Probes that failed, one line each.
    pub errors: Vec<String>,
}

impl Probes {
    /// The user nginx's workers run as.
    pub fn worker_user(&self) -> String {
        self.nginx
            .as_ref()
            .and_then(|n| n.user.clone())
            .unwrap_or_else(|| DEFAULT_WORKER_USER.to_owned())
    }

    /// Keeps the units of the current listeners, for the next snapshot's `remembered`.
    pub fn remember_listeners(&self, into: &mut BTreeMap<u16, String>) {
        for l in &self.listeners {
            if let Some(unit) = &l.unit {
                into.insert(l.addr.port(), unit.clone());
            }
        }
    }
}

/// Where to read from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The nginx binary (`nginx -T`).
    pub nginx: PathBuf,
    /// The root php-fpm's files are under (`/`).
    pub root: PathBuf,
    /// `/proc`.
    pub proc: PathBuf,
    /// The explicit upstream → unit mapping.
    pub units_map: BTreeMap<String, String>,
}

impl Default for Sources {
    fn default() -> Self {
        Sources {
            nginx: PathBuf::from("/usr/sbin/nginx"),
            root: PathBuf::from("/"),
            proc: PathBuf::from("/proc"),
            units_map: BTreeMap::new(),
        }
    }
}

/// Takes one snapshot. `systemd` is `None` when the bus is unreachable (then no unit state).
pub async fn take(
    sources: &Sources,
    systemd: Option<&Systemd>,
    remembered: &BTreeMap<u16, String>,
) -> Probes {
    let mut p = Probes {
        units_map: sources.units_map.clone(),
        remembered: remembered.clone(),
        ..Probes::default()
    };
    match nginx::dump(&sources.nginx).await {
        Ok(dump) => {
            if !dump.success() {
                p.nginx_error = Some(dump.stderr.clone());
            }
            p.nginx = Some(dump.config());
        }
        Err(e) => p.errors.push(format!("nginx -T: {}", error_chain(&e))),
    }
    match php_fpm::read_pools(&sources.root) {
        Ok(pools) => p.pools = pools,
        Err(e) => p.errors.push(format!("php-fpm pools: {}", error_chain(&e))),
    }
    read_state(&mut p, sources, systemd).await;
    p
}

/// A quicker snapshot for the moment a new problem appears: the configuration (nginx -T, the
/// pools) is taken from `previous`; what changes with a fault — units, sockets, listeners —
/// is read again.
pub async fn refresh(previous: &Probes, sources: &Sources, systemd: Option<&Systemd>) -> Probes {
    let mut p = Probes {
        nginx: previous.nginx.clone(),
        nginx_error: previous.nginx_error.clone(),
        pools: previous.pools.clone(),
        units_map: previous.units_map.clone(),
        remembered: previous.remembered.clone(),
        ..Probes::default()
    };
    read_state(&mut p, sources, systemd).await;
    p
}

/// Reads the listeners, the sockets and the units into `p`.
async fn read_state(p: &mut Probes, sources: &Sources, systemd: Option<&Systemd>) {
    let proc = sources.proc.clone();
    match tokio::task::spawn_blocking(move || listeners::read(&proc)).await {
        Ok(Ok(listeners)) => p.listeners = listeners,
        Ok(Err(e)) => p.errors.push(format!("listeners: {}", error_chain(&e))),
        Err(e) => p.errors.push(format!("listeners: {e}")),
    }
    let worker = p.worker_user();
    for path in socket_paths(p) {
        match socket::inspect(&path) {
            Ok(info) => {
                let worker = socket::may_connect(&info, &worker);
                let accepts = info.is_socket && accepts(&path).await;
                p.sockets.insert(
                    path,
                    SocketProbe {
                        info,
                        worker,
                        accepts,
                    },
                );
            }
            Err(e) => p
                .errors
                .push(format!("socket {}: {}", path.display(), error_chain(&e))),
        }
    }
    if let Some(systemd) = systemd {
        for unit in unit_names(p) {
            match systemd.unit_state(&unit).await {
                Ok(state) => {
                    p.units.insert(unit, state);
                }
                Err(e) => p.errors.push(format!("unit {unit}: {}", error_chain(&e))),
            }
        }
    } else {
        p.errors
            .push("systemd: the system bus is not reachable".to_owned());
    }
}

/// The unix sockets nginx points at and the pools listen on.
fn socket_paths(p: &Probes) -> BTreeSet<PathBuf> {
    let mut paths = BTreeSet::new();
    if let Some(n) = &p.nginx {
        for target in n.targets() {
            if let Target::Unix(path) = target {
                paths.insert(path);
            }
        }
    }
    for pool in &p.pools {
        if let Some(path) = pool.socket_path() {
            paths.insert(PathBuf::from(path));
        }
    }
    for upstream in p.units_map.keys() {
        if let Some(path) = upstream.strip_prefix("unix:") {
            paths.insert(PathBuf::from(path));
        }
    }
    paths
}

/// Every unit diagnosis may ask about.
fn unit_names(p: &Probes) -> BTreeSet<String> {
    let mut units = BTreeSet::from(["nginx.service".to_owned()]);
    units.extend(p.pools.iter().filter_map(Pool::unit));
    units.extend(p.units_map.values().cloned());
    units.extend(p.remembered.values().cloned());
    units.extend(p.listeners.iter().filter_map(|l| l.unit.clone()));
    units
}

/// Whether something accepts a connection on the socket now.
async fn accepts(path: &Path) -> bool {
    matches!(
        tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::UnixStream::connect(path)).await,
        Ok(Ok(_))
    )
}
