//! Aggregation: the lines of one (cause, upstream) are one finding. A burst of 10,000
//! identical lines is one finding with count 10,000, re-sent (a new revision) when it changes;
//! a finding is resolved when its lines have stopped for the quiet period and the probes show
//! its upstream healthy again.
//!
//! Pure: times are passed in, health is a predicate the caller builds from the probes.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use gatemend_proto::{Cause, RootCause};

use super::{Diagnosis, Evidence, Finding};
use crate::detect::Classified;

/// Lines kept as evidence per finding: the first half and the latest half.
pub const EVIDENCE_LINES: usize = 10;

/// A line kept as evidence is cut to this many bytes.
const EVIDENCE_LINE_BYTES: usize = 2_048;

#[derive(Debug)]
struct Open {
    finding: Finding,
    latest: VecDeque<String>,
    changed: bool,
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
                },
                latest: VecDeque::new(),
                changed: true,
            });
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
    /// finding now), and resolves those quiet since `now - quiet` that `healthy` accepts.
    /// Returns the findings that changed or resolved, as new revisions; resolved ones are
    /// closed.
    pub fn review(
        &mut self,
        now: i64,
        rediagnose: impl Fn(&Finding) -> Option<Diagnosis>,
        healthy: impl Fn(&Finding) -> bool,
    ) -> Vec<Finding> {
        let mut out = Vec::new();
        let quiet_since = now.saturating_sub(self.quiet_ms);
        self.open.retain(|_, o| {
            if o.finding.last_seen <= quiet_since && healthy(&o.finding) {
                o.finding.resolved = true;
                o.finding.revision += 1;
                out.push(snapshot(o));
                return false;
            }
            // A root cause the probes can no longer explain (the fault is gone, the lines
            // not yet quiet) does not replace the one they found: it is what happened.
            if let Some(d) = rediagnose(&o.finding).filter(|d| d.root_cause != RootCause::Unknown) {
                let before = (o.finding.root_cause, o.finding.unit.clone());
                apply(&mut o.finding, &d);
                if before != (o.finding.root_cause, o.finding.unit.clone()) {
                    o.finding.revision += 1;
                    o.changed = false;
                    out.push(snapshot(o));
                }
            }
            true
        });
        out
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
