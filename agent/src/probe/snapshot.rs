//! One reading of everything diagnosis needs, taken together: the nginx configuration
//! (`nginx -T`), php-fpm's pools, the units behind them over D-Bus, every unix socket nginx
//! points at (owner, mode, whether the worker user may connect, whether it accepts), and the TCP
//! listeners with their units.
//!
//! For the configuration edits diagnosis proposes, it also keeps the text of every file
//! nginx read and of every pool file (an edit is computed against a file's text and its hash),
//! the host's name servers, and the memory facts `pm.max_children` is sized from.
//!
//! A probe that fails does not stop the others: its error is kept in [`Probes::errors`] and
//! shown as evidence, and diagnosis works with what it has.

use gatemend_proto::error_chain;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::listeners::{self, Listener};
use super::memory::{self, Memory};
use super::nginx::{self, NginxConfig, Target};
use super::php_fpm::{self, Pool};
use super::resolv;
use super::socket::{self, Access, SocketInfo};
use super::systemd::{Systemd, UnitState};
use crate::diagnose::EditBounds;

/// nginx's worker user when its configuration names none (Debian's build default).
pub const DEFAULT_WORKER_USER: &str = "www-data";

/// A configuration file larger than this is not kept for edits (nginx's and php-fpm's are a
/// few kilobytes; diagnosis then proposes no edit of it and says why).
const MAX_POOL_FILE: u64 = 1 << 20;

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
    /// The text of each file `nginx -T` printed, as it is on disk: what an nginx edit is
    /// computed against.
    pub nginx_files: BTreeMap<PathBuf, String>,
    /// The text of each pool file, by the path the host sees.
    pub pool_files: BTreeMap<PathBuf, String>,
    /// The host's name servers (`/etc/resolv.conf`).
    pub nameservers: Vec<String>,
    /// `MemAvailable` and what php-fpm's children use.
    pub memory: Memory,
    /// The largest values diagnosis proposes (the agent config's bounds).
    pub edit_bounds: EditBounds,
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
    /// The largest values diagnosis proposes.
    pub edit_bounds: EditBounds,
}

impl Default for Sources {
    fn default() -> Self {
        Sources {
            nginx: PathBuf::from("/usr/sbin/nginx"),
            root: PathBuf::from("/"),
            proc: PathBuf::from("/proc"),
            units_map: BTreeMap::new(),
            edit_bounds: EditBounds::default(),
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
        edit_bounds: sources.edit_bounds,
        ..Probes::default()
    };
    match nginx::dump(&sources.nginx).await {
        Ok(dump) => {
            if !dump.success() {
                p.nginx_error = Some(dump.stderr.clone());
            }
            p.nginx = Some(dump.config());
            p.nginx_files = nginx::files(&dump.stdout)
                .into_iter()
                .map(|(path, text)| (path, text.to_owned()))
                .collect();
        }
        Err(e) => p.errors.push(format!("nginx -T: {}", error_chain(&e))),
    }
    match php_fpm::read_pools(&sources.root) {
        Ok(pools) => p.pools = pools,
        Err(e) => p.errors.push(format!("php-fpm pools: {}", error_chain(&e))),
    }
    p.pool_files = read_pool_files(&p.pools, &sources.root, &mut p.errors);
    match resolv::read(&sources.root) {
        Ok(nameservers) => p.nameservers = nameservers,
        Err(e) => p.errors.push(format!("resolv.conf: {}", error_chain(&e))),
    }
    read_state(&mut p, sources, systemd).await;
    // After the units: the children counted are those of each master systemd names now.
    let masters = php_fpm_masters(&p);
    let proc = sources.proc.clone();
    match tokio::task::spawn_blocking(move || memory::read(&proc, &masters)).await {
        Ok(Ok(memory)) => p.memory = memory,
        Ok(Err(e)) => p.errors.push(format!("memory: {}", error_chain(&e))),
        Err(e) => p.errors.push(format!("memory: {e}")),
    }
    p
}

/// The text of each pool file, read again as the host has it now (UTF-8 only: an edit of a
/// file that is not would not hash as proposed).
fn read_pool_files(
    pools: &[Pool],
    root: &Path,
    errors: &mut Vec<String>,
) -> BTreeMap<PathBuf, String> {
    let files: BTreeSet<&PathBuf> = pools.iter().map(|pool| &pool.file).collect();
    let mut texts = BTreeMap::new();
    for file in files {
        let on_disk = root.join(file.strip_prefix("/").unwrap_or(file));
        let read = std::fs::File::open(&on_disk).and_then(|f| {
            use std::io::Read;
            let mut bytes = Vec::new();
            f.take(MAX_POOL_FILE + 1).read_to_end(&mut bytes)?;
            Ok(bytes)
        });
        match read {
            Ok(bytes) if bytes.len() as u64 > MAX_POOL_FILE => errors.push(format!(
                "pool file {}: larger than {MAX_POOL_FILE} bytes, not kept for edits",
                file.display()
            )),
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => {
                    texts.insert(file.clone(), text);
                }
                Err(_) => errors.push(format!(
                    "pool file {}: not UTF-8, not kept for edits",
                    file.display()
                )),
            },
            Err(e) => errors.push(format!("pool file {}: {e}", file.display())),
        }
    }
    texts
}

/// Each php-fpm unit and the MainPID systemd gives it (its master), when it runs.
fn php_fpm_masters(p: &Probes) -> Vec<(String, u32)> {
    let units: BTreeSet<String> = p.pools.iter().filter_map(Pool::unit).collect();
    units
        .into_iter()
        .filter_map(|unit| {
            let pid = p.units.get(&unit)?.main_pid.filter(|pid| *pid > 0)?;
            Some((unit, pid))
        })
        .collect()
}

/// A quicker snapshot for the moment a new problem appears: the configuration (nginx -T, the
/// pools, their files, the name servers) and the memory facts are taken from `previous`; what
/// changes with a fault — units, sockets, listeners — is read again.
pub async fn refresh(previous: &Probes, sources: &Sources, systemd: Option<&Systemd>) -> Probes {
    let mut p = Probes {
        nginx: previous.nginx.clone(),
        nginx_error: previous.nginx_error.clone(),
        pools: previous.pools.clone(),
        units_map: previous.units_map.clone(),
        remembered: previous.remembered.clone(),
        nginx_files: previous.nginx_files.clone(),
        pool_files: previous.pool_files.clone(),
        nameservers: previous.nameservers.clone(),
        // Memory is read with the periodic snapshot only: walking /proc would delay the
        // diagnosis of a new problem, and the children's sizes change slowly.
        memory: previous.memory.clone(),
        edit_bounds: previous.edit_bounds,
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
