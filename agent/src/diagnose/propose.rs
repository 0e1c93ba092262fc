//! Proposals: the configuration edit that would mend a diagnosed problem, the runbooks' own
//! fixes (`fastcgi_pass`/`proxy_pass` target, timeouts, buffers, `resolver`,
//! `pm.max_children`, `worker_connections`). Each root cause's file says what to change and
//! sizes the new value from the parsed configuration and measured facts; this file holds what
//! they share: the edit computed with the editor (`crate::edit`) against the file's text as
//! the probes read it, the pass nginx used for a line, the directive in effect in a block, and
//! the bounds no proposal goes beyond.
//!
//! A proposal the editor refuses (the directive is written twice, the block is ambiguous,
//! the file is not in the dump) is not sent: the diagnosis's detail says why instead. Pure,
//! like the rest of diagnosis.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gatemend_proto::{ConfigKind, v1};
use serde::Serialize;

use super::{Diagnosis, Probes};
use crate::detect::Classified;
use crate::edit::{NginxEdit, PoolEdit, apply_edit, apply_pool_edit};
use crate::probe::nginx::{BlockPath, BlockStep, Directive, NginxConfig, Pass};

/// The largest values diagnosis proposes; the agent that applies an edit checks its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EditBounds {
    /// The longest `*_read_timeout` / `*_send_timeout`.
    pub max_timeout: Duration,
    /// The largest `*_buffer_size`, in bytes.
    pub max_buffer_size: u64,
    /// The most `pm.max_children`.
    pub max_children: u32,
    /// The most `worker_connections`.
    pub max_worker_connections: u32,
}

impl Default for EditBounds {
    fn default() -> Self {
        EditBounds {
            max_timeout: Duration::from_secs(300),
            max_buffer_size: 64 * 1024,
            max_children: 256,
            max_worker_connections: 65_536,
        }
    }
}

/// A configuration edit diagnosis proposes, as the wire's `ConfigEdit` carries it (and as the
/// controller's `decide::finding::Edit` reads it from `gatemend-agent diagnose --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProposedEdit {
    pub kind: ConfigKind,
    /// The file that holds the directive (a snippet when it is in one).
    pub file: String,
    /// nginx: the blocks around the directive in its file's own text, outermost first
    /// (`server[_]`, `location[~ \.php$]`); php-fpm: the pool's name alone.
    pub block: Vec<String>,
    /// nginx: the blocks around the `include` that brings the file in.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub block_outer: Vec<String>,
    pub directive: String,
    /// Empty when the directive is added.
    pub old_value: String,
    pub new_value: String,
    /// SHA-256 (hex) of the file's text the edit was computed against.
    pub file_sha256: String,
    /// The unified diff an operator approves.
    pub diff: String,
    /// How the new value was found or sized.
    pub why: String,
}

impl ProposedEdit {
    /// The wire form.
    pub fn to_wire(&self) -> v1::ConfigEdit {
        v1::ConfigEdit {
            kind: self.kind as i32,
            file: self.file.clone(),
            block: self.block.clone(),
            directive: self.directive.clone(),
            old_value: self.old_value.clone(),
            new_value: self.new_value.clone(),
            file_sha256: self.file_sha256.clone(),
            diff: self.diff.clone(),
            why: self.why.clone(),
            block_outer: self.block_outer.clone(),
        }
    }

    /// `fastcgi_pass unix:/a.sock -> unix:/b.sock in FILE`, for details and logs.
    pub fn summary(&self) -> String {
        let old = if self.old_value.is_empty() {
            "(absent)"
        } else {
            &self.old_value
        };
        format!(
            "{} {old} -> {} in {}",
            self.directive, self.new_value, self.file
        )
    }
}

/// What a root cause's file answers when asked for an edit: the edit, or why there is none.
pub(super) type Proposal = Result<ProposedEdit, String>;

/// The diagnosis with its proposal: the edit attached, or the reason there is none added to
/// the detail.
pub(super) fn attach(mut d: Diagnosis, proposal: Proposal) -> Diagnosis {
    match proposal {
        Ok(edit) => d.edit = Some(edit),
        Err(why) => {
            d.detail = format!("{}; no edit proposed: {why}", d.detail);
        }
    }
    d
}

/// The edit that mends what `d` diagnosed for `line`, if the root cause's runbook has one.
/// `None` when no edit is the fix (a unit that is down is restarted, not edited).
pub(super) fn propose(line: &Classified<'_>, d: &Diagnosis, p: &Probes) -> Option<Proposal> {
    use gatemend_proto::{Cause, RootCause};
    match (d.root_cause, line.cause) {
        (RootCause::WrongTarget, _) => Some(super::wrong_target::propose(line, p)),
        (RootCause::UpstreamSlow, Cause::UpstreamReadTimeout) => {
            Some(super::upstream_slow::propose(line, p))
        }
        (RootCause::CapacityExhausted, _) => super::capacity_exhausted::propose(line, p),
        (RootCause::DnsFailure, Cause::DnsNoResolver) => Some(super::dns_failure::propose(p)),
        _ => None,
    }
}

