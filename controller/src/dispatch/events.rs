//! The ingest events: hosts online and offline, findings (each decided and joined to its
//! incident), action results.

use super::*;

impl Dispatcher {
    pub(super) async fn on_event(&mut self, event: Ingested, now: UnixMs) {
        match event {
            Ingested::Online { host, labels } => {
                let body = serde_json::json!({ "labels": labels, "controller": self.id });
                self.state.host_online(&host, labels, &self.id);
                self.audit(record(Kind::HostOnline, now).host(&host).body(body));
                self.resume_chains(&host, now).await;
            }
            Ingested::Offline { host } => {
                // Only the controller a host is connected to says it is gone: it may have
                // moved to another one already.
                let elsewhere = self
                    .state
                    .host(&host)
                    .is_some_and(|h| h.online && h.controller != self.id);
                if !elsewhere {
                    self.state.host_offline(&host);
                }
                let body = serde_json::json!({ "controller": self.id });
                self.audit(record(Kind::HostOffline, now).host(&host).body(body));
            }
            Ingested::Finding { host, finding, .. } => {
                self.on_finding(&host, &finding, now).await;
            }
            Ingested::ActionResult { host, result } => self.on_result(&host, result, now).await,
        }
    }

    pub(super) async fn on_finding(&mut self, host: &str, wire: &v1::Finding, now: UnixMs) {
        let f = match Finding::try_from(wire) {
            Ok(f) => f,
            Err(e) => {
                // Ingest refuses these already; a finding that slips through is not decided.
                tracing::error!(host = %host, error = %e, "Finding not decidable.");
                return;
            }
        };
        // The incident it belongs to: every record about it carries the incident's id.
        let incident = self.state.incident_for(&f, now);
        let incident_id = incident.clone().unwrap_or_else(|| f.id.clone());
        if self.audit.is_some() {
            let mut body = serde_json::to_value(&f).unwrap_or_default();
            if let (Some(evidence), Some(fields)) = (&wire.evidence, body.as_object_mut()) {
                // What the finding rests on: its raw lines and the probe results.
                let probes: std::collections::BTreeMap<_, _> = evidence.probes.iter().collect();
                fields.insert(
                    "evidence".into(),
                    serde_json::json!({ "lines": evidence.lines, "probes": probes }),
                );
            }
            self.audit(
                record(Kind::Finding, now)
                    .host(&f.host)
                    .incident(&incident_id)
                    .body(body),
            );
        }
        self.state.record_finding(&f, now, &self.id);
        if f.resolved {
            self.finding_resolved(&f, wire, incident.as_deref(), now);
            return;
        }
        if let Some(open) = self.state.incident_mut(&f.host, &incident_id) {
            open.failing(&f);
        }
        self.decide_finding(&f, &incident_id, now).await;
    }

