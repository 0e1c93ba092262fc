//! nginx's configuration as `nginx -T` prints it: every file, each introduced by a
//! `# configuration file PATH:` line.
//!
//! [`parse`] is pure and total: any text gives a (possibly empty) [`NginxConfig`], never a
//! panic. [`dump`] runs `nginx -T` and keeps what it printed and how it exited.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::GlobBuilder;
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

/// How long `nginx -T` may take: it only reads files, so anything near this is a hung disk or
/// a hung resolver (nginx resolves upstream host names while testing).
const DUMP_TIMEOUT: Duration = Duration::from_secs(30);

/// Deeper `{` nesting is cut off: nginx itself has no use for more, and the walk recurses.
const MAX_NESTING: usize = 64;

/// How deep includes may nest; a file including itself would otherwise never end.
const MAX_INCLUDE_DEPTH: usize = 16;

/// How many directives the walk visits at most: includes repeated in many places multiply
/// them, and text crafted that way must not make parsing take forever.
const MAX_VISITS: usize = 1_000_000;

/// Parses `nginx -T` output. Total: text that is not nginx configuration yields what could be
/// recognised of it, possibly nothing.
///
/// Each file listed by a `# configuration file PATH:` line is parsed on its own, then the
/// files are walked from the first (the main file) following `include` directives, so a file
/// included inside a `server` or `location` block gets that block's context, as nginx reads
/// it. Text before the first such line is read as a file with an empty path. Line numbers are
/// those of the directive's name in its file.
pub fn parse(text: &str) -> NginxConfig {
    let sources: Vec<Source> = split_files(text)
        .into_iter()
        .map(|(path, body)| Source {
            nodes: tree(tokens(body)),
            path,
        })
        .collect();
    let mut walker = Walker {
        sources: &sources,
        prefix: sources
            .iter()
            .find(|s| !s.path.as_os_str().is_empty())
            .and_then(|s| s.path.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default(),
        config: NginxConfig {
            files: sources
                .iter()
                .filter(|s| !s.path.as_os_str().is_empty())
                .map(|s| s.path.clone())
                .collect(),
            ..NginxConfig::default()
        },
        reached: vec![false; sources.len()],
        stack: Vec::new(),
        visits: 0,
        upstream_passes: Vec::new(),
        includes: HashMap::new(),
    };
    for index in 0..sources.len() {
        // Files no include reaches (text before the first marker, or output edited by hand)
        // are still read, at the top level.
        if !walker.reached[index] {
            walker.walk_file(index, &Context::default());
        }
    }
    walker.finish()
}

/// Runs `BINARY -T` and keeps its output and exit status; a configuration that fails the test
/// is not an error here (its stderr is what diagnosis wants), failing to run the binary is.
pub async fn dump(binary: &Path) -> Result<NginxDump, ProbeError> {
    let command = format!("{} -T", binary.display());
    let mut child = tokio::process::Command::new(binary);
    child
        .arg("-T")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(DUMP_TIMEOUT, child.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(source)) => return Err(ProbeError::Spawn { command, source }),
        Err(_) => {
            return Err(ProbeError::Timeout {
                command,
                after: DUMP_TIMEOUT,
            });
        }
    };
    let dump = NginxDump {
        binary: binary.to_owned(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        exit_code: output.status.code(),
    };
    tracing::debug!(
        command = %command,
        exit_code = ?dump.exit_code,
        stdout_bytes = dump.stdout.len(),
        "Ran nginx -T."
    );
    Ok(dump)
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

/// Two targets nginx would connect to the same way; `localhost` is taken for the loopback
/// addresses it names in every stock `/etc/hosts`, since nginx's log shows the address.
fn same_target(a: &Target, b: &Target) -> bool {
    match (a, b) {
        (Target::Tcp { host: ha, port: pa }, Target::Tcp { host: hb, port: pb }) => {
            pa == pb
                && (ha.eq_ignore_ascii_case(hb)
                    || (is_loopback(ha)
                        && is_loopback(hb)
                        && (is_localhost(ha) || is_localhost(hb))))
        }
        _ => a == b,
    }
}

fn is_localhost(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
}

fn is_loopback(host: &str) -> bool {
    is_localhost(host)
        || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
        || host.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback())
}

impl Target {
    /// An upstream as nginx's error log or the classifier names it: `unix:/path.sock`
    /// (a trailing `:` or `:/uri` ignored), `127.0.0.1:3000`, `[::1]:3000`, with or without a
    /// scheme and a URI (`http://127.0.0.1:3000/x`). A name without a port (an upstream block,
    /// as `no live upstreams` lines give it, or a host) is [`Target::Upstream`]. `None` for
    /// empty or undecodable text.
    pub fn from_log(upstream: &str) -> Option<Target> {
        let text = upstream.trim().trim_matches('"');
        let text = text.split_once("://").map_or(text, |(_, rest)| rest);
        if let Some(path) = text.strip_prefix("unix:") {
            // `unix:/path.sock:` or `unix:/path.sock:/uri`: the path ends at the first colon.
            let path = path.split(':').next().unwrap_or(path);
            return (!path.is_empty()).then(|| Target::Unix(PathBuf::from(path)));
        }
        let hostport = text.split(['/', '?']).next().unwrap_or(text);
        match split_host_port(hostport) {
            HostPort::WithPort(host, port) => Some(Target::Tcp { host, port }),
            HostPort::NoPort(name) => Some(Target::Upstream(name)),
            HostPort::Invalid => None,
        }
    }
}

/// One file's text from the dump.
struct Source {
    path: PathBuf,
    nodes: Vec<Node>,
}

/// Splits `nginx -T` output at its `# configuration file PATH:` lines. nginx prints each
/// file's bytes after its line and then a newline, so a file's line 1 is the line after.
fn split_files(text: &str) -> Vec<(PathBuf, &str)> {
    const MARKER: &str = "# configuration file ";
    let mut files = Vec::new();
    let mut current = PathBuf::new();
    let mut body_start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if let Some(path) = bare.strip_prefix(MARKER).and_then(|p| p.strip_suffix(':')) {
            let body = text.get(body_start..offset).unwrap_or("");
            if !current.as_os_str().is_empty() || !body.trim().is_empty() {
                files.push((current, body));
            }
            current = PathBuf::from(path);
            body_start = offset + line.len();
        }
        offset += line.len();
    }
    let body = text.get(body_start..).unwrap_or("");
    if !current.as_os_str().is_empty() || !body.trim().is_empty() {
        files.push((current, body));
    }
    files
}

