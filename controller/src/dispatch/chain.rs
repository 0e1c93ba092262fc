//! Action chains: a policy's actions sent one after the other, each after the previous one
//! succeeded; resumed when their host reconnects; given up when they fail or fall silent.

use super::*;

/// A policy's actions for one finding revision, while they run.
#[derive(Debug, Clone)]
pub(super) struct Chain {
    /// The in-flight id (fleet guards).
    pub(super) id: String,
    pub(super) finding: Finding,
    pub(super) policy: Policy,
    /// The action running now, by its index in `policy.actions`.
    pub(super) current: usize,
    /// When the running action is given up.
    pub(super) expires_at: UnixMs,
}

impl Dispatcher {
    /// Starts the policy's chain of actions on the finding's host.
    pub(super) async fn execute(&mut self, f: Finding, policy: Policy, now: UnixMs) {
        let id = request::chain_id(&f, &policy);
        let action = InFlight {
            host: f.host.clone(),
            policy: policy.name.clone(),
            cause: f.cause,
            since: now,
            chain: None,
        };
        self.state
            .record_dispatched(&id, action, policy.guards.attempts_window, now);
        if let Some(incident) = self.state.incident_of(&f.host, None, &f.id) {
            let change = self
                .state
                .incident_mut(&f.host, &incident)
                .and_then(|open| open.acting(&id));
            let why = format!("policy {} runs {}", policy.name, actions_text(&policy));
            self.audit_change(&f.host, &incident, change, &why, now);
        }
        let chain = Chain {
            id,
            finding: f,
            policy,
            current: 0,
            expires_at: now,
        };
        self.advance(chain, now).await;
    }

    /// Sends the chain's current action, or ends the chain when none is left. Escalate steps
    /// notify and move on; nothing is sent for them.
    pub(super) async fn advance(&mut self, mut chain: Chain, now: UnixMs) {
        while let Some(&kind) = chain.policy.actions.get(chain.current) {
            if kind == ActionKind::Escalate {
                let why = format!("the policy's step {} escalates", chain.current + 1);
                self.escalate(&chain.finding, Some(&chain.policy), why, now)
                    .await;
                chain.current += 1;
                continue;
            }
            let request =
                match request::build(&chain.finding, &chain.policy, chain.current, kind, false) {
                    Ok(request) => request,
                    Err(e) => return self.give_up(chain, e.to_string(), now).await,
                };
            if let Err(e) = self.fleet.check_send(&chain.finding.host, kind) {
                return self
                    .give_up(chain, format!("cannot send {kind}: {e}"), now)
                    .await;
            }
            let action_id = request.action_id.clone();
            // Durable in the audit log before the host hears of it.
            let incident =
                self.incident_id(&chain.finding.host, Some(&chain.id), &chain.finding.id);
            let dispatched =
                self.dispatched(&chain.finding.host, &incident, &chain.policy, &request, now);
            // Durable (the batch's audit records are appended) before it is sent.
            self.audit(dispatched);
            chain.expires_at = now
                .saturating_add(ms(request::deadline(&chain.policy)))
                .saturating_add(ms(RESULT_GRACE));
            self.state.record_progress(
                &chain.id,
                ChainState {
                    finding: chain.finding.clone(),
                    current: chain.current,
                    owner: self.id.clone(),
                    expires_at: chain.expires_at,
                },
            );
            self.outbox.push(Outgoing::Action {
                host: chain.finding.host.clone(),
                request,
            });
            self.chains.insert(action_id, chain);
            self.persist();
            return;
        }
        self.state.record_finished(&chain.id);
        self.chain_ended(&chain, true, "every action of the policy succeeded", now);
        self.persist();
        tracing::info!(host = %chain.finding.host, finding = %chain.finding.id, policy = %chain.policy.name, "Every action of the policy succeeded.");
    }

    /// Sends again the running actions of the chains in flight on `host`, under their own
    /// ids, taking over those another controller (or a previous run) drove: the agent runs one
    /// it never received and answers from its ledger for one it ran.
    pub(super) async fn resume_chains(&mut self, host: &str, now: UnixMs) {
        let resumable: Vec<(String, String, ChainState)> = self
            .state
            .data()
            .in_flight
            .iter()
            .filter(|(_, a)| a.host == host)
            .filter_map(|(id, a)| Some((id.clone(), a.policy.clone(), a.chain.clone()?)))
            .collect();
        for (id, policy_name, progress) in resumable {
            self.chains.retain(|_, c| c.id != id);
            let set = Arc::clone(&self.policies.borrow());
            let Some(policy) = set.get(&policy_name) else {
                self.state.record_finished(&id);
                self.persist();
                let why = format!(
                    "an action of policy {policy_name} was in flight when its host reconnected, \
                     and that policy no longer exists; nothing was sent again"
                );
                self.escalate(&progress.finding, None, why, now).await;
                continue;
            };
            tracing::info!(host = %host, finding = %progress.finding.id, policy = %policy.name, from = %progress.owner, "Sending again the action that was in flight when the host reconnected.");
            let chain = Chain {
                id,
                finding: progress.finding,
                policy: policy.clone(),
                current: progress.current,
                expires_at: now,
            };
            self.advance(chain, now).await;
        }
    }

