//! The second pass: from the file as written ([`super::spec`]) to validated policies
//! ([`super::model`]), collecting every problem with the path of the value it concerns.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use gatemend_proto::{ActionKind, Cause, RootCause};
use globset::{GlobBuilder, GlobSetBuilder};

use super::duration;
use super::error::Problem;
use super::model::{
    DEFAULT_APPROVAL_EXPIRY, DEFAULT_RENOTIFY, DEFAULT_STORM_MIN_HOSTS, Escalate, FleetLimit,
    Globs, Guards, HostMatch, Match, Mode, Policy, Source, SourceFile, Storm, Threshold, Verify,
};
use super::spec::{
    DurationText, GuardsSpec, HostsSpec, MatchSpec, PolicyFile, PolicySpec, StormSpec,
};
use super::yaml::DocPath;

/// Problems found so far, each with the path of its value.
#[derive(Debug, Default)]
pub(super) struct Problems(pub Vec<(DocPath, Problem)>);

impl Problems {
    fn push(&mut self, path: DocPath, problem: Problem) {
        self.0.push((path, problem));
    }

    /// `Some(value)` when `result` is Ok, otherwise records the problem at `path`.
    fn check<T>(&mut self, path: DocPath, result: Result<T, Problem>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(problem) => {
                self.push(path, problem);
                None
            }
        }
    }
}

/// Validates every policy of one file. A policy with any problem is left out of the result.
pub(super) fn file(spec: PolicyFile, source: &Arc<SourceFile>) -> (Vec<Policy>, Problems) {
    let mut problems = Problems::default();
    let root = DocPath::default().key("policies");
    let policies = spec
        .policies
        .into_iter()
        .enumerate()
        .filter_map(|(index, spec)| {
            let before = problems.0.len();
            let policy = policy(spec, &root.index(index), &mut problems, source, index);
            policy.filter(|_| problems.0.len() == before)
        })
        .collect();
    (policies, problems)
}

fn policy(
    spec: PolicySpec,
    at: &DocPath,
    problems: &mut Problems,
    file: &Arc<SourceFile>,
    index: usize,
) -> Option<Policy> {
    if spec.name.trim().is_empty() {
        problems.push(at.key("name"), Problem::Empty);
    }
    let no_edit_match = spec.matcher.edit.is_none();
    let matcher = matcher(spec.matcher, &at.key("match"), problems);
    let mode = problems.check(
        at.key("mode"),
        Mode::parse(&spec.mode).ok_or_else(|| Problem::UnknownMode(spec.mode.clone())),
    );
    let actions = ids::<ActionKind>(&spec.actions, &at.key("actions"), problems);
    if let Some(actions) = &actions {
        for (i, action) in actions.iter().enumerate() {
            if actions[..i].contains(action) {
                problems.push(
                    at.key("actions").index(i),
                    Problem::DuplicateAction(action.to_string()),
                );
            }
        }
    }
    if let (Some(mode @ (Mode::Auto | Mode::Approve)), true) = (mode, spec.actions.is_empty()) {
        problems.push(at.key("actions"), Problem::NoActions(mode.id()));
    }
    // An edit runs only on findings that carry one, of the directives the policy names.
    if actions
        .as_ref()
        .is_some_and(|a| a.contains(&ActionKind::EditConfig))
        && no_edit_match
    {
        problems.push(at.key("match").key("edit"), Problem::EditWithoutMatch);
    }
    let verify = match spec.verify {
        None => Some(Verify::default()),
        Some(v) => span(&v.timeout, &at.key("verify").key("timeout"), problems)
            .map(|timeout| Verify { timeout }),
    };
    let guards = match spec.guards {
        None => Some(Guards::default()),
        Some(g) => guards(g, &at.key("guards"), problems),
    };
    let escalate = match spec.escalate {
        None => Some(None),
        Some(e) => {
            let webhook = match e.webhook {
                None => Some(None),
                Some(url) => {
                    let ok = ["http://", "https://"]
                        .iter()
                        .any(|scheme| url.len() > scheme.len() && url.starts_with(scheme));
                    problems.check(
                        at.key("escalate").key("webhook"),
                        if ok {
                            Ok(Some(url))
                        } else {
                            Err(Problem::Webhook(url))
                        },
                    )
                }
            };
            let renotify = match e.renotify {
                None => Some(DEFAULT_RENOTIFY),
                Some(text) => span(&text, &at.key("escalate").key("renotify"), problems),
            };
            match (webhook, renotify) {
                (Some(webhook), Some(renotify)) => Some(Some(Escalate { webhook, renotify })),
                _ => None,
            }
        }
    };
    let approval_expires = match spec.approval {
        None => Some(DEFAULT_APPROVAL_EXPIRY),
        Some(a) => span(&a.expires, &at.key("approval").key("expires"), problems),
    };
    Some(Policy {
        name: spec.name,
        description: spec.description,
        priority: spec.priority,
        source: Source {
            file: Arc::clone(file),
            index,
        },
        matcher: matcher?,
        mode: mode?,
        actions: actions?,
        verify: verify?,
        guards: guards?,
        escalate: escalate?,
        approval_expires: approval_expires?,
    })
}