/// A token of nginx's configuration grammar.
#[derive(Debug, PartialEq)]
enum Token {
    Word { text: String, line: u32 },
    Semicolon,
    Open,
    Close,
}

/// Tokenizes as nginx's `ngx_conf_read_token` does: whitespace separates words; `;` and `{`
/// end a word; `}` and `#` are special only where a word would start; `'…'` and `"…"` quote;
/// a backslash makes the next character literal; `${` does not open a block.
fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut line: u32 = 1;
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            '\n' => {
                line = line.saturating_add(1);
                chars.next();
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            ';' => {
                chars.next();
                out.push(Token::Semicolon);
            }
            '{' => {
                chars.next();
                out.push(Token::Open);
            }
            '}' => {
                chars.next();
                out.push(Token::Close);
            }
            '#' => while chars.next_if(|&c| c != '\n').is_some() {},
            '"' | '\'' => {
                chars.next();
                let quote = c;
                let start = line;
                let mut raw = String::new();
                while let Some(c) = chars.next() {
                    if c == '\n' {
                        line = line.saturating_add(1);
                    }
                    if c == quote {
                        break;
                    }
                    raw.push(c);
                    if c == '\\'
                        && let Some(next) = chars.next()
                    {
                        // The escaped character is literal, even a quote or a `;`.
                        if next == '\n' {
                            line = line.saturating_add(1);
                        }
                        raw.push(next);
                    }
                }
                out.push(Token::Word {
                    text: unescape(&raw),
                    line: start,
                });
            }
            _ => {
                let start = line;
                let mut raw = String::new();
                let mut after_dollar = false;
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == ';' || (c == '{' && !after_dollar) {
                        break;
                    }
                    chars.next();
                    after_dollar = c == '$';
                    raw.push(c);
                    if c == '\\'
                        && let Some(next) = chars.next()
                    {
                        // The escaped character is literal, even a quote or a `;`.
                        if next == '\n' {
                            line = line.saturating_add(1);
                        }
                        raw.push(next);
                    }
                }
                out.push(Token::Word {
                    text: unescape(&raw),
                    line: start,
                });
            }
        }
    }
    out
}

