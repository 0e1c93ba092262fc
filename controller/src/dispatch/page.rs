//! Pages: a human hears of what the controller will not or cannot mend — once per incident,
//! again every `renotify` while it keeps failing, and once more when it resolves.

use super::*;
use crate::decide::incident::Change;
use crate::decide::{Incident, Stage};
use crate::policy::DEFAULT_RENOTIFY;

/// What a page says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Event {
    /// The first page about an incident.
    Page,
    /// The incident is still failing.
    Renotify,
    /// A paged incident resolved.
    Resolved,
}

impl Event {
    fn id(self) -> &'static str {
        match self {
            Event::Page => "page",
            Event::Renotify => "renotify",
            Event::Resolved => "resolved",
        }
    }
}

impl Dispatcher {
    /// Pages a human about `f`'s incident, unless one was paged about it already: then the
    /// reason is audited on the incident and nobody is paged twice.
    pub(super) async fn escalate(
        &mut self,
        f: &Finding,
        policy: Option<&Policy>,
        why: String,
        now: UnixMs,
    ) {
        let incident = self.state.incident_of(&f.host, None, &f.id);
        let incident = incident.as_deref().unwrap_or(&f.id).to_owned();
        let renotify = policy.map_or(DEFAULT_RENOTIFY, Policy::renotify);
        let mut change = None;
        if let Some(open) = self.state.incident_mut(&f.host, &incident) {
            if let Some(first_at) = open
                .paged
                .as_ref()
                .filter(|p| !p.by_storm)
                .map(|p| p.first_at)
            {
                let stage = open.stage;
                tracing::info!(host = %f.host, incident = %incident, why = %why, "Already paged about this incident; not paging again.");
                self.stats
                    .pages_suppressed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.audit(
                    record(Kind::Incident, now)
                        .host(&f.host)
                        .incident(&incident)
                        .body(serde_json::json!({
                            "stage": stage.id(),
                            "why": why,
                            "page": format!("not sent: paged at {}", Time(first_at)),
                        })),
                );
                return;
            }
            change = open.page(
                now,
                ms(renotify),
                false,
                policy.and_then(Policy::webhook).map(str::to_owned),
            );
        }
        self.audit_change(&f.host, &incident, change, &why, now);
        self.stats
            .escalations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut audited = record(Kind::Escalated, now)
            .host(&f.host)
            .incident(&incident)
            .body(serde_json::json!({ "why": why, "page": 1 }));
        if let Some(p) = policy {
            audited = audited.policy(&p.name, p.source.file.digest.to_string());
        }
        self.audit(audited);
        let policy_name = policy.map(|p| p.name.clone()).unwrap_or_default();
        let escalation = Escalation {
            id: format!("{}@{}/{policy_name}", f.id, f.revision),
            event: Event::Page.id().to_owned(),
            incident,
            host: f.host.clone(),
            finding_id: f.id.clone(),
            cause: f.cause.to_string(),
            root_cause: f.root_cause.to_string(),
            root_cause_detail: f.root_cause_detail.clone(),
            upstream: f.upstream.clone(),
            unit: f.unit.clone(),
            count: f.count,
            policy: policy_name,
            why,
            edit_diff: f.edit.as_ref().map(|e| e.diff.clone()),
            decided_at: Time(now).to_string(),
        };
        let webhook = policy.and_then(Policy::webhook).map(str::to_owned);
        self.outbox.push(Outgoing::Escalation {
            webhook,
            escalation,
        });
    }

    /// Pages about every incident whose short cooldown ended without the retry it promised:
    /// still failing, and nothing else handles it.
    pub(super) fn overdue_retries(&mut self, now: UnixMs) {
        let due: Vec<(String, String, UnixMs)> = self
            .state
            .incidents()
            .filter(|(_, i)| i.retry_overdue(now))
            .map(|(host, i)| (host.to_owned(), i.id.clone(), i.retry_by.unwrap_or(now)))
            .collect();
        for (host, id, by) in due {
            let Some(open) = self.state.incident_mut(&host, &id) else {
                continue;
            };
            open.retry_by = None;
            let change = open.page(now, ms(DEFAULT_RENOTIFY), false, None);
            let incident = open.clone();
            let why = format!(
                "a short cooldown held the action and no retry came by {}, while the upstream \
                 was still failing",
                Time(by)
            );
            self.audit_change(&host, &id, change, &why, now);
            self.stats
                .escalations
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.audit(
                record(Kind::Escalated, now)
                    .host(&host)
                    .incident(&id)
                    .body(serde_json::json!({ "why": why, "page": 1 })),
            );
            self.notify(&host, &incident, Event::Page, why, now);
        }
    }