fn matcher(spec: MatchSpec, at: &DocPath, problems: &mut Problems) -> Option<Match> {
    if spec.cause.is_empty() {
        problems.push(at.key("cause"), Problem::Empty);
    }
    let causes = ids::<Cause>(&spec.cause, &at.key("cause"), problems);
    let root_causes = match &spec.root_cause {
        None => Some(Vec::new()),
        Some(list) if list.is_empty() => {
            problems.push(at.key("root_cause"), Problem::Empty);
            None
        }
        Some(list) => ids::<RootCause>(list, &at.key("root_cause"), problems),
    };
    let units = match &spec.unit {
        None => Some(None),
        Some(list) => globs(list, &at.key("unit"), problems).map(Some),
    };
    let hosts = match spec.hosts {
        None => Some(None),
        Some(h) => hosts(h, &at.key("hosts"), problems).map(Some),
    };
    let threshold = match spec.threshold {
        None => Some(None),
        Some(t) => {
            let count = nonzero(t.count, &at.key("threshold").key("count"), problems);
            let within = span(&t.within, &at.key("threshold").key("within"), problems);
            match (count, within) {
                (Some(count), Some(within)) => Some(Some(Threshold {
                    count: u64::from(count),
                    within,
                })),
                _ => None,
            }
        }
    };
    let edits = match spec.edit {
        None => Some(None),
        Some(list) if list.is_empty() => {
            problems.push(at.key("edit"), Problem::Empty);
            None
        }
        Some(list) => {
            let mut ok = true;
            for (i, name) in list.iter().enumerate() {
                if !gatemend_proto::EDITABLE_DIRECTIVES.contains(&name.as_str()) {
                    problems.push(
                        at.key("edit").index(i),
                        Problem::UnknownDirective(name.clone()),
                    );
                    ok = false;
                }
            }
            ok.then_some(Some(list))
        }
    };
    Some(Match {
        edits: edits?,
        causes: causes?,
        root_causes: root_causes?,
        units: units?,
        hosts: hosts?,
        threshold: threshold?,
    })
}

fn hosts(spec: HostsSpec, at: &DocPath, problems: &mut Problems) -> Option<HostMatch> {
    let names = match &spec.names {
        None => Some(None),
        Some(list) => globs(list, &at.key("names"), problems).map(Some),
    };
    Some(HostMatch {
        names: names?,
        labels: spec.labels,
    })
}

fn guards(spec: GuardsSpec, at: &DocPath, problems: &mut Problems) -> Option<Guards> {
    let defaults = Guards::default();
    let cooldown = spec.cooldown.as_ref().map_or(Some(defaults.cooldown), |t| {
        span(t, &at.key("cooldown"), problems)
    });
    let max_attempts = spec.max_attempts.map_or(Some(defaults.max_attempts), |n| {
        nonzero(n, &at.key("max_attempts"), problems)
    });
    let attempts_window = spec
        .attempts_window
        .as_ref()
        .map_or(Some(defaults.attempts_window), |t| {
            span(t, &at.key("attempts_window"), problems)
        });
    let fleet = match spec.fleet {
        None => Some(defaults.fleet),
        Some(f) => {
            let at = at.key("fleet");
            let max_concurrent = f
                .max_concurrent
                .map_or(Some(defaults.fleet.max_concurrent), |n| {
                    nonzero(n, &at.key("max_concurrent"), problems)
                });
            let max_percent = f.max_percent.map_or(Some(defaults.fleet.max_percent), |n| {
                percent(n, &at.key("max_percent"), problems)
            });
            // Not `?`: that would return from `guards` before the storm is checked.
            match (max_concurrent, max_percent) {
                (Some(max_concurrent), Some(max_percent)) => Some(FleetLimit {
                    max_concurrent,
                    max_percent,
                }),
                _ => None,
            }
        }
    };
    let storm = match spec.storm {
        None => Some(None),
        Some(s) => storm(s, &at.key("storm"), problems).map(Some),
    };
    Some(Guards {
        cooldown: cooldown?,
        max_attempts: max_attempts?,
        attempts_window: attempts_window?,
        fleet: fleet?,
        storm: storm?,
    })
}

