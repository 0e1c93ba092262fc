//! Policies: what may be done, where, and how carefully, as operators write it in YAML.
//!
//! [`load`] is the one function that reads policy YAML. It reads every `*.yaml` (and `*.yml`)
//! file of a directory, deserializes each straight into typed structs ([`spec`], with
//! `deny_unknown_fields`), then validates the cross-field rules in a second pass that collects
//! every problem of every file. Each problem is a [`PolicyError`] printed as
//! `file:line:col: path: message`.
//!
//! The format (see `policies/*.yaml` for the shipped set):
//!
//! ```yaml
//! policies:
//!   - name: restart-php-fpm-when-down      # unique across the directory
//!     description: php-fpm is down; a restart brings the socket back.
//!     priority: 100                        # higher first; the first match decides (default 0)
//!     match:
//!       cause: [upstream_refused, upstream_socket_missing]   # required, cause ids
//!       root_cause: [service_down]         # optional, root cause ids
//!       unit: ["php*-fpm.service"]         # optional globs on the diagnosed unit
//!       hosts: { names: ["web-*"], labels: { env: prod } }   # optional
//!       threshold: { count: 3, within: 30s }                 # optional
//!     mode: auto                           # auto | approve | dry_run
//!     actions: [restart_unit]              # action ids; required in auto and approve mode
//!     verify: { timeout: 20s }             # default 30s
//!     guards:                              # every key optional; defaults in brackets
//!       cooldown: 5m                       # per host + policy [5m]
//!       max_attempts: 3                    # per host + policy, then escalate [3]
//!       attempts_window: 1h                # healthy this long resets the attempts [1h]
//!       fleet: { max_concurrent: 2, max_percent: 10 }   # over ALL policies [1, 100]
//!       storm: { hosts_percent: 30, min_hosts: 3, within: 2m }   # [none; min_hosts 3]
//!     escalate:                            # optional
//!       webhook: "http://127.0.0.1:9099/hook"   # [the controller's --escalate-webhook]
//!       renotify: 30m                      # a paged incident still failing is paged again [30m]
//!     approval: { expires: 30m }           # approve mode: how long an approval stays open [30m]
//! ```
//!
//! Durations are `<number><unit>` groups, units `d h m s ms` from the largest down: `30s`,
//! `5m`, `1h30m`, `250ms`.

mod duration;
mod error;
mod model;
pub mod reload;
mod spec;
mod validate;
mod yaml;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

pub use duration::{format as format_duration, parse as parse_duration};
pub use error::{PolicyError, Pos, Problem};
pub use model::{
    DEFAULT_APPROVAL_EXPIRY, DEFAULT_RENOTIFY, DEFAULT_STORM_MIN_HOSTS, Digest, Escalate,
    FleetLimit, Globs, Guards, HostMatch, Match, Mode, Policy, PolicySet, Source, SourceFile,
    Storm, Threshold, Verify,
};

use yaml::DocPath;

/// Reads and validates every policy file in `dir`.
///
/// All or nothing: any problem in any file rejects the whole set, so a half-valid directory
/// never replaces a running set. The errors come sorted by file, then position.
pub fn load(dir: impl AsRef<Path>) -> Result<PolicySet, Vec<PolicyError>> {
    let dir = dir.as_ref();
    let at_dir = |problem| {
        vec![PolicyError {
            file: dir.to_path_buf(),
            pos: None,
            path: String::new(),
            problem,
        }]
    };
    let entries = std::fs::read_dir(dir).map_err(|err| at_dir(Problem::Read(err)))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.is_file()
                && path
                    .extension()
                    .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .map(|path| match path.file_name() {
            // Rebuild from `dir` so errors name the file the way the operator named the dir.
            Some(name) => dir.join(name),
            None => path,
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(at_dir(Problem::NoPolicyFiles));
    }
    let files = paths
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path);
            (path, bytes)
        })
        .collect();
    from_files(files)
}

/// The part of [`load`] after the directory listing: validates files given as bytes.
fn from_files(
    files: Vec<(PathBuf, std::io::Result<Vec<u8>>)>,
) -> Result<PolicySet, Vec<PolicyError>> {
    let mut errors = Vec::new();
    let mut policies = Vec::new();
    let mut sources = Vec::new();
    // Every name as written (valid policy or not), for the duplicate check across files.
    let mut names: Vec<(String, usize, DocPath)> = Vec::new();
    let mut texts: Vec<(PathBuf, String)> = Vec::new();
    for (path, bytes) in files {
        let error = |pos, problem| PolicyError {
            file: path.clone(),
            pos,
            path: String::new(),
            problem,
        };
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(err) => {
                errors.push(error(None, Problem::Read(err)));
                continue;
            }
        };
        let digest = Digest(Sha256::digest(&bytes).into());
        let Ok(text) = String::from_utf8(bytes) else {
            errors.push(error(None, Problem::NotUtf8));
            continue;
        };
        let spec: spec::PolicyFile = match yaml::parse(&text) {
            Ok(spec) => spec,
            Err(err) => {
                errors.push(error(err.pos, Problem::Yaml(err.message)));
                continue;
            }
        };
        let file_index = texts.len();
        for (i, p) in spec.policies.iter().enumerate() {
            let at = DocPath::default().key("policies").index(i).key("name");
            names.push((p.name.clone(), file_index, at));
        }
        let source = Arc::new(SourceFile {
            path: path.clone(),
            digest,
        });
        let (valid, problems) = validate::file(spec, &source);
        let mut located: Vec<PolicyError> = problems
            .0
            .into_iter()
            .map(|(doc_path, problem)| PolicyError {
                file: path.clone(),
                pos: yaml::locate(&text, &doc_path),
                path: doc_path.to_string(),
                problem,
            })
            .collect();
        located.sort_by_key(|e| e.pos);
        errors.extend(located);
        policies.extend(valid);
        sources.push(source);
        texts.push((path, text));
    }
    errors.extend(duplicate_names(&names, &texts));
    if errors.is_empty() && policies.is_empty() {
        errors.push(PolicyError {
            file: texts.first().map(|(p, _)| p.clone()).unwrap_or_default(),
            pos: None,
            path: String::new(),
            problem: Problem::NoPolicies,
        });
    }
    if errors.is_empty() {
        Ok(PolicySet::new(policies, sources))
    } else {
        Err(errors)
    }
}

/// One error at each repeated definition of a name, pointing back at the first.
fn duplicate_names(
    names: &[(String, usize, DocPath)],
    texts: &[(PathBuf, String)],
) -> Vec<PolicyError> {
    let mut first: HashMap<&str, (usize, &DocPath)> = HashMap::new();
    let mut errors = Vec::new();
    for (name, file, at) in names {
        let Some((first_file, first_at)) = first.get(name.as_str()).copied() else {
            first.insert(name, (*file, at));
            continue;
        };
        let (Some((path, text)), Some((first_path, first_text))) =
            (texts.get(*file), texts.get(first_file))
        else {
            continue;
        };
        let first_pos = yaml::locate(first_text, first_at)
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        errors.push(PolicyError {
            file: path.clone(),
            pos: yaml::locate(text, at),
            path: at.to_string(),
            problem: Problem::DuplicateName {
                name: name.clone(),
                first: format!("{}{first_pos}", first_path.display()),
            },
        });
    }
    errors
}

#[cfg(test)]
mod tests;