    /// Ends a chain that cannot go on, and tells a human why.
    pub(super) async fn give_up(&mut self, chain: Chain, why: String, now: UnixMs) {
        self.state.record_finished(&chain.id);
        self.chain_ended(&chain, false, &why, now);
        self.persist();
        self.escalate(&chain.finding, Some(&chain.policy), why, now)
            .await;
    }

    /// Ends a chain whose action ran and did not mend it. While the policy has attempts left
    /// on the host, nobody is paged: the finding's next revision is decided again (a retry, or
    /// a guard's hold, which pages). The last attempt pages, once, saying so.
    async fn failed(&mut self, chain: Chain, why: String, now: UnixMs) {
        let f = &chain.finding;
        let max = chain.policy.guards.max_attempts;
        let (attempts, _) = self.state.attempts(&f.host, &chain.policy.name, now);
        if attempts < max {
            self.state.record_finished(&chain.id);
            let note = format!(
                "{why}; attempt {attempts} of {max} (max_attempts): decided again at the \
                 finding's next revision"
            );
            self.chain_ended(&chain, false, &note, now);
            if let Some(incident) = self.state.incident_of(&f.host, None, &f.id) {
                self.audit(
                    record(Kind::Incident, now)
                        .host(&f.host)
                        .incident(&incident)
                        .body(serde_json::json!({ "why": note })),
                );
            }
            self.persist();
            return;
        }
        self.state
            .record_attempts_escalated(&f.host, &chain.policy.name);
        let why = format!("{why}; {attempts} attempts (max_attempts {max}) did not mend it");
        self.give_up(chain, why, now).await;
    }

    pub(super) async fn on_result(&mut self, host: &str, result: ActionResult, now: UnixMs) {
        let status = ActionStatus::try_from(result.status).unwrap_or(ActionStatus::Unspecified);
        self.stats.action(status);
        let kind = if status == ActionStatus::Refused {
            Kind::Refused
        } else {
            Kind::ActionResult
        };
        // Ingest only forwards results whose action id names their host; a chain of another
        // host is never advanced by this one's result all the same.
        if let Some(chain) = self.chains.get(&result.action_id)
            && chain.finding.host != host
        {
            self.stats
                .foreign_results
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(host = %host, action = %result.action_id, owner = %chain.finding.host, "Refused an action result for another host's chain.");
            return;
        }
        let chain_id = self.chains.get(&result.action_id).map(|c| c.id.clone());
        let finding = self.chains.get(&result.action_id).map_or_else(
            || request::finding_of(&result.action_id).to_owned(),
            |c| c.finding.id.clone(),
        );
        let incident = self.incident_id(host, chain_id.as_deref(), &finding);
        let steps: Vec<serde_json::Value> = result
            .steps
            .iter()
            .map(|s| serde_json::json!({ "name": s.name, "ok": s.ok, "duration_ms": s.duration_ms, "output": s.output }))
            .collect();
        self.audit(
            record(kind, now)
                .host(host)
                .incident(incident)
                .body(serde_json::json!({
                    "action_id": result.action_id,
                    "status": status.to_string(),
                    "message": result.message,
                    "steps": steps,
                })),
        );
        let Some(mut chain) = self.chains.remove(&result.action_id) else {
            // A dry-run plan, or a result for an action given up on (or decided before a
            // controller restart): stored by ingest, nothing to advance.
            tracing::info!(host = %host, action = %result.action_id, status = %status, outcome = ?result.message, "Action result.");
            return;
        };
        if status == ActionStatus::Succeeded {
            // By the host's clock, which its findings' times are in.
            let at = if result.finished_unix_ms > 0 {
                result.finished_unix_ms
            } else {
                now
            };
            if let Some(incident) = self
                .state
                .incident_of(host, Some(&chain.id), &chain.finding.id)
                && let Some(open) = self.state.incident_mut(host, &incident)
            {
                open.action_succeeded(at);
            }
            tracing::info!(host = %host, action = %result.action_id, status = %status, outcome = ?result.message, "Action succeeded and verified.");
            chain.current += 1;
            self.advance(chain, now).await;
        } else {
            tracing::warn!(host = %host, action = %result.action_id, status = %status, outcome = ?result.message, "Action did not mend it.");
            let why = format!(
                "action {} ended {status}: {}",
                result.action_id, result.message
            );
            if matches!(status, ActionStatus::Refused | ActionStatus::RolledBack) {
                // The host will not run it, or an edit was tried and undone: retrying the
                // same thing changes nothing. The policy's cooldown keeps the same edit from
                // being proposed again meanwhile.
                self.give_up(chain, why, now).await;
            } else {
                self.failed(chain, why, now).await;
            }
        }
    }

