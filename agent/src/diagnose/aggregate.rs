//! Aggregation: the lines of one (cause, upstream) are one finding. A burst of 10,000
//! identical lines is one finding with count 10,000, re-sent (a new revision) when it changes,
//! and while the access log shows its upstream still failing; a finding is resolved when its
//! lines have stopped for the quiet period and there is evidence that its upstream works again
//! (see `resolve.rs`). Each finding keeps the requests its lines name ([`Requests`]): where
//! the access log and the active probe look for that evidence.
//!
//! Pure: times are passed in; health, the access log's view and the probe's answer are
//! gathered by the caller into a [`Recovery`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use gatemend_proto::{Cause, RootCause};

use super::resolve::{self, ACCESS_LAST_ERROR, Pending, RESOLVED_BY, Recovery, Verdict};
use super::{Diagnosis, Evidence, Finding};
use crate::detect::Classified;
use crate::detect::access::{Replay, Traffic, request_path};

/// Lines kept as evidence per finding: the first half and the latest half.
pub const EVIDENCE_LINES: usize = 10;

/// A line kept as evidence is cut to this many bytes.
const EVIDENCE_LINE_BYTES: usize = 2_048;

/// Paths kept per finding.
pub const MAX_PATHS: usize = 8;

/// The requests a finding's lines name: where to look for its recovery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requests {
    /// The paths of the requests that failed, query strings cut; at most [`MAX_PATHS`], the
    /// first ones.
    pub paths: BTreeSet<String>,
    /// The latest GET that failed, with its Host, to send again.
    pub replay: Option<Replay>,
}

impl Requests {
    fn add(&mut self, line: &Classified<'_>) {
        let Some((method, path)) = line
            .request
            .as_deref()
            .and_then(|r| request_path(r.as_bytes()))
        else {
            return;
        };
        if self.paths.len() < MAX_PATHS && !self.paths.contains(path) {
            self.paths.insert(path.to_owned());
        }
        let host = line.host.as_deref();
        let same = self
            .replay
            .as_ref()
            .is_some_and(|r| r.path == path && r.host.as_deref() == host);
        if method == "GET" && !same {
            self.replay = line
                .request
                .as_deref()
                .and_then(|r| Replay::of_get(r.as_bytes(), host.map(str::as_bytes), None));
        }
    }
}

#[derive(Debug)]
struct Open {
    finding: Finding,
    latest: VecDeque<String>,
    changed: bool,
    requests: Requests,
    /// The access log's latest 502/504 for it that a revision has told.
    told_error: Option<u64>,
}

/// The open findings of one host.
#[derive(Debug)]
pub struct Aggregator {
    host: String,
    quiet_ms: i64,
    open: BTreeMap<(Cause, String), Open>,
}

impl Aggregator {
    /// `quiet`: how long a finding's lines must have stopped before it can be resolved.
    pub fn new(host: impl Into<String>, quiet: Duration) -> Aggregator {
        Aggregator {
            host: host.into(),
            quiet_ms: i64::try_from(quiet.as_millis()).unwrap_or(i64::MAX),
            open: BTreeMap::new(),
        }
    }

    /// Whether a finding for this line's (cause, upstream) is open.
    pub fn is_open(&self, line: &Classified<'_>) -> bool {
        self.open.contains_key(&(line.cause, key(line)))
    }

    /// One line (classified and diagnosed) seen at `at` (ms since the epoch).
    pub fn observe(&mut self, line: &Classified<'_>, raw: &[u8], d: &Diagnosis, at: i64) {
        let key = key(line);
        let upstream = line.upstream.as_deref().unwrap_or("").to_owned();
        let host = &self.host;
        let open = self
            .open
            .entry((line.cause, key.clone()))
            .or_insert_with(|| Open {
                finding: Finding {
                    id: format!("{host}/{}/{key}#{at}", line.cause),
                    revision: 0,
                    host: host.clone(),
                    cause: line.cause,
                    root_cause: d.root_cause,
                    root_cause_detail: String::new(),
                    upstream,
                    unit: String::new(),
                    count: 0,
                    first_seen: at,
                    last_seen: at,
                    resolved: false,
                    evidence: Evidence::default(),
                    proposed_edit: None,
                },
                latest: VecDeque::new(),
                changed: true,
                requests: Requests::default(),
                told_error: None,
            });
        open.requests.add(line);
        let f = &mut open.finding;
        f.count += 1;
        f.first_seen = f.first_seen.min(at);
        f.last_seen = f.last_seen.max(at);
        // A line logged just after the fault was mended meets probes that are healthy again
        // and can only say `unknown`: it adds to the count, it does not erase the diagnosis.
        if f.count == 1 || d.root_cause != RootCause::Unknown {
            apply(f, d);
        }
        let text = evidence_line(raw);
        if f.evidence.lines.len() < EVIDENCE_LINES / 2 {
            f.evidence.lines.push(text);
        } else {
            if open.latest.len() == EVIDENCE_LINES / 2 {
                open.latest.pop_front();
            }
            open.latest.push_back(text);
        }
        open.changed = true;
    }