    /// Pages again about every paged incident still failing past its re-notify interval.
    pub(super) fn renotify(&mut self, now: UnixMs) {
        let due: Vec<(String, String)> = self
            .state
            .incidents()
            .filter(|(_, i)| i.renotify_due(now))
            .map(|(host, i)| (host.to_owned(), i.id.clone()))
            .collect();
        for (host, id) in due {
            let Some(incident) = self.state.incident_mut(&host, &id) else {
                continue;
            };
            incident.page(now, 0, false, None);
            let incident = incident.clone();
            let count = incident.paged.as_ref().map_or(0, |p| p.count);
            let why = format!(
                "still failing since {} ({}; {} failing finding(s)); page {count}, sent again \
                 every {}",
                Time(incident.opened_at),
                incident.stage,
                incident.failing.len(),
                crate::policy::format_duration(Duration::from_millis(
                    incident
                        .paged
                        .as_ref()
                        .map_or(0, |p| u64::try_from(p.renotify_ms).unwrap_or(0))
                ))
            );
            tracing::warn!(host = %host, incident = %id, page = count, "Incident still failing; paging again.");
            self.audit(
                record(Kind::Renotified, now)
                    .host(&host)
                    .incident(&id)
                    .body(serde_json::json!({ "why": why, "page": count })),
            );
            self.stats
                .renotifications
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.notify(&host, &incident, Event::Renotify, why, now);
        }
    }

    /// Audits the resolution of `incident` (every finding of it resolved with evidence), tells
    /// the human who was paged about it, and forgets it.
    pub(super) fn resolved(
        &mut self,
        host: &str,
        incident: &Incident,
        evidence: &str,
        now: UnixMs,
    ) {
        tracing::info!(host = %host, incident = %incident.id, "Incident resolved.");
        self.audit(
            record(Kind::Resolved, now)
                .host(host)
                .incident(&incident.id)
                .body(serde_json::json!({
                    "opened_at": incident.opened_at,
                    "took_ms": now.saturating_sub(incident.opened_at),
                    "evidence": evidence,
                    "paged": incident.paged.as_ref().map_or(0, |p| p.count),
                })),
        );
        if incident.paged.as_ref().is_some_and(|p| !p.by_storm) {
            let why = format!(
                "resolved after {}: {evidence}",
                crate::policy::format_duration(Duration::from_millis(
                    u64::try_from(now.saturating_sub(incident.opened_at)).unwrap_or(0)
                ))
            );
            self.stats
                .resolved_notices
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.notify(host, incident, Event::Resolved, why, now);
        }
        self.state.drop_resolved(host);
    }

    /// Sends a re-notification or a resolution notice to the default webhook.
    fn notify(&mut self, host: &str, incident: &Incident, event: Event, why: String, now: UnixMs) {
        let (upstream, unit) = (incident.key.clone(), incident.unit.clone());
        let escalation = Escalation {
            id: format!(
                "{}/{}/{}",
                incident.id,
                event.id(),
                incident.paged.as_ref().map_or(0, |p| p.count)
            ),
            event: event.id().to_owned(),
            incident: incident.id.clone(),
            host: host.to_owned(),
            finding_id: incident.id.clone(),
            cause: incident.cause.to_string(),
            root_cause: incident.root_cause.to_string(),
            root_cause_detail: String::new(),
            upstream,
            unit,
            count: 0,
            policy: String::new(),
            why,
            edit_diff: None,
            decided_at: Time(now).to_string(),
        };
        let webhook = incident.paged.as_ref().and_then(|p| p.webhook.clone());
        self.outbox.push(Outgoing::Escalation {
            webhook,
            escalation,
        });
    }

    /// Audits an incident's change of stage, when there was one.
    pub(super) fn audit_change(
        &mut self,
        host: &str,
        incident: &str,
        change: Change,
        why: &str,
        now: UnixMs,
    ) {
        let Some((from, to)) = change else {
            return;
        };
        if to == Stage::Resolved {
            // Its own record, with the evidence.
            return;
        }
        tracing::debug!(host = %host, incident = %incident, from = %from, to = %to, "Incident stage.");
        self.audit(
            record(Kind::Incident, now)
                .host(host)
                .incident(incident)
                .body(serde_json::json!({ "from": from.id(), "to": to.id(), "why": why })),
        );
    }
}
