//! What the dispatch stage counts, for `/metrics`: decisions by kind, actions by result,
//! escalations, and how long audit writes take.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gatemend_proto::ActionStatus;

use crate::decide::Outcome;

/// The decision kinds, in the order of [`DispatchStats::decisions`].
pub const DECISION_KINDS: [&str; 7] = [
    "execute",
    "await_approval",
    "dry_run",
    "held",
    "escalate",
    "no_policy",
    "resolved",
];

/// The action results counted, in the order of [`DispatchStats::actions`].
pub const ACTION_RESULTS: [&str; 6] = [
    "succeeded",
    "failed",
    "refused",
    "planned",
    "timed_out",
    "rolled_back",
];

/// Upper bounds (seconds) of the audit write latency histogram buckets; `+Inf` is implied.
pub const AUDIT_BUCKETS: [f64; 8] = [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5];

/// Upper bounds (seconds) of the decision latency histogram buckets; `+Inf` is implied.
pub const DECISION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram in Prometheus' shape: cumulative `le` buckets, a count and a sum.
#[derive(Debug)]
pub struct Histogram {
    /// The buckets' upper bounds, seconds.
    pub bounds: &'static [f64],
    /// Cumulative: each counts the observations at or below its bound.
    pub buckets: Vec<AtomicU64>,
    pub count: AtomicU64,
    /// Microseconds, summed.
    pub sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub(super) fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        for (bucket, le) in self.buckets.iter().zip(self.bounds) {
            if secs <= *le {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// Counters shared with the web stage. All relaxed atomics: figures, not synchronisation.
#[derive(Debug)]
pub struct DispatchStats {
    /// Per [`DECISION_KINDS`].
    pub decisions: [AtomicU64; 7],
    /// Per [`ACTION_RESULTS`].
    pub actions: [AtomicU64; 6],
    pub escalations: AtomicU64,
    /// Action results refused because the chain they name is another host's.
    pub foreign_results: AtomicU64,
    /// Open incidents per stage, in [`crate::decide::Stage::ALL`] order, as of the last batch.
    pub incidents: [AtomicU64; 7],
    /// Open incidents a guard holds (cooldown, max_attempts, fleet, storm), as of the last
    /// batch.
    pub incidents_held: AtomicU64,
    /// Pages sent again about an incident still failing.
    pub renotifications: AtomicU64,
    /// Resolution notices sent about paged incidents.
    pub resolved_notices: AtomicU64,
    /// Pages not sent because the incident was paged already.
    pub pages_suppressed: AtomicU64,
    /// How long the dispatcher's audit appends took.
    pub audit: Histogram,
    pub audit_failures: AtomicU64,
    /// From a finding's arrival to its decision committed (the fleet state written; an action
    /// it decided may be sent).
    pub decision_latency: Histogram,
}

impl Default for DispatchStats {
    fn default() -> DispatchStats {
        DispatchStats {
            decisions: Default::default(),
            actions: Default::default(),
            escalations: AtomicU64::new(0),
            foreign_results: AtomicU64::new(0),
            incidents: Default::default(),
            incidents_held: AtomicU64::new(0),
            renotifications: AtomicU64::new(0),
            resolved_notices: AtomicU64::new(0),
            pages_suppressed: AtomicU64::new(0),
            audit: Histogram::new(&AUDIT_BUCKETS),
            audit_failures: AtomicU64::new(0),
            decision_latency: Histogram::new(&DECISION_BUCKETS),
        }
    }
}

impl DispatchStats {
    pub(super) fn decision(&self, outcome: &Outcome) {
        if let Some(i) = DECISION_KINDS.iter().position(|k| *k == outcome.id()) {
            self.decisions[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn action(&self, status: ActionStatus) {
        let id = status.to_string();
        if let Some(i) = ACTION_RESULTS.iter().position(|k| *k == id) {
            self.actions[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sets the incident gauges from the open incidents.
    pub(super) fn incidents<'a>(&self, open: impl Iterator<Item = &'a crate::decide::Incident>) {
        use crate::decide::Stage;
        use crate::decide::incident::GuardId;
        let mut by_stage = [0u64; 7];
        let mut held = 0;
        for i in open {
            if let Some(n) = Stage::ALL
                .iter()
                .position(|s| *s == i.stage)
                .and_then(|at| by_stage.get_mut(at))
            {
                *n += 1;
            }
            if i.hold
                .is_some_and(|h| !matches!(h.guard, GuardId::Threshold | GuardId::Busy))
            {
                held += 1;
            }
        }
        for (gauge, n) in self.incidents.iter().zip(by_stage) {
            gauge.store(n, Ordering::Relaxed);
        }
        self.incidents_held.store(held, Ordering::Relaxed);
    }

    pub(super) fn audit_write(&self, took: Duration, ok: bool) {
        if !ok {
            self.audit_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.audit.observe(took);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_latency_lands_in_every_bucket_at_or_above_it() {
        let s = DispatchStats::default();
        s.audit_write(Duration::from_millis(3), true);
        s.audit_write(Duration::from_secs(2), false);
        let buckets: Vec<u64> = s
            .audit
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!(buckets, [0, 0, 1, 1, 1, 1, 1, 1]);
        assert_eq!(s.audit.count.load(Ordering::Relaxed), 2);
        assert_eq!(s.audit_failures.load(Ordering::Relaxed), 1);
        s.decision(&Outcome::Execute);
        s.action(ActionStatus::TimedOut);
        assert_eq!(s.decisions[0].load(Ordering::Relaxed), 1);
        assert_eq!(s.actions[4].load(Ordering::Relaxed), 1);
    }
}