/// nginx's unescaping of a word: `\"`, `\'` and `\\` lose their backslash, `\t`, `\r`, `\n`
/// become the control characters, any other backslash stays (regexes keep `\d`, `\.`).
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some(&next @ ('"' | '\'' | '\\')) => {
                out.push(next);
                chars.next();
            }
            Some('t') => {
                out.push('\t');
                chars.next();
            }
            Some('r') => {
                out.push('\r');
                chars.next();
            }
            Some('n') => {
                out.push('\n');
                chars.next();
            }
            _ => out.push('\\'),
        }
    }
    out
}

/// A directive: its words, and its block when it has one.
#[derive(Debug)]
struct Node {
    name: String,
    args: Vec<String>,
    line: u32,
    block: Option<Vec<Node>>,
}

/// Builds the directive tree of one file, without recursion (the input may nest deeply).
/// Unbalanced input is closed where it ends; a stray `}` is dropped; words that no `;` ends
/// at the end of the text still form a directive; blocks deeper than [`MAX_NESTING`] are
/// dropped with their contents.
fn tree(tokens: Vec<Token>) -> Vec<Node> {
    // Each open level: the directive that opened it (none for the file) and its children.
    let mut levels: Vec<(Option<Node>, Vec<Node>)> = vec![(None, Vec::new())];
    let mut words: Vec<(String, u32)> = Vec::new();
    let mut skipping: usize = 0;
    for token in tokens {
        if skipping > 0 {
            match token {
                Token::Open => skipping += 1,
                Token::Close => skipping -= 1,
                _ => {}
            }
            continue;
        }
        match token {
            Token::Word { text, line } => words.push((text, line)),
            Token::Semicolon => {
                if let Some(node) = node_of(std::mem::take(&mut words), None)
                    && let Some((_, children)) = levels.last_mut()
                {
                    children.push(node);
                }
            }
            Token::Open => {
                if levels.len() > MAX_NESTING {
                    words.clear();
                    skipping = 1;
                    continue;
                }
                let opener =
                    node_of(std::mem::take(&mut words), Some(Vec::new())).unwrap_or(Node {
                        name: String::new(),
                        args: Vec::new(),
                        line: 0,
                        block: Some(Vec::new()),
                    });
                levels.push((Some(opener), Vec::new()));
            }
            Token::Close => {
                if let Some(node) = node_of(std::mem::take(&mut words), None)
                    && let Some((_, children)) = levels.last_mut()
                {
                    children.push(node);
                }
                close_level(&mut levels);
            }
        }
    }
    if let Some(node) = node_of(words, None)
        && let Some((_, children)) = levels.last_mut()
    {
        children.push(node);
    }
    while levels.len() > 1 {
        close_level(&mut levels);
    }
    levels
        .pop()
        .map(|(_, children)| children)
        .unwrap_or_default()
}

/// Closes the innermost open block into its parent; the file level is never closed.
fn close_level(levels: &mut Vec<(Option<Node>, Vec<Node>)>) {
    if levels.len() < 2 {
        return;
    }
    if let Some((Some(mut opener), children)) = levels.pop() {
        opener.block = Some(children);
        if let Some((_, parent)) = levels.last_mut() {
            parent.push(opener);
        }
    }
}

fn node_of(words: Vec<(String, u32)>, block: Option<Vec<Node>>) -> Option<Node> {
    let mut words = words.into_iter();
    let (name, line) = words.next()?;
    Some(Node {
        name,
        args: words.map(|(w, _)| w).collect(),
        line,
        block,
    })
}

