//! The model diagnosis reads: what [`super::parse`] yields, and the queries on it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::target::same_target;

/// What diagnosis needs from nginx's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NginxConfig {
    /// `user www-data;`: the worker processes' user.
    pub user: Option<String>,
    /// The group of `user www-data www-data;`, when given.
    pub user_group: Option<String>,
    /// `worker_processes` as written (`auto` or a number).
    pub worker_processes: Option<String>,
    /// `events { worker_connections N; }`.
    pub worker_connections: Option<u32>,
    /// Every `error_log`, in any context.
    pub error_logs: Vec<LogFile>,
    /// Every `access_log` except `off`.
    pub access_logs: Vec<AccessLog>,
    /// `log_format NAME ...`: name to the format string, its parts concatenated.
    pub log_formats: BTreeMap<String, String>,
    /// The addresses of every `resolver` directive, in order.
    pub resolvers: Vec<String>,
    /// Every `upstream NAME { ... }` block.
    pub upstreams: Vec<UpstreamBlock>,
    /// Every `proxy_pass`, `fastcgi_pass`, `uwsgi_pass`, `scgi_pass` and `grpc_pass`.
    pub passes: Vec<Pass>,
    /// Every directive whose name ends in `_timeout`.
    pub timeouts: Vec<Directive>,
    /// The files `nginx -T` listed, in its order.
    pub files: Vec<PathBuf>,
}

/// Where a log goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogDestination {
    /// A file on disk: the only kind a tailer can follow.
    File,
    /// `stderr`.
    Stderr,
    /// `syslog:server=...`.
    Syslog,
    /// `memory:SIZE` (debug builds).
    Memory,
}

/// One `error_log` directive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogFile {
    /// The first argument as written: a path, `stderr`, `syslog:...`, `memory:...`.
    pub path: String,
    /// What kind of destination `path` is.
    pub destination: LogDestination,
    /// The level argument (`warn`, `error`, ...), when given.
    pub level: Option<String>,
    /// The file the directive is in.
    pub file: PathBuf,
    /// Its line in that file (1-based).
    pub line: u32,
}

/// One `access_log` directive that is not `off`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessLog {
    /// The first argument as written.
    pub path: String,
    /// What kind of destination `path` is.
    pub destination: LogDestination,
    /// The `log_format` name, `combined` when none is given (nginx's default).
    pub format: String,
    /// The file the directive is in.
    pub file: PathBuf,
    /// Its line in that file (1-based).
    pub line: u32,
}

/// An `upstream NAME { server ...; }` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamBlock {
    /// The block's name, as passes name it.
    pub name: String,
    /// Its `server` lines.
    pub servers: Vec<UpstreamServer>,
    /// The file the block is in.
    pub file: PathBuf,
    /// The line of `upstream` in that file (1-based).
    pub line: u32,
}

/// One `server ADDRESS [params];` line of an upstream block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamServer {
    /// The address as written: `127.0.0.1:3000`, `unix:/run/app.sock`, `backend.example`.
    pub address: String,
    /// The address decoded (a missing port is 80, as nginx's upstream module assumes).
    pub target: Target,
    /// `max_fails=N` (nginx's default is 1).
    pub max_fails: Option<u32>,
    /// `fail_timeout=T` as written (nginx's default is 10s).
    pub fail_timeout: Option<String>,
    /// `weight=N`.
    pub weight: Option<u32>,
    /// `backup`.
    pub backup: bool,
    /// `down`.
    pub down: bool,
    /// The line in the file (1-based).
    pub line: u32,
}

/// Which module passes the request on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PassKind {
    /// `proxy_pass` (http, or stream when it has no scheme).
    Proxy,
    /// `fastcgi_pass`.
    Fastcgi,
    /// `uwsgi_pass`.
    Uwsgi,
    /// `scgi_pass`.
    Scgi,
    /// `grpc_pass`.
    Grpc,
}

