//! Whether the dispatcher is deciding, for `/healthz` and the logs. With a database, a
//! dispatcher that cannot reach it stops deciding (it would act on stale state: a slot of
//! `max_concurrent` another controller took, a cooldown it started) until it returns.

use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use crate::decide::{Time, UnixMs};

/// What `/healthz` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// This controller's id.
    pub controller: String,
    /// It decides and dispatches.
    pub deciding: bool,
    /// Why not, when it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// Since when it has not been deciding (ms since the Unix epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<UnixMs>,
}

/// Shared between the dispatcher, which sets it, and the web stage, which reads it. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Health {
    report: Arc<Mutex<Report>>,
}

impl Health {
    /// Deciding, until told otherwise.
    pub fn new(controller: &str) -> Health {
        Health {
            report: Arc::new(Mutex::new(Report {
                controller: controller.to_owned(),
                deciding: true,
                why: None,
                since: None,
            })),
        }
    }

    /// The current report.
    pub fn report(&self) -> Report {
        self.report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The database is back: deciding again (logged once).
    pub(super) fn deciding(&self, now: UnixMs) {
        let mut report = self.report.lock().unwrap_or_else(PoisonError::into_inner);
        if !report.deciding {
            let down_ms = report.since.map_or(0, |since| now.saturating_sub(since));
            tracing::info!(down_ms, "The database is back; deciding again.");
            report.deciding = true;
            report.why = None;
            report.since = None;
        }
    }

    /// The database is lost: not deciding (logged once, then at every change of reason).
    pub(super) fn lost(&self, why: String, now: UnixMs) {
        let mut report = self.report.lock().unwrap_or_else(PoisonError::into_inner);
        let since = report.since.unwrap_or(now);
        let text = format!(
            "not deciding: the database is lost since {}: {why}",
            Time(since)
        );
        if report.why.as_deref() != Some(text.as_str()) {
            tracing::error!(error = %why, "Not deciding: the database is lost. Findings wait (agents keep them in their outboxes); nothing is dispatched until it returns.");
        }
        report.deciding = false;
        report.since = Some(since);
        report.why = Some(text);
    }
}