/// Where a directive sits.
#[derive(Debug, Clone, Default)]
struct Context {
    server_names: Vec<String>,
    location: Option<String>,
}

/// A pass before upstream names are known: a schemed address without a port may name an
/// upstream block or a host, decided in [`Walker::finish`].
struct PendingName {
    pass: usize,
    host: String,
}

struct Walker<'a> {
    sources: &'a [Source],
    /// Relative includes are relative to the main file's directory, as nginx's conf prefix.
    prefix: PathBuf,
    config: NginxConfig,
    reached: Vec<bool>,
    /// The files being walked, innermost last: an include of one of them is a cycle.
    stack: Vec<usize>,
    visits: usize,
    upstream_passes: Vec<PendingName>,
    /// Include patterns already matched: the same snippet is often included in every location.
    includes: HashMap<String, Vec<usize>>,
}

impl Walker<'_> {
    fn walk_file(&mut self, index: usize, context: &Context) {
        let Some(source) = self.sources.get(index) else {
            return;
        };
        if self.stack.contains(&index) || self.stack.len() >= MAX_INCLUDE_DEPTH {
            return;
        }
        if let Some(reached) = self.reached.get_mut(index) {
            *reached = true;
        }
        self.stack.push(index);
        self.walk(&source.nodes, &source.path, context);
        self.stack.pop();
    }

    fn walk(&mut self, nodes: &[Node], file: &Path, context: &Context) {
        for node in nodes {
            self.visits += 1;
            if self.visits > MAX_VISITS {
                return;
            }
            self.directive(node, file, context);
            if let Some(children) = &node.block {
                match node.name.as_str() {
                    "server" => {
                        let inner = Context {
                            server_names: children
                                .iter()
                                .filter(|n| n.name == "server_name")
                                .flat_map(|n| n.args.iter().cloned())
                                .collect(),
                            location: None,
                        };
                        self.walk(children, file, &inner);
                    }
                    "location" => {
                        let inner = Context {
                            server_names: context.server_names.clone(),
                            location: Some(node.args.join(" ")),
                        };
                        self.walk(children, file, &inner);
                    }
                    "upstream" => self.upstream(node, children, file, context),
                    _ => self.walk(children, file, context),
                }
            }
        }
    }

    /// What one directive contributes, by name.
    fn directive(&mut self, node: &Node, file: &Path, context: &Context) {
        let args = &node.args;
        let first = args.first();
        match node.name.as_str() {
            "include" if node.block.is_none() => {
                if let Some(pattern) = first {
                    for index in self.included(pattern) {
                        self.walk_file(index, context);
                    }
                }
            }
            "user" => {
                self.config.user = first.cloned();
                self.config.user_group = args.get(1).cloned();
            }
            "worker_processes" => self.config.worker_processes = first.cloned(),
            "worker_connections" => {
                self.config.worker_connections = first.and_then(|n| n.parse().ok());
            }
            "error_log" => {
                if let Some(path) = first {
                    self.config.error_logs.push(LogFile {
                        path: path.clone(),
                        destination: destination(path),
                        level: args.get(1).cloned(),
                        file: file.to_owned(),
                        line: node.line,
                    });
                }
            }
            "access_log" => {
                if let Some(path) = first.filter(|p| p.as_str() != "off") {
                    self.config.access_logs.push(AccessLog {
                        path: path.clone(),
                        destination: destination(path),
                        format: args
                            .get(1)
                            .cloned()
                            .unwrap_or_else(|| "combined".to_owned()),
                        file: file.to_owned(),
                        line: node.line,
                    });
                }
            }
            "log_format" => {
                if let Some(name) = first {
                    let format: String = args
                        .iter()
                        .skip(1)
                        .skip_while(|a| a.starts_with("escape="))
                        .map(String::as_str)
                        .collect();
                    self.config.log_formats.insert(name.clone(), format);
                }
            }
            "resolver" => self
                .config
                .resolvers
                .extend(args.iter().filter(|a| !a.contains('=')).cloned()),
            name if name.ends_with("_timeout") => self.config.timeouts.push(Directive {
                name: name.to_owned(),
                args: args.clone(),
                file: file.to_owned(),
                line: node.line,
            }),
            name => {
                if let (Some(kind), Some(raw)) = (pass_kind(name), first) {
                    let (target, pending) = pass_target(kind, raw);
                    if let Some(host) = pending {
                        self.upstream_passes.push(PendingName {
                            pass: self.config.passes.len(),
                            host,
                        });
                    }
                    self.config.passes.push(Pass {
                        kind,
                        raw: raw.clone(),
                        target,
                        server_names: context.server_names.clone(),
                        location: context.location.clone(),
                        file: file.to_owned(),
                        line: node.line,
                    });
                }
            }
        }
    }

    fn upstream(&mut self, node: &Node, children: &[Node], file: &Path, context: &Context) {
        let servers = children
            .iter()
            .filter(|n| n.name == "server" && n.block.is_none())
            .filter_map(upstream_server)
            .collect();
        self.config.upstreams.push(UpstreamBlock {
            name: node.args.first().cloned().unwrap_or_default(),
            servers,
            file: file.to_owned(),
            line: node.line,
        });
        // Other directives in the block (`keepalive_timeout`, includes) count as usual.
        let rest: Vec<&Node> = children.iter().filter(|n| n.name != "server").collect();
        for child in rest {
            self.visits += 1;
            if self.visits > MAX_VISITS {
                return;
            }
            self.directive(child, file, context);
        }
    }

    /// The files an `include PATTERN` names among those the dump lists, in glob order.
    fn included(&mut self, pattern: &str) -> Vec<usize> {
        if let Some(found) = self.includes.get(pattern) {
            return found.clone();
        }
        let found = self.match_include(pattern);
        self.includes.insert(pattern.to_owned(), found.clone());
        found
    }

    fn match_include(&self, pattern: &str) -> Vec<usize> {
        let full = if Path::new(pattern).is_absolute() {
            PathBuf::from(pattern)
        } else {
            self.prefix.join(pattern)
        };
        let Some(full) = full.to_str() else {
            return Vec::new();
        };
        // glob(3), which nginx uses: `*` does not cross a `/`.
        let Ok(glob) = GlobBuilder::new(full).literal_separator(true).build() else {
            return Vec::new();
        };
        let matcher = glob.compile_matcher();
        let mut found: Vec<usize> = self
            .sources
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.path.as_os_str().is_empty() && matcher.is_match(&s.path))
            .map(|(i, _)| i)
            .collect();
        found.sort_by(|a, b| self.sources[*a].path.cmp(&self.sources[*b].path));
        found
    }

    /// Resolves the passes that named a host without a port: an upstream block of that name
    /// wins (nginx matches block names case-insensitively), else it is the host on the
    /// scheme's default port, already recorded.
    fn finish(mut self) -> NginxConfig {
        for pending in &self.upstream_passes {
            let is_block = self.config.upstream(&pending.host).is_some();
            if is_block && let Some(pass) = self.config.passes.get_mut(pending.pass) {
                pass.target = Target::Upstream(pending.host.clone());
            }
        }
        self.config
    }
}