/// Where a pass or an upstream server sends requests.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A unix socket path.
    Unix(PathBuf),
    /// A host (name, IPv4 or IPv6 without brackets) and port.
    Tcp {
        /// Name or address, IPv6 without brackets.
        host: String,
        /// The port, the scheme's default when none was written.
        port: u16,
    },
    /// The name of an `upstream {}` block.
    Upstream(String),
    /// An address that holds a variable (`$backend`), only known per request.
    Variable(String),
}

impl fmt::Display for Target {
    /// As nginx's error log names an upstream: `unix:/path`, `127.0.0.1:3000`, `[::1]:3000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
            Target::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Tcp { host, port } => write!(f, "{host}:{port}"),
            Target::Upstream(name) => f.write_str(name),
            Target::Variable(raw) => f.write_str(raw),
        }
    }
}

/// One `*_pass` directive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pass {
    /// Which directive.
    pub kind: PassKind,
    /// Its argument as written, e.g. `http://127.0.0.1:3000/api`.
    pub raw: String,
    /// Where it sends requests.
    pub target: Target,
    /// The `server_name`s of the enclosing server block (empty when none).
    pub server_names: Vec<String>,
    /// The innermost enclosing `location`'s arguments joined by a space (`~ \.php$`).
    pub location: Option<String>,
    /// The file the directive is in.
    pub file: PathBuf,
    /// Its line in that file (1-based).
    pub line: u32,
}

/// Any directive, as written, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directive {
    /// The directive's name.
    pub name: String,
    /// Its arguments, unquoted.
    pub args: Vec<String>,
    /// The file it is in.
    pub file: PathBuf,
    /// Its line in that file (1-based).
    pub line: u32,
}

impl NginxConfig {
    /// The passes whose target is this upstream as the classifier reports it:
    /// `unix:/run/php/php8.2-fpm.sock`, `127.0.0.1:3000`, `[::1]:3000`, an upstream block's
    /// server address, or an upstream block's name. A scheme (`http://`, `fastcgi://`) and a
    /// URI after the address are ignored; `localhost` matches `127.0.0.1` and `::1`.
    pub fn passes_to(&self, upstream: &str) -> Vec<&Pass> {
        let Some(wanted) = Target::from_log(upstream) else {
            return Vec::new();
        };
        self.passes
            .iter()
            .filter(|pass| match (&pass.target, &wanted) {
                (Target::Upstream(name), Target::Upstream(wanted)) => {
                    name.eq_ignore_ascii_case(wanted)
                }
                (Target::Upstream(name), wanted) => self
                    .upstream(name)
                    .into_iter()
                    .flat_map(|block| &block.servers)
                    .any(|server| same_target(&server.target, wanted)),
                // A bare host name, as `no resolver defined to resolve NAME` gives it.
                (Target::Tcp { host, .. }, Target::Upstream(name)) => {
                    host.eq_ignore_ascii_case(name)
                }
                (target, wanted) => same_target(target, wanted),
            })
            .collect()
    }

    /// The `upstream {}` block of this name (nginx compares names case-insensitively).
    pub fn upstream(&self, name: &str) -> Option<&UpstreamBlock> {
        self.upstreams
            .iter()
            .find(|block| block.name.eq_ignore_ascii_case(name))
    }

    /// Every concrete address nginx may connect to: the passes' unix and TCP targets and the
    /// servers of upstream blocks, each once, in order of appearance (passes first).
    pub fn targets(&self) -> Vec<Target> {
        let mut targets: Vec<Target> = Vec::new();
        let concrete = self.passes.iter().map(|pass| &pass.target).chain(
            self.upstreams
                .iter()
                .flat_map(|u| u.servers.iter().map(|s| &s.target)),
        );
        for target in concrete {
            if matches!(target, Target::Unix(_) | Target::Tcp { .. }) && !targets.contains(target) {
                targets.push(target.clone());
            }
        }
        targets
    }
}