/// An nginx edit computed against its file's text as `nginx -T` printed it.
pub(super) fn nginx(p: &Probes, edit: &NginxEdit, why: String) -> Proposal {
    let text = p.nginx_files.get(&edit.file).ok_or_else(|| {
        format!(
            "the text of {} is not in nginx -T's output",
            edit.file.display()
        )
    })?;
    let result = apply_edit(text, edit).map_err(|e| e.to_string())?;
    Ok(ProposedEdit {
        kind: ConfigKind::Nginx,
        file: edit.file.to_string_lossy().into_owned(),
        block: edit
            .block_path
            .inner
            .iter()
            .map(ToString::to_string)
            .collect(),
        block_outer: edit
            .block_path
            .outer
            .iter()
            .map(ToString::to_string)
            .collect(),
        directive: edit.directive.name().to_owned(),
        old_value: edit.old.clone().unwrap_or_default(),
        new_value: edit.new.clone(),
        file_sha256: result.sha256_before,
        diff: result.diff,
        why,
    })
}

/// A pool edit computed against the pool file's text as the probe read it.
pub(super) fn pool(p: &Probes, edit: &PoolEdit, why: String) -> Proposal {
    let text = p
        .pool_files
        .get(&edit.file)
        .ok_or_else(|| format!("the text of {} was not read", edit.file.display()))?;
    let result = apply_pool_edit(text, edit).map_err(|e| e.to_string())?;
    Ok(ProposedEdit {
        kind: ConfigKind::PhpFpmPool,
        file: edit.file.to_string_lossy().into_owned(),
        block: vec![edit.pool.clone()],
        block_outer: Vec::new(),
        directive: edit.key.name().to_owned(),
        old_value: edit.old.clone().unwrap_or_default(),
        new_value: edit.new.clone(),
        file_sha256: result.sha256_before,
        diff: result.diff,
        why,
    })
}

/// The parsed configuration, or why there is none.
pub(super) fn config(p: &Probes) -> Result<&NginxConfig, String> {
    p.nginx
        .as_ref()
        .ok_or_else(|| "nginx -T could not be read".to_owned())
}

/// The pass nginx used for `line`: among the passes to its upstream (each directive once: a
/// snippet included in several locations is one directive), the one in the line's server and
/// the location its request path chose, as far as those tell them apart.
pub(super) fn failing_pass<'n>(
    line: &Classified<'_>,
    n: &'n NginxConfig,
) -> Result<&'n Pass, String> {
    let upstream = line.upstream.as_deref().unwrap_or("");
    let mut passes: Vec<&Pass> = Vec::new();
    for pass in n.passes_to(upstream) {
        if !passes
            .iter()
            .any(|seen| seen.file == pass.file && seen.line == pass.line)
        {
            passes.push(pass);
        }
    }
    if let Some(server) = line.server.as_deref() {
        // nginx logs a server by its first name, and an unnamed one as empty.
        let in_server: Vec<&Pass> = passes
            .iter()
            .copied()
            .filter(|pass| match pass.server_names.first() {
                Some(_) => pass.server_names.iter().any(|name| name == server),
                None => server.is_empty(),
            })
            .collect();
        if !in_server.is_empty() {
            passes = in_server;
        }
    }
    if passes.len() > 1
        && let Some((_, path)) = line
            .request
            .as_deref()
            .and_then(|r| crate::detect::access::request_path(r.as_bytes()))
    {
        let chosen = by_location(passes.clone(), path);
        if !chosen.is_empty() {
            passes = chosen;
        }
    }
    match passes.as_slice() {
        [pass] => Ok(pass),
        [] => Err(format!(
            "no pass in nginx -T's configuration sends requests to {upstream}"
        )),
        many => Err(format!(
            "{} passes send requests to {upstream} ({}); which one failed is not known",
            many.len(),
            many.iter()
                .map(|pass| format!("{}:{}", pass.file.display(), pass.line))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// How a location's match of a request path is known without evaluating a regex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    /// `location = PATH` of this path.
    Exact,
    /// A prefix location of this length that the path starts with.
    Prefix(usize),
    /// A regex location (or none at all): it may match.
    Maybe,
    /// It does not match.
    No,
}

fn location_match(location: Option<&str>, path: &str) -> Match {
    let Some(location) = location else {
        return Match::Maybe;
    };
    let (modifier, uri) = match location.split_once(' ') {
        Some((m @ ("=" | "^~" | "~" | "~*"), uri)) => (m, uri),
        _ => ("", location),
    };
    match modifier {
        "=" if uri == path => Match::Exact,
        "=" => Match::No,
        "~" | "~*" => Match::Maybe,
        _ if uri.starts_with('@') => Match::No,
        _ if path.starts_with(uri) => Match::Prefix(uri.len()),
        _ => Match::No,
    }
}

/// The passes whose location nginx may have chosen for `path`, as far as that is known
/// without evaluating regexes: an exact location wins; else, when no regex location could
/// match, the longest prefix does.
fn by_location<'n>(passes: Vec<&'n Pass>, path: &str) -> Vec<&'n Pass> {
    let matched: Vec<(&Pass, Match)> = passes
        .into_iter()
        .map(|pass| (pass, location_match(pass.location.as_deref(), path)))
        .filter(|(_, m)| *m != Match::No)
        .collect();
    if matched.iter().any(|(_, m)| *m == Match::Exact) {
        return matched
            .into_iter()
            .filter(|(_, m)| *m == Match::Exact)
            .map(|(pass, _)| pass)
            .collect();
    }
    if matched.iter().any(|(_, m)| *m == Match::Maybe) {
        return matched.into_iter().map(|(pass, _)| pass).collect();
    }
    let longest = matched
        .iter()
        .filter_map(|(_, m)| match m {
            Match::Prefix(len) => Some(*len),
            _ => None,
        })
        .max();
    matched
        .into_iter()
        .filter(|(_, m)| matches!(m, Match::Prefix(len) if Some(*len) == longest))
        .map(|(pass, _)| pass)
        .collect()
}