fn pass_kind(name: &str) -> Option<PassKind> {
    Some(match name {
        "proxy_pass" => PassKind::Proxy,
        "fastcgi_pass" => PassKind::Fastcgi,
        "uwsgi_pass" => PassKind::Uwsgi,
        "scgi_pass" => PassKind::Scgi,
        "grpc_pass" => PassKind::Grpc,
        _ => return None,
    })
}

fn destination(path: &str) -> LogDestination {
    if path == "stderr" {
        LogDestination::Stderr
    } else if path.starts_with("syslog:") {
        LogDestination::Syslog
    } else if path.starts_with("memory:") {
        LogDestination::Memory
    } else {
        LogDestination::File
    }
}

/// Decodes a pass's argument. The second value is set when the address has a scheme and a
/// host without a port: an upstream block's name if one has it, known only at the end.
fn pass_target(kind: PassKind, raw: &str) -> (Target, Option<String>) {
    let (scheme, rest) = match raw.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, raw),
    };
    let default_port = match scheme.as_deref() {
        Some("https" | "grpcs" | "suwsgi") => Some(443),
        Some(_) => Some(80),
        None => None,
    };
    if let Some(path) = rest.strip_prefix("unix:") {
        // proxy_pass (http) takes a URI after the path: `http://unix:/path.sock:/uri`.
        let path = if kind == PassKind::Proxy && scheme.is_some() {
            path.split(':').next().unwrap_or(path)
        } else {
            path
        };
        return (Target::Unix(PathBuf::from(path)), None);
    }
    let hostport = if scheme.is_some() {
        rest.split(['/', '?']).next().unwrap_or(rest)
    } else {
        rest
    };
    if hostport.contains('$') {
        return (Target::Variable(raw.to_owned()), None);
    }
    match split_host_port(hostport) {
        HostPort::WithPort(host, port) => (Target::Tcp { host, port }, None),
        HostPort::NoPort(host) => match default_port {
            Some(port) => (
                Target::Tcp {
                    host: host.clone(),
                    port,
                },
                Some(host),
            ),
            // `fastcgi_pass php_pool;`: without a scheme or port only a block name is valid.
            None => (Target::Upstream(host), None),
        },
        HostPort::Invalid => (Target::Upstream(hostport.to_owned()), None),
    }
}