    /// Every finding changed since the last call, each as a new revision.
    pub fn changed(&mut self) -> Vec<Finding> {
        self.open
            .values_mut()
            .filter(|o| o.changed)
            .map(|o| {
                o.changed = false;
                o.finding.revision += 1;
                snapshot(o)
            })
            .collect()
    }

    /// Re-diagnoses the open findings with fresh probes (`rediagnose` gives the diagnosis of a
    /// finding now), and resolves those `resolve::verdict` finds resolved at `now` with what
    /// `recovery` gathers for each (the evidence goes under `resolved_by`). Returns the
    /// findings that changed or resolved, as new revisions; resolved ones are closed.
    pub fn review(
        &mut self,
        now: i64,
        utc_offset_secs: i64,
        rediagnose: impl Fn(&Finding) -> Option<Diagnosis>,
        recovery: impl Fn(&Finding, &Requests) -> Recovery,
    ) -> Vec<Finding> {
        let mut out = Vec::new();
        let quiet_ms = self.quiet_ms;
        self.open.retain(|_, o| {
            let r = recovery(&o.finding, &o.requests);
            if let Verdict::Resolved(by) =
                resolve::verdict(&o.finding, now, quiet_ms, utc_offset_secs, &r)
            {
                o.finding.resolved = true;
                o.finding.revision += 1;
                o.finding.evidence.probes.insert(RESOLVED_BY.to_owned(), by);
                out.push(snapshot(o));
                return false;
            }
            // A root cause the probes can no longer explain (the fault is gone, the lines
            // not yet quiet) does not replace the one they found: it is what happened.
            if let Some(d) = rediagnose(&o.finding).filter(|d| d.root_cause != RootCause::Unknown) {
                // A proposed edit that changed (the file was edited since) is news too.
                let now = |f: &Finding| (f.root_cause, f.unit.clone(), f.proposed_edit.clone());
                let before = now(&o.finding);
                apply(&mut o.finding, &d);
                if before != now(&o.finding) {
                    o.finding.revision += 1;
                    o.changed = false;
                    out.push(snapshot(o));
                }
            }
            true
        });
        out
    }

    /// Marks for re-sending (see [`Aggregator::changed`]) the open findings whose upstream
    /// the access log shows failing since a revision last said so, even when nginx logs no
    /// error line for them (or logs it under another cause): the controller then knows they
    /// still fail. `access` gives a finding's view of the access log, as in [`Recovery`].
    pub fn still_failing(
        &mut self,
        utc_offset_secs: i64,
        access: impl Fn(&Finding, &Requests) -> Vec<(String, Traffic)>,
    ) {
        for o in self.open.values_mut() {
            let last = access(&o.finding, &o.requests)
                .iter()
                .filter_map(|(_, t)| t.last_error)
                .max();
            if let Some(last) = last
                && o.told_error.is_none_or(|told| told < last)
            {
                o.told_error = Some(last);
                o.finding.evidence.probes.insert(
                    ACCESS_LAST_ERROR.to_owned(),
                    resolve::clock(last, utc_offset_secs),
                );
                o.changed = true;
            }
        }
    }

    /// The open findings that wait only for evidence of their recovery at `now` (quiet, not
    /// shown broken, failing nowhere in the access log, nothing showing them mended), with
    /// their requests: the ones an active probe may resolve.
    pub fn awaiting_evidence(
        &self,
        now: i64,
        recovery: impl Fn(&Finding, &Requests) -> Recovery,
    ) -> Vec<(Finding, Requests)> {
        self.open
            .values()
            .filter(|o| {
                let r = recovery(&o.finding, &o.requests);
                resolve::verdict(&o.finding, now, self.quiet_ms, 0, &r)
                    == Verdict::Open(Pending::NoEvidence)
            })
            .map(|o| (o.finding.clone(), o.requests.clone()))
            .collect()
    }

    /// Every path the open findings' lines name (for the access log to follow).
    pub fn paths(&self) -> BTreeSet<&str> {
        self.open
            .values()
            .flat_map(|o| o.requests.paths.iter().map(String::as_str))
            .collect()
    }

    /// The open findings as they stand (for `diagnose`).
    pub fn open(&self) -> Vec<Finding> {
        self.open.values().map(snapshot).collect()
    }
}

/// What a finding is about besides its cause: the upstream, else the DNS name, the pool, the
/// configuration file.
fn key(line: &Classified<'_>) -> String {
    line.upstream
        .as_deref()
        .or(line.name.as_deref())
        .or(line.pool.as_deref())
        .or(line.config.as_deref())
        .unwrap_or("")
        .to_owned()
}

fn apply(f: &mut Finding, d: &Diagnosis) {
    f.root_cause = d.root_cause;
    f.root_cause_detail.clone_from(&d.detail);
    f.unit = d.unit.clone().unwrap_or_default();
    f.evidence.probes.clone_from(&d.probes);
    f.proposed_edit.clone_from(&d.edit);
}

fn snapshot(o: &Open) -> Finding {
    let mut f = o.finding.clone();
    f.evidence.lines.extend(o.latest.iter().cloned());
    f
}

fn evidence_line(raw: &[u8]) -> String {
    let cut = &raw[..raw.len().min(EVIDENCE_LINE_BYTES)];
    String::from_utf8_lossy(cut).into_owned()
}
