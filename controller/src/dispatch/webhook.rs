//! Escalations: a human hears of what the controller will not or cannot mend.
//!
//! Each escalation is logged (WARN) when it is decided and, when the policy (or the controller's
//! `--escalate-webhook`) names a webhook, POSTed there as JSON by one worker task with a few
//! retries. The queue is bounded; what does not fit, and what cannot be delivered, is counted
//! and logged with the whole escalation, so nothing vanishes without a line in the log.

use gatemend_proto::error_chain;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

/// Escalations waiting for delivery.
const QUEUE: usize = 1_024;
/// Tries per escalation.
const TRIES: u32 = 3;
/// One POST, at most.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What a webhook receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Escalation {
    /// Stable for one decision: a receiver can drop a repeat.
    pub id: String,
    /// `page` (the first about an incident), `renotify` (it is still failing) or `resolved`
    /// (a paged incident resolved).
    pub event: String,
    /// The incident it is about: its timeline is `/incidents/{incident}` in the review UI.
    pub incident: String,
    pub host: String,
    pub finding_id: String,
    pub cause: String,
    pub root_cause: String,
    pub root_cause_detail: String,
    pub upstream: String,
    pub unit: String,
    pub count: u64,
    /// The policy that decided, when one matched.
    pub policy: String,
    /// Why a human is needed.
    pub why: String,
    /// The configuration edit diagnosis proposed, as a unified diff (what an approval would
    /// apply), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edit_diff: Option<String>,
    /// RFC 3339.
    pub decided_at: String,
}

/// Counters for `/metrics` and the tests.
#[derive(Debug, Default)]
pub struct NotifyStats {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

/// Hands escalations to the delivery task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Notifier {
    queue: mpsc::Sender<(String, Escalation)>,
    default_webhook: Option<String>,
    stats: Arc<NotifyStats>,
}

impl Notifier {
    /// Starts the delivery task. `default_webhook` serves policies that name none.
    pub fn spawn(default_webhook: Option<String>) -> Notifier {
        let (queue, pending) = mpsc::channel(QUEUE);
        let stats = Arc::new(NotifyStats::default());
        tokio::spawn(deliver(pending, Arc::clone(&stats)));
        Notifier {
            queue,
            default_webhook,
            stats,
        }
    }

    pub fn stats(&self) -> Arc<NotifyStats> {
        Arc::clone(&self.stats)
    }

    /// Logs the escalation and queues it for `webhook` (or the default one).
    pub fn escalate(&self, webhook: Option<&str>, e: Escalation) {
        match e.event.as_str() {
            "resolved" => {
                tracing::info!(host = %e.host, incident = %e.incident, why = ?e.why, "Told a human the incident resolved.");
            }
            "renotify" => {
                tracing::warn!(host = %e.host, incident = %e.incident, cause = %e.cause, why = ?e.why, "Paged a human again: still failing.");
            }
            _ => {
                tracing::warn!(host = %e.host, incident = %e.incident, finding = %e.finding_id, cause = %e.cause, root_cause = %e.root_cause, unit = %e.unit, policy = %e.policy, why = ?e.why, "Escalated to a human.");
            }
        }
        let Some(url) = webhook.or(self.default_webhook.as_deref()) else {
            return;
        };
        if let Err(e) = self.queue.try_send((url.to_owned(), e)) {
            let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let (url, e) = match e {
                mpsc::error::TrySendError::Full(x) | mpsc::error::TrySendError::Closed(x) => x,
            };
            tracing::error!(url = %url, escalation = %e.id, dropped, "Escalation queue full; not delivered to the webhook (it is in this log).");
        }
    }
}

async fn deliver(mut pending: mpsc::Receiver<(String, Escalation)>, stats: Arc<NotifyStats>) {
    let client = match reqwest::Client::builder().timeout(TIMEOUT).build() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "Cannot build the webhook client; escalations are only logged.");
            return;
        }
    };
    while let Some((url, escalation)) = pending.recv().await {
        let mut last_error = String::new();
        let mut delivered = false;
        for attempt in 1..=TRIES {
            match client.post(&url).json(&escalation).send().await {
                Ok(response) if response.status().is_success() => {
                    delivered = true;
                    break;
                }
                Ok(response) => last_error = format!("HTTP {}", response.status()),
                Err(e) => last_error = error_chain(&e),
            }
            if attempt < TRIES {
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
            }
        }
        if delivered {
            stats.delivered.fetch_add(1, Ordering::Relaxed);
            tracing::info!(url = %url, escalation = %escalation.id, "Escalation delivered.");
        } else {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(url = %url, escalation = %escalation.id, host = %escalation.host, why = ?escalation.why, error = %last_error, tries = TRIES, "Escalation not delivered to the webhook.");
        }
    }
}