    /// Decides a failing finding of incident `incident_id` and carries the decision out;
    /// also what a settled incident's latest finding goes through when its settling ends.
    pub(super) async fn decide_finding(&mut self, f: &Finding, incident_id: &str, now: UnixMs) {
        let f = f.clone();
        let incident_id = incident_id.to_owned();
        let set = Arc::clone(&self.policies.borrow());
        let decision = decide::decide(&set, &self.state, &f, now, self.options);
        let settling = self
            .state
            .incident(&f.host, &incident_id)
            .and_then(|open| open.settling(&f, &decision.outcome, now));
        if let Some(why) = settling {
            // Nothing is decided yet: no cooldown starts, nobody is asked or paged.
            tracing::info!(host = %f.host, finding = %f.id, revision = f.revision, decision = decision.outcome.id(), why = %why, "Settling before deciding.");
            if let Some(open) = self.state.incident_mut(&f.host, &incident_id) {
                open.settle(&f, now);
            }
            self.audit(
                record(Kind::Incident, now)
                    .host(&f.host)
                    .incident(&incident_id)
                    .body(serde_json::json!({
                        "finding": f.id,
                        "revision": f.revision,
                        "would_decide": decision.outcome.id(),
                        "root_cause": f.root_cause.to_string(),
                        "why": why,
                    })),
            );
            return;
        }
        decide::apply(&mut self.state, &decision, &f, now);
        log(&f, &decision);
        self.stats.decision(&decision.outcome);
        let mut decided = record(Kind::Decision, now)
            .host(&f.host)
            .incident(&incident_id)
            .body(serde_json::json!({
                "finding": f.id,
                "revision": f.revision,
                "decision": decision.outcome.id(),
                "detail": decision.outcome.to_string(),
                "root_cause": f.root_cause.to_string(),
                "why": f.root_cause_detail,
            }));
        if let Some(p) = decision.policy {
            decided = decided.policy(&p.name, p.source.file.digest.to_string());
        }
        self.audit(decided);
        // The state file is the whole fleet: written when a decision changed what a restart
        // must remember (acts, pages, holds that count), not for every watched revision.
        let remember = !matches!(
            decision.outcome,
            Outcome::NoPolicy
                | Outcome::Held {
                    guard: decide::Guard::Threshold | decide::Guard::Busy,
                    ..
                }
        );
        match (decision.outcome, decision.policy) {
            (Outcome::Execute, Some(policy)) => self.execute(f.clone(), policy.clone(), now).await,
            (Outcome::DryRun, Some(policy)) => self.dry_run(&f, policy, now).await,
            (Outcome::Escalate { why }, policy) => {
                self.escalate(&f, policy, why.to_string(), now).await;
                if let (decide::Why::Storm { .. }, Some(open)) =
                    (why, self.state.incident_mut(&f.host, &incident_id))
                {
                    // The storm's one page is this one.
                    open.paged.get_or_insert(decide::incident::Paged {
                        first_at: now,
                        last_at: now,
                        count: 1,
                        renotify_ms: 0,
                        by_storm: true,
                        webhook: None,
                    });
                }
            }
            (Outcome::AwaitApproval, Some(policy)) => {
                self.request_approval(&f, policy, now).await;
            }
            (Outcome::Held { guard, until }, _) => {
                let change = self
                    .state
                    .incident_mut(&f.host, &incident_id)
                    .and_then(|open| {
                        let change = open.held(guard, until, now);
                        if guard == decide::Guard::Storm && open.paged.is_none() {
                            // Covered by the storm's one page (sent for the host that started
                            // it): this host's incident pages nobody on its own.
                            open.page(now, 0, true, None);
                        }
                        change
                    });
                self.audit_change(
                    &f.host,
                    &incident_id,
                    change,
                    &decision.outcome.to_string(),
                    now,
                );
            }
            _ => {}
        }
        // The invariant: a failing incident has an action in flight, a pending approval or a
        // human paged. A decision that leaves it with none of these pages, once.
        let why = self
            .state
            .incident(&f.host, &incident_id)
            .and_then(|open| decide::incident::page_for(open, &decision.outcome, f.last_seen, now));
        if let Some(why) = why {
            self.escalate(&f, decision.policy, why, now).await;
        }
        if remember {
            self.persist();
        }
    }

    /// A finding resolved (the agent saw the site work again): when it was its incident's
    /// last failing finding, the incident is resolved.
    fn finding_resolved(
        &mut self,
        f: &Finding,
        wire: &v1::Finding,
        incident: Option<&str>,
        now: UnixMs,
    ) {
        self.stats.decision(&Outcome::Resolved);
        let evidence = wire
            .evidence
            .as_ref()
            .and_then(|e| e.probes.get("resolved_by"))
            .cloned()
            .unwrap_or_else(|| "the errors stopped and the probes are healthy".to_owned());
        tracing::info!(host = %f.host, finding = %f.id, revision = f.revision, cause = %f.cause, evidence = %evidence, "Finding resolved.");
        self.audit(
            record(Kind::Decision, now)
                .host(&f.host)
                .incident(incident.unwrap_or(&f.id))
                .body(serde_json::json!({
                    "finding": f.id,
                    "revision": f.revision,
                    "decision": Outcome::Resolved.id(),
                    "detail": Outcome::Resolved.to_string(),
                    "evidence": evidence,
                })),
        );
        let Some(id) = incident else {
            return;
        };
        let Some(open) = self.state.incident_mut(&f.host, id) else {
            return;
        };
        if open.finding_resolved(&f.id).is_some() {
            let closed = open.clone();
            self.resolved(&f.host, &closed, &evidence, now);
            self.persist();
        }
    }

    /// Decides again the latest finding of every incident whose settling ended.
    pub(super) async fn settled(&mut self, now: UnixMs) {
        let due: Vec<(String, String)> = self
            .state
            .incidents()
            .filter(|(_, i)| i.settled_due(now))
            .map(|(host, i)| (host.to_owned(), i.id.clone()))
            .collect();
        for (host, id) in due {
            let Some(f) = self
                .state
                .incident_mut(&host, &id)
                .and_then(|open| open.take_settled())
            else {
                continue;
            };
            self.decide_finding(&f, &id, now).await;
        }
    }
}
