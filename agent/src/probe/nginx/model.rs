//! The model diagnosis reads: what [`super::parse`] yields, and the queries on it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// Every `*_buffer_size`, `*_buffers` and `*_busy_buffers_size` (what a header that does
    /// not fit is measured against).
    pub buffers: Vec<Directive>,
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
    /// The blocks around it, from the main file down through includes.
    pub block_path: BlockPath,
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
    /// The blocks around it, from the main file down through includes.
    pub block_path: BlockPath,
    /// The file it is in.
    pub file: PathBuf,
    /// Its line in that file (1-based).
    pub line: u32,
}

/// One block around a directive: the block directive's name and, in brackets, what tells it
/// from its siblings, as `nginx -T` shows it: `http`, `server[example.com www.example.com]`,
/// `location[~ \.php$]`, `upstream[php]`, `if[($request_method = POST)]`.
///
/// The key is the block's arguments, unquoted and joined by one space, so requoting or
/// reindenting a file does not change it; a `server` has no arguments and is known by its
/// `server_name`s instead (those of its own text, in order), as [`Pass::server_names`] names
/// it. A block without a key is written without brackets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct BlockStep {
    /// The block directive: `http`, `server`, `location`, ...
    pub directive: String,
    /// Its arguments joined by a space, or a server's `server_name`s.
    pub key: String,
}

impl BlockStep {
    /// A step of a block directive with these arguments; `server_names` is only read for a
    /// `server`.
    pub fn new<'a>(
        directive: &str,
        args: &[String],
        server_names: impl IntoIterator<Item = &'a String>,
    ) -> Self {
        let key = if directive == "server" && args.is_empty() {
            server_names
                .into_iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            args.join(" ")
        };
        BlockStep {
            directive: directive.to_owned(),
            key,
        }
    }
}

impl fmt::Display for BlockStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.directive)
        } else {
            write!(f, "{}[{}]", self.directive, self.key)
        }
    }
}

impl From<BlockStep> for String {
    fn from(step: BlockStep) -> String {
        step.to_string()
    }
}

impl TryFrom<String> for BlockStep {
    type Error = String;

    /// `name` or `name[key]`; the key runs to the last `]`, so it may hold brackets itself
    /// (`location[~ ^/[a-z]+$]`).
    fn try_from(text: String) -> Result<Self, String> {
        let (directive, key) = match text.split_once('[') {
            Some((name, rest)) => match rest.strip_suffix(']') {
                Some(key) => (name, key),
                None => return Err(format!("block step `{text}` has `[` without a final `]`")),
            },
            None => (text.as_str(), ""),
        };
        let plain = !directive.is_empty()
            && directive
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !plain {
            return Err(format!(
                "block step `{text}` does not start with a directive name"
            ));
        }
        Ok(BlockStep {
            directive: directive.to_owned(),
            key: key.to_owned(),
        })
    }
}

/// Where a directive sits, as nginx reads it: the blocks around it from the main file down.
/// It is in two parts because a file can be included anywhere: `outer` are the blocks around
/// the `include` that brings the directive's file in (empty for the main file), `inner` the
/// blocks opened in that file's own text. For `fastcgi_pass` in Debian's default site:
/// outer `[http]`, inner `[server[_], location[~ \.php$]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlockPath {
    /// The blocks around the file's `include`, outermost first.
    pub outer: Vec<BlockStep>,
    /// The blocks opened in the file itself, outermost first.
    pub inner: Vec<BlockStep>,
}

impl BlockPath {
    /// Every step, outermost first: `outer` then `inner`.
    pub fn steps(&self) -> impl Iterator<Item = &BlockStep> {
        self.outer.iter().chain(&self.inner)
    }

    /// The innermost block, `None` at the main level.
    pub fn innermost(&self) -> Option<&BlockStep> {
        self.inner.last().or(self.outer.last())
    }

    /// The same place one block deeper, in the same file.
    pub fn child(&self, step: BlockStep) -> BlockPath {
        let mut path = self.clone();
        path.inner.push(step);
        path
    }

    /// The same place, seen from a file included here.
    pub fn included(&self) -> BlockPath {
        BlockPath {
            outer: self.steps().cloned().collect(),
            inner: Vec::new(),
        }
    }
}

impl fmt::Display for BlockPath {
    /// `http > server[_] > location[~ \.php$]`; `main` for the main level.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut steps = self.steps();
        match steps.next() {
            None => f.write_str("main"),
            Some(first) => {
                write!(f, "{first}")?;
                steps.try_for_each(|step| write!(f, " > {step}"))
            }
        }
    }
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
