//! Approvals: requested by a decision, claimed once when approved, expired when nobody
//! decided in time.

use super::*;

impl Dispatcher {
    /// Records a pending approval (when approvals are kept) and tells a human, the way
    /// escalations do.
    pub(super) async fn request_approval(&mut self, f: &Finding, policy: &Policy, now: UnixMs) {
        let actions: Vec<String> = policy.actions.iter().map(ToString::to_string).collect();
        let mut why = format!(
            "approval needed to run {}: {}",
            actions.join(", "),
            f.root_cause_detail
        );
        let mut id = None;
        let incident = self.incident_id(&f.host, None, &f.id);
        if let Some(approvals) = &self.approvals {
            let new = NewApproval {
                finding: f.clone(),
                incident: incident.clone(),
                policy: policy.name.clone(),
                policy_digest: policy.source.file.digest.to_string(),
                actions: actions.clone(),
                why: why.clone(),
                expires_in: policy.approval_expires,
            };
            match approvals.request(new, now).await {
                Ok(approval) => {
                    why = format!(
                        "{why} (approval {}: `gatemend approvals approve {} --reason ...`, expires {})",
                        approval.id,
                        approval.id,
                        Time(approval.expires_at)
                    );
                    let change = self
                        .state
                        .incident_mut(&f.host, &incident)
                        .and_then(|open| open.awaiting(&approval.id, approval.expires_at));
                    self.audit_change(&f.host, &incident, change, &why, now);
                    id = Some(approval.id);
                }
                Err(e) => {
                    tracing::error!(error = %e, "Could not record the approval request.");
                    why = format!("{why} (the approval could not be recorded: {e})");
                }
            }
        }
        self.audit(
            record(Kind::ApprovalRequested, now)
                .host(&f.host)
                .incident(&incident)
                .policy(&policy.name, policy.source.file.digest.to_string())
                .body(serde_json::json!({ "approval": id, "actions": actions, "why": why })),
        );
        self.escalate(f, Some(policy), why, now).await;
    }

    /// An operator approved: the guards that protect the fleet are asked again (what was true
    /// when the approval was requested may not be now), then the policy's actions run. The
    /// cooldown is not asked: the request itself started it.
    pub(super) async fn on_approved(&mut self, approval: Approval, now: UnixMs) {
        let set = Arc::clone(&self.policies.borrow());
        let f = approval.finding.clone();
        if let Some(open) = self.state.incident_mut(&approval.host, &approval.incident) {
            open.approval_ended(&approval.id);
        }
        let Some(policy) = set.get(&approval.policy) else {
            let why = format!(
                "approval {} was given, but policy {} no longer exists; nothing runs",
                approval.id, approval.policy
            );
            return self.escalate(&f, None, why, now).await;
        };
        let verdicts = decide::judge(policy, &f, &self.state, now, self.options).verdicts;
        let held = verdicts.and_then(|v| {
            if matches!(v.storm, decide::StormVerdict::Storm { .. }) {
                Some("a storm of this cause is on")
            } else if v.busy == decide::BusyVerdict::Busy {
                Some("the host already has an action in flight")
            } else if matches!(v.fleet, decide::FleetVerdict::Full { .. }) {
                Some("the fleet-wide limit of hosts in flight is reached")
            } else if matches!(v.attempts, decide::AttemptsVerdict::Exhausted { .. }) {
                Some("max_attempts is reached on this host")
            } else {
                None
            }
        });
        if let Some(held) = held {
            let why = format!(
                "approval {} was given, but {held}; nothing runs now",
                approval.id
            );
            return self.escalate(&f, Some(policy), why, now).await;
        }
        tracing::info!(host = %f.host, finding = %f.id, approval = %approval.id, by = approval.decided_by.as_deref().unwrap_or(""), policy = %policy.name, "Approved; dispatching.");
        if self.options.dry_run {
            self.dry_run(&f, policy, now).await;
        } else {
            self.execute(f, policy.clone(), now).await;
        }
        self.persist();
    }

    /// Dispatches the approved approvals of the hosts connected here, each claimed first so
    /// that it runs once whichever controller sees it.
    pub(super) async fn dispatch_approved(&mut self, now: UnixMs) {
        let Some(approvals) = self.approvals.clone() else {
            return;
        };
        let waiting = match approvals.undispatched().await {
            Ok(waiting) => waiting,
            Err(e) => {
                tracing::error!(error = %e, "Could not read the approved approvals.");
                return;
            }
        };
        for approval in waiting {
            if !self.fleet.host(&approval.host).is_some_and(|h| h.online) {
                continue;
            }
            // On a shared database the claim is part of the batch: it commits with the
            // dispatch, or neither happens.
            let mut session = self.session.lock().await;
            let claimed = match session.as_mut().and_then(state_db::Session::connection) {
                Some(tx) => approvals.claim_in(tx, &approval.id, now).await,
                None => approvals.claim(&approval.id, now).await,
            };
            drop(session);
            match claimed {
                Ok(true) => self.on_approved(approval, now).await,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(approval = %approval.id, error = %e, "Could not claim an approval.")
                }
            }
        }
    }

    /// Expires the approvals nobody decided in time.
    pub(super) async fn expire_approvals(&mut self, now: UnixMs) {
        let Some(approvals) = &self.approvals else {
            return;
        };
        match approvals.expire_due(now).await {
            Ok(expired) => {
                for a in expired {
                    if let Some(open) = self.state.incident_mut(&a.host, &a.incident) {
                        open.approval_ended(&a.id);
                    }
                    tracing::warn!(host = %a.host, approval = %a.id, policy = %a.policy, "Approval expired; nothing runs.");
                    self.audit(
                        record(Kind::Expired, now)
                            .host(&a.host)
                            .incident(&a.incident)
                            .policy(&a.policy, &a.policy_digest)
                            .body(serde_json::json!({ "approval": a.id })),
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "Could not expire approvals."),
        }
    }
}