/// The directive named `name` in effect at `at`: the innermost of those in the blocks around
/// it (nginx inherits a directive from the enclosing blocks unless a block sets its own).
pub(super) fn in_effect<'d>(
    directives: &'d [Directive],
    name: &str,
    at: &BlockPath,
) -> Option<&'d Directive> {
    let at: Vec<&BlockStep> = at.steps().collect();
    directives
        .iter()
        .filter(|d| d.name == name)
        .filter(|d| {
            let steps: Vec<&BlockStep> = d.block_path.steps().collect();
            steps.len() <= at.len() && at.iter().zip(&steps).all(|(a, b)| a == b)
        })
        .max_by_key(|d| d.block_path.steps().count())
}

/// Where a directive for the pass's location alone goes: the location's block in the file
/// that opens it, or, when the pass is in a snippet included right in the location, the top
/// of that snippet (every location that includes it then gets the directive).
pub(super) fn location_of(pass: &Pass) -> Result<(PathBuf, BlockPath), String> {
    let path = &pass.block_path;
    if let Some(at) = path.inner.iter().rposition(|s| s.directive == "location") {
        let inner = path.inner.get(..=at).unwrap_or_default().to_vec();
        return Ok((
            pass.file.clone(),
            BlockPath {
                outer: path.outer.clone(),
                inner,
            },
        ));
    }
    if path.inner.is_empty() && path.outer.last().is_some_and(|s| s.directive == "location") {
        return Ok((pass.file.clone(), path.clone()));
    }
    Err(format!(
        "the pass at {}:{} is not directly in a location ({path})",
        pass.file.display(),
        pass.line
    ))
}

/// The directive named `name` set in exactly this block (`steps` equal), if one is: the one
/// an edit of this block changes. Several (the same block written twice, or a snippet and the
/// block both setting it) is an error.
pub(super) fn set_in<'d>(
    directives: &'d [Directive],
    name: &str,
    at: &BlockPath,
) -> Result<Option<&'d Directive>, String> {
    let at: Vec<&BlockStep> = at.steps().collect();
    let mut found: Vec<&Directive> = Vec::new();
    for d in directives.iter().filter(|d| d.name == name) {
        let same = d.block_path.steps().eq(at.iter().copied());
        if same && !found.iter().any(|f| f.file == d.file && f.line == d.line) {
            found.push(d);
        }
    }
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        many => Err(format!(
            "{name} is set {} times in {} ({})",
            many.len(),
            at.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" > "),
            many.iter()
                .map(|d| format!("{}:{}", d.file.display(), d.line))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The file of `nginx -T` whose own text opens the top-level block `name` (`http`,
/// `events`), the first file (the main one) first.
pub(super) fn top_block_file<'p>(p: &'p Probes, name: &str) -> Result<(&'p Path, &'p str), String> {
    let order = p
        .nginx
        .iter()
        .flat_map(|n| n.files.iter())
        .filter_map(|file| p.nginx_files.get_key_value(file));
    let mut found = order.filter(|(_, text)| {
        crate::probe::nginx::file_tree(text)
            .iter()
            .any(|node| node.name == name && node.block.is_some())
    });
    found
        .next()
        .map(|(file, text)| (file.as_path(), text.as_str()))
        .ok_or_else(|| format!("no file of nginx -T's output opens the {name} block"))
}

/// A size as nginx writes it: `8k`, `1m`, or bytes.
pub(super) fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{}m", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{}k", bytes >> 10)
    } else {
        bytes.to_string()
    }
}

/// Bytes for humans: `11.7 MiB`.
pub(super) fn mib(bytes: u64) -> String {
    // Precision is not at stake: the figure is read by a person.
    #[allow(clippy::cast_precision_loss)]
    let m = bytes as f64 / f64::from(1u32 << 20);
    format!("{m:.1} MiB")
}