/// An `upstream` block's `server ADDRESS [params]`.
fn upstream_server(node: &Node) -> Option<UpstreamServer> {
    let address = node.args.first()?;
    let target = if let Some(path) = address.strip_prefix("unix:") {
        Target::Unix(PathBuf::from(path))
    } else {
        match split_host_port(address) {
            HostPort::WithPort(host, port) => Target::Tcp { host, port },
            // The upstream module's default port.
            HostPort::NoPort(host) => Target::Tcp { host, port: 80 },
            HostPort::Invalid => Target::Upstream(address.clone()),
        }
    };
    let mut server = UpstreamServer {
        address: address.clone(),
        target,
        max_fails: None,
        fail_timeout: None,
        weight: None,
        backup: false,
        down: false,
        line: node.line,
    };
    for param in node.args.iter().skip(1) {
        match param.split_once('=') {
            Some(("max_fails", n)) => server.max_fails = n.parse().ok(),
            Some(("fail_timeout", t)) => server.fail_timeout = Some(t.to_owned()),
            Some(("weight", n)) => server.weight = n.parse().ok(),
            None if param == "backup" => server.backup = true,
            None if param == "down" => server.down = true,
            _ => {}
        }
    }
    Some(server)
}

enum HostPort {
    WithPort(String, u16),
    NoPort(String),
    Invalid,
}

/// `host:port`, `[v6]:port`, `[v6]`, `host`; IPv6 is returned without brackets.
fn split_host_port(text: &str) -> HostPort {
    if let Some(rest) = text.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return HostPort::Invalid;
        };
        return match after.strip_prefix(':') {
            Some(port) => port.parse().map_or(HostPort::Invalid, |p| {
                HostPort::WithPort(host.to_owned(), p)
            }),
            None if after.is_empty() => HostPort::NoPort(host.to_owned()),
            None => HostPort::Invalid,
        };
    }
    match text.rsplit_once(':') {
        // More than one colon without brackets: nginx reads a bare IPv6 address.
        Some((host, _)) if host.contains(':') => {
            if text.parse::<Ipv6Addr>().is_ok() {
                HostPort::NoPort(text.to_owned())
            } else {
                HostPort::Invalid
            }
        }
        Some((host, port)) if !host.is_empty() => port.parse().map_or(HostPort::Invalid, |p| {
            HostPort::WithPort(host.to_owned(), p)
        }),
        Some(_) => HostPort::Invalid,
        None if text.is_empty() => HostPort::Invalid,
        None => HostPort::NoPort(text.to_owned()),
    }
}