fn storm(spec: StormSpec, at: &DocPath, problems: &mut Problems) -> Option<Storm> {
    let hosts_percent = percent(spec.hosts_percent, &at.key("hosts_percent"), problems);
    let min_hosts = spec.min_hosts.map_or(Some(DEFAULT_STORM_MIN_HOSTS), |n| {
        nonzero(n, &at.key("min_hosts"), problems)
    });
    let within = span(&spec.within, &at.key("within"), problems);
    Some(Storm {
        hosts_percent: hosts_percent?,
        min_hosts: min_hosts?,
        within: within?,
    })
}

/// Parses every id of a list, recording each unknown one at its index.
fn ids<T: FromStr<Err = gatemend_proto::UnknownId>>(
    list: &[String],
    at: &DocPath,
    problems: &mut Problems,
) -> Option<Vec<T>> {
    let parsed: Vec<Option<T>> = list
        .iter()
        .enumerate()
        .map(|(i, text)| problems.check(at.index(i), text.parse().map_err(Problem::UnknownId)))
        .collect();
    parsed.into_iter().collect()
}

fn globs(list: &[String], at: &DocPath, problems: &mut Problems) -> Option<Globs> {
    if list.is_empty() {
        problems.push(at.clone(), Problem::Empty);
        return None;
    }
    let mut set = GlobSetBuilder::new();
    let mut ok = true;
    for (i, pattern) in list.iter().enumerate() {
        // `literal_separator` off: unit and host names have no path structure, `*` spans all.
        match GlobBuilder::new(pattern).literal_separator(false).build() {
            Ok(glob) => {
                set.add(glob);
            }
            Err(err) => {
                ok = false;
                problems.push(
                    at.index(i),
                    Problem::Glob {
                        glob: pattern.clone(),
                        reason: err.kind().to_string(),
                    },
                );
            }
        }
    }
    if !ok {
        return None;
    }
    let set = problems.check(
        at.clone(),
        set.build().map_err(|err| Problem::Glob {
            glob: list.join(", "),
            reason: err.kind().to_string(),
        }),
    )?;
    Some(Globs {
        patterns: list.to_vec(),
        set,
    })
}

/// A duration that must be longer than zero.
fn span(text: &DurationText, at: &DocPath, problems: &mut Problems) -> Option<Duration> {
    let parsed = duration::parse(&text.0).map_err(|reason| Problem::Duration {
        text: text.0.clone(),
        reason,
    });
    let d = problems.check(at.clone(), parsed)?;
    if d.is_zero() {
        problems.push(at.clone(), Problem::ZeroDuration(text.0.clone()));
        return None;
    }
    Some(d)
}

fn nonzero(n: u64, at: &DocPath, problems: &mut Problems) -> Option<u32> {
    if n == 0 {
        problems.push(at.clone(), Problem::Zero);
        return None;
    }
    problems.check(
        at.clone(),
        u32::try_from(n).map_err(|_| Problem::OutOfRange {
            min: 1,
            max: u64::from(u32::MAX),
            got: n,
        }),
    )
}

fn percent(n: u64, at: &DocPath, problems: &mut Problems) -> Option<u8> {
    problems.check(
        at.clone(),
        u8::try_from(n)
            .ok()
            .filter(|p| (1..=100).contains(p))
            .ok_or(Problem::OutOfRange {
                min: 1,
                max: 100,
                got: n,
            }),
    )
}