    /// Gives up the actions whose result did not come in time.
    pub(super) async fn expire(&mut self, now: UnixMs) {
        let late: Vec<String> = self
            .chains
            .iter()
            .filter(|(_, c)| c.expires_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in late {
            if let Some(chain) = self.chains.remove(&id) {
                let why = format!(
                    "no result for action {id} by {}; the host may still be running it",
                    Time(chain.expires_at)
                );
                self.give_up(chain, why, now).await;
            }
        }
    }

    /// Gives up the chains nobody drives any more (their controller is gone) and whose host did
    /// not reconnect to a live controller in time.
    pub(super) async fn expire_orphans(&mut self, now: UnixMs) {
        let driven: std::collections::HashSet<&str> =
            self.chains.values().map(|c| c.id.as_str()).collect();
        let orphans: Vec<(String, InFlight, ChainState)> = self
            .state
            .data()
            .in_flight
            .iter()
            .filter(|(id, _)| !driven.contains(id.as_str()))
            .filter_map(|(id, a)| {
                let progress = a.chain.clone()?;
                let due = progress.expires_at.saturating_add(ms(ORPHAN_GRACE)) <= now;
                due.then(|| (id.clone(), a.clone(), progress))
            })
            .collect();
        for (id, action, progress) in orphans {
            self.state.record_finished(&id);
            self.persist();
            let why = format!(
                "the controller {} that drove {} of policy {} is gone, and the host did not \
                 reconnect to another one by {}; the host may still be running it",
                progress.owner,
                id,
                action.policy,
                Time(progress.expires_at.saturating_add(ms(ORPHAN_GRACE)))
            );
            let set = Arc::clone(&self.policies.borrow());
            self.escalate(&progress.finding, set.get(&action.policy), why, now)
                .await;
        }
    }

    /// The incident the chain mends hears that it ended.
    fn chain_ended(&mut self, chain: &Chain, succeeded: bool, why: &str, now: UnixMs) {
        let host = &chain.finding.host;
        let Some(incident) = self
            .state
            .incident_of(host, Some(&chain.id), &chain.finding.id)
        else {
            return;
        };
        let change = self
            .state
            .incident_mut(host, &incident)
            .and_then(|open| open.chain_ended(&chain.id, succeeded, now));
        self.audit_change(host, &incident, change, why, now);
    }
}

/// `a, b` of the policy's actions.
fn actions_text(policy: &Policy) -> String {
    policy
        .actions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Dispatcher {
    /// The `action_dispatched` record of a request (or of a dry run's plan request): what it
    /// asks, of which unit and socket, and for an edit the file, the directive, the values, the
    /// file's hash and the diff.
    pub(super) fn dispatched(
        &self,
        host: &str,
        incident: &str,
        policy: &Policy,
        request: &ActionRequest,
        now: UnixMs,
    ) -> NewRecord {
        let kind = ActionKind::try_from(request.kind).unwrap_or_default();
        let mut body = serde_json::json!({
            "action_id": request.action_id,
            "kind": kind.to_string(),
            "unit": request.unit,
            "socket_path": request.socket_path,
            "deadline_ms": request.deadline_ms,
            "controller": self.id,
        });
        if let Some(fields) = body.as_object_mut() {
            if request.dry_run {
                fields.insert("dry_run".into(), true.into());
            }
            if let Some(edit) = request.edit.as_ref().and_then(Edit::from_wire) {
                fields.insert(
                    "edit".into(),
                    serde_json::to_value(edit).unwrap_or_default(),
                );
            }
        }
        record(Kind::ActionDispatched, now)
            .host(host)
            .incident(incident)
            .policy(&policy.name, policy.source.file.digest.to_string())
            .body(body)
    }
}
