//! The walk over the files' trees, from the main file through `include`s, that fills the
//! model with each directive in its context.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use globset::GlobBuilder;

use super::model::{
    AccessLog, BlockPath, Directive, LogDestination, LogFile, NginxConfig, Pass, PassKind, Target,
    UpstreamBlock, UpstreamServer,
};
use super::target::{pass_target, server_target};
use super::tree::Node;

/// How deep includes may nest; a file including itself would otherwise never end.
const MAX_INCLUDE_DEPTH: usize = 16;

/// How many directives the walk visits at most: includes repeated in many places multiply
/// them, and text crafted that way must not make parsing take forever.
const MAX_VISITS: usize = 1_000_000;

/// One file's text from the dump.
pub(super) struct Source {
    pub(super) path: PathBuf,
    pub(super) nodes: Vec<Node>,
}

/// Walks the files from the first (the main file) following `include` directives, then the
/// files no include reached, and gathers the model.
pub(super) fn walk(sources: &[Source]) -> NginxConfig {
    let mut walker = Walker {
        sources,
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

/// Where a directive sits.
#[derive(Debug, Clone, Default)]
struct Context {
    server_names: Vec<String>,
    location: Option<String>,
    path: BlockPath,
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
        let context = Context {
            path: context.path.included(),
            ..context.clone()
        };
        self.walk(&source.nodes, &source.path, &context);
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
                let path = context.path.child(node.step());
                match node.name.as_str() {
                    "server" => {
                        let inner = Context {
                            server_names: children
                                .iter()
                                .filter(|n| n.name == "server_name")
                                .flat_map(|n| n.args.iter().cloned())
                                .collect(),
                            location: None,
                            path,
                        };
                        self.walk(children, file, &inner);
                    }
                    "location" => {
                        let inner = Context {
                            server_names: context.server_names.clone(),
                            location: Some(node.args.join(" ")),
                            path,
                        };
                        self.walk(children, file, &inner);
                    }
                    "upstream" => {
                        let inner = Context {
                            path,
                            ..context.clone()
                        };
                        self.upstream(node, children, file, &inner);
                    }
                    _ => {
                        let inner = Context {
                            path,
                            ..context.clone()
                        };
                        self.walk(children, file, &inner);
                    }
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
                block_path: context.path.clone(),
                file: file.to_owned(),
                line: node.line,
            }),
            name if name.ends_with("_buffer_size")
                || name.ends_with("_buffers")
                || name.ends_with("_busy_buffers_size") =>
            {
                self.config.buffers.push(Directive {
                    name: name.to_owned(),
                    args: args.clone(),
                    block_path: context.path.clone(),
                    file: file.to_owned(),
                    line: node.line,
                });
            }
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
                        block_path: context.path.clone(),
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

/// An `upstream` block's `server ADDRESS [params]`.
fn upstream_server(node: &Node) -> Option<UpstreamServer> {
    let address = node.args.first()?;
    let mut server = UpstreamServer {
        address: address.clone(),
        target: server_target(address),
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
