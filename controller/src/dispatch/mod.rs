//! Dispatching: the stage that owns the fleet state and carries decisions out.
//!
//! It takes the ingest events in order (hosts online and offline, findings, action results),
//! asks [`decide`] about every finding, and does what the decision says:
//! - execute: sends the policy's actions to the host's agent one after the other, each after the
//!   previous one succeeded ([`request`] builds them); the chain is one in-flight action for the
//!   fleet guards from the first request to the last result;
//! - dry run: sends the actions with `dry_run` set, so each agent answers with its plan and
//!   touches nothing; they are not in flight;
//! - escalate: hands the escalation to the [`Notifier`] (log, webhook);
//! - await approval: a human is notified as for an escalation; approving is served by the
//!   audit and API stage (issue #7);
//! - held, no policy, resolved: logged.
//!
//! When the controller cannot do what a policy says — no unit to restart, the host offline, an
//! action failed or never answered — it escalates instead: in doubt, a human decides.
//!
//! The state lives in this one task: no lock, and decisions are made in arrival order.

mod error;
pub mod request;
pub mod state_file;
pub mod stats;
pub mod webhook;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatemend_proto::v1::{self, ActionResult};
use gatemend_proto::{ActionKind, ActionStatus};
use tokio::sync::{mpsc, watch};

pub use error::Unfit;
pub use state_file::StateFileError;
pub use stats::DispatchStats;
pub use webhook::{Escalation, Notifier};

use crate::approvals::{Approval, Approvals, NewApproval};
use crate::audit::{Audit, Kind, NewRecord};
use crate::decide::{
    self, Decision, Finding, FleetState, InFlight, Options, Outcome, Time, UnixMs,
};
use crate::ingest::{Fleet, Ingested};
use crate::policy::{Policy, PolicySet};

/// How long after its deadline an action without a result is given up (the agent may be
/// reconnecting and resending the result from its outbox).
const RESULT_GRACE: Duration = Duration::from_secs(30);

/// A policy's actions for one finding revision, while they run.
#[derive(Debug)]
struct Chain {
    /// The in-flight id (fleet guards).
    id: String,
    finding: Finding,
    policy: Policy,
    /// The action running now, by its index in `policy.actions`.
    current: usize,
    /// When the running action is given up.
    expires_at: UnixMs,
}

/// The dispatch stage; run it with [`Dispatcher::run`].
#[derive(Debug)]
pub struct Dispatcher {
    state: FleetState,
    policies: watch::Receiver<Arc<PolicySet>>,
    options: Options,
    fleet: Fleet,
    notifier: Notifier,
    /// Running chains by the action id they wait for.
    chains: HashMap<String, Chain>,
    /// Where the fleet state is kept across restarts, when it is.
    state_file: Option<PathBuf>,
    /// Chains a previous run left in flight, sent again when their host reconnects.
    resume: Vec<state_file::Pending>,
    /// The audit log every step is written to (before an action is dispatched), when kept.
    audit: Option<Audit>,
    /// Pending approvals, when kept.
    approvals: Option<Approvals>,
    /// What operators decided, from [`Handle`]s.
    commands: Option<mpsc::Receiver<Command>>,
    stats: Arc<DispatchStats>,
}

/// Operator decisions the web API tells the dispatcher about.
#[derive(Debug)]
pub enum Command {
    /// An approval was approved: look for approvals to dispatch now.
    Approved,
}

/// Approved approvals waiting for the dispatcher.
const COMMAND_QUEUE: usize = 256;

/// Sends operator decisions to the dispatcher. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
}

impl Handle {
    /// Tells the dispatcher `approval` was approved: it is claimed and dispatched at once
    /// instead of at the dispatcher's next tick. False when the dispatcher has stopped.
    pub async fn approved(&self, approval: Approval) -> bool {
        tracing::debug!(approval = %approval.id, "Approval handed to the dispatcher.");
        self.tx.send(Command::Approved).await.is_ok()
    }
}

/// The next command, or never when there is no command channel.
async fn next_command(commands: &mut Option<mpsc::Receiver<Command>>) -> Option<Command> {
    match commands {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Dispatcher {
    pub fn new(
        policies: watch::Receiver<Arc<PolicySet>>,
        options: Options,
        fleet: Fleet,
        notifier: Notifier,
    ) -> Dispatcher {
        Dispatcher {
            state: FleetState::new(),
            policies,
            options,
            fleet,
            notifier,
            chains: HashMap::new(),
            state_file: None,
            resume: Vec::new(),
            audit: None,
            approvals: None,
            commands: None,
            stats: Arc::default(),
        }
    }

    /// The counters `/metrics` reads.
    pub fn stats(&self) -> Arc<DispatchStats> {
        Arc::clone(&self.stats)
    }

    /// Writes every step to `audit`: findings, decisions, dispatched actions (durably before
    /// they are sent), results, escalations, resolutions, hosts online and offline.
    pub fn with_audit(mut self, audit: Audit) -> Dispatcher {
        self.audit = Some(audit);
        self
    }

    /// Appends one record; false when the audit log could not take it (then nothing is
    /// dispatched on its account: an action that cannot be audited does not run).
    async fn audit(&self, record: NewRecord) -> bool {
        let Some(audit) = &self.audit else {
            return true;
        };
        let started = std::time::Instant::now();
        let written = audit.append(record).await;
        self.stats.audit_write(started.elapsed(), written.is_ok());
        match written {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, "Could not write the audit log.");
                false
            }
        }
    }

    /// Keeps the fleet state in `path` (loaded now, saved after every decision that acts),
    /// so a restarted controller remembers its cooldowns and attempts.
    pub fn with_state_file(mut self, path: PathBuf) -> Result<Dispatcher, StateFileError> {
        (self.state, self.resume) = state_file::load(&path)?;
        self.state_file = Some(path);
        Ok(self)
    }

    /// Saves the state after a change that must survive a restart.
    fn persist(&self) {
        let pending = self
            .chains
            .values()
            .map(|c| state_file::Pending {
                chain: c.id.clone(),
                finding: c.finding.clone(),
                policy: c.policy.name.clone(),
                current: c.current,
            })
            .chain(self.resume.iter().cloned())
            .collect();
        if let Some(path) = &self.state_file
            && let Err(e) = state_file::save(path, &self.state, pending)
        {
            tracing::error!(error = %e, "Could not save the fleet state; a restart would forget cooldowns and attempts.");
        }
    }

    /// Runs until the ingest stage is gone.
    pub async fn run(mut self, mut events: mpsc::Receiver<Ingested>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut commands = self.commands.take();
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.on_event(event, now_ms()).await,
                    None => return,
                },
                // An approval given here wakes the dispatcher at once; one given through another
                // controller is found at the next tick. Either way it is claimed first.
                Some(Command::Approved) = next_command(&mut commands) => {
                    self.dispatch_approved(now_ms()).await;
                }
                _ = tick.tick() => {
                    self.expire(now_ms()).await;
                    self.expire_approvals(now_ms()).await;
                    self.dispatch_approved(now_ms()).await;
                }
            }
        }
    }

    /// A handle to tell this dispatcher what operators decided (the web API holds one).
    pub fn handle(&mut self) -> Handle {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        self.commands = Some(rx);
        Handle { tx }
    }

    /// Keeps approvals in `approvals` (pending, with expiry; decided exactly once).
    pub fn with_approvals(mut self, approvals: Approvals) -> Dispatcher {
        self.approvals = Some(approvals);
        self
    }

    async fn on_event(&mut self, event: Ingested, now: UnixMs) {
        match event {
            Ingested::Online { host, labels } => {
                let body = serde_json::json!({ "labels": labels });
                self.state.host_online(&host, labels);
                self.audit(record(Kind::HostOnline, now).host(&host).body(body))
                    .await;
                self.resume_chains(&host, now).await;
            }
            Ingested::Offline { host } => {
                self.state.host_offline(&host);
                self.audit(record(Kind::HostOffline, now).host(&host)).await;
            }
            Ingested::Finding { host, finding } => self.on_finding(&host, &finding, now).await,
            Ingested::ActionResult { host, result } => self.on_result(&host, result, now).await,
        }
    }

    async fn on_finding(&mut self, host: &str, wire: &v1::Finding, now: UnixMs) {
        let f = match Finding::try_from(wire) {
            Ok(f) => f,
            Err(e) => {
                // Ingest refuses these already; a finding that slips through is not decided.
                tracing::error!(host = %host, error = %e, "Finding not decidable.");
                return;
            }
        };
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
                .incident(&f.id)
                .body(body),
        )
        .await;
        self.state.record_finding(&f, now);
        let set = Arc::clone(&self.policies.borrow());
        let decision = decide::decide(&set, &self.state, &f, now, self.options);
        decide::apply(&mut self.state, &decision, &f, now);
        log(&f, &decision);
        self.stats.decision(&decision.outcome);
        let mut decided = record(Kind::Decision, now)
            .host(&f.host)
            .incident(&f.id)
            .body(serde_json::json!({
                "revision": f.revision,
                "decision": decision.outcome.id(),
                "detail": decision.outcome.to_string(),
                "root_cause": f.root_cause.to_string(),
                "why": f.root_cause_detail,
            }));
        if let Some(p) = decision.policy {
            decided = decided.policy(&p.name, p.source.file.digest.to_string());
        }
        let audited = self.audit(decided).await;
        if decision.outcome == Outcome::Resolved {
            self.audit(record(Kind::Resolved, now).host(&f.host).incident(&f.id))
                .await;
        }
        let remember = matches!(
            decision.outcome,
            Outcome::Execute | Outcome::AwaitApproval | Outcome::DryRun | Outcome::Escalate { .. }
        ) || matches!(
            decision.outcome,
            Outcome::Held {
                guard: decide::Guard::Storm,
                ..
            }
        );
        let Some(policy) = decision.policy else {
            return;
        };
        match decision.outcome {
            // An action whose decision could not be audited does not run: a human hears why.
            Outcome::Execute if !audited => {
                let why = "the audit log is not writable, so nothing is dispatched".to_owned();
                self.escalate(&f, Some(policy), why, now).await;
            }
            Outcome::Execute => self.execute(f, policy.clone(), now).await,
            Outcome::DryRun => self.dry_run(&f, policy, now).await,
            Outcome::Escalate { why } => {
                self.escalate(&f, Some(policy), why.to_string(), now).await;
            }
            Outcome::AwaitApproval => self.request_approval(&f, policy, now).await,
            Outcome::Held { .. } | Outcome::NoPolicy | Outcome::Resolved => {}
        }
        if remember {
            self.persist();
        }
    }

    /// Records a pending approval (when approvals are kept) and tells a human, the way
    /// escalations do.
    async fn request_approval(&mut self, f: &Finding, policy: &Policy, now: UnixMs) {
        let actions: Vec<String> = policy.actions.iter().map(ToString::to_string).collect();
        let mut why = format!(
            "approval needed to run {}: {}",
            actions.join(", "),
            f.root_cause_detail
        );
        let mut id = None;
        if let Some(approvals) = &self.approvals {
            let new = NewApproval {
                finding: f.clone(),
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
                .incident(&f.id)
                .policy(&policy.name, policy.source.file.digest.to_string())
                .body(serde_json::json!({ "approval": id, "actions": actions, "why": why })),
        )
        .await;
        self.escalate(f, Some(policy), why, now).await;
    }

    /// An operator approved: the guards that protect the fleet are asked again (what was true
    /// when the approval was requested may not be now), then the policy's actions run. The
    /// cooldown is not asked: the request itself started it.
    async fn on_approved(&mut self, approval: Approval, now: UnixMs) {
        let set = Arc::clone(&self.policies.borrow());
        let f = approval.finding.clone();
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
    async fn dispatch_approved(&mut self, now: UnixMs) {
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
            match approvals.claim(&approval.id, now).await {
                Ok(true) => self.on_approved(approval, now).await,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(approval = %approval.id, error = %e, "Could not claim an approval.")
                }
            }
        }
    }

    /// Expires the approvals nobody decided in time.
    async fn expire_approvals(&mut self, now: UnixMs) {
        let Some(approvals) = &self.approvals else {
            return;
        };
        match approvals.expire_due(now).await {
            Ok(expired) => {
                for a in expired {
                    tracing::warn!(host = %a.host, approval = %a.id, policy = %a.policy, "Approval expired; nothing runs.");
                    self.audit(
                        record(Kind::Expired, now)
                            .host(&a.host)
                            .incident(&a.incident)
                            .policy(&a.policy, &a.policy_digest)
                            .body(serde_json::json!({ "approval": a.id })),
                    )
                    .await;
                }
            }
            Err(e) => tracing::error!(error = %e, "Could not expire approvals."),
        }
    }

    /// Starts the policy's chain of actions on the finding's host.
    async fn execute(&mut self, f: Finding, policy: Policy, now: UnixMs) {
        let id = request::chain_id(&f, &policy);
        let action = InFlight {
            host: f.host.clone(),
            policy: policy.name.clone(),
            cause: f.cause,
            since: now,
        };
        self.state
            .record_dispatched(&id, action, policy.guards.attempts_window, now);
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
    async fn advance(&mut self, mut chain: Chain, now: UnixMs) {
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
            let action_id = request.action_id.clone();
            // Durable in the audit log before the host hears of it.
            let dispatched = record(Kind::ActionDispatched, now)
                .host(&chain.finding.host)
                .incident(&chain.finding.id)
                .policy(
                    &chain.policy.name,
                    chain.policy.source.file.digest.to_string(),
                )
                .body(serde_json::json!({
                    "action_id": action_id,
                    "kind": kind.to_string(),
                    "unit": request.unit,
                    "socket_path": request.socket_path,
                    "deadline_ms": request.deadline_ms,
                }));
            if !self.audit(dispatched).await {
                let why = format!("{kind} not dispatched: the audit log is not writable");
                return self.give_up(chain, why, now).await;
            }
            if let Err(e) = self.fleet.send_action(&chain.finding.host, request) {
                return self
                    .give_up(chain, format!("cannot send {kind}: {e}"), now)
                    .await;
            }
            tracing::info!(host = %chain.finding.host, action = %action_id, kind = %kind, unit = %chain.finding.unit, policy = %chain.policy.name, "Action dispatched.");
            chain.expires_at = now
                .saturating_add(ms(request::deadline(&chain.policy)))
                .saturating_add(ms(RESULT_GRACE));
            self.chains.insert(action_id, chain);
            return;
        }
        self.state.record_finished(&chain.id);
        self.persist();
        tracing::info!(host = %chain.finding.host, finding = %chain.finding.id, policy = %chain.policy.name, "Every action of the policy succeeded.");
    }

    /// Sends again the actions a previous run left in flight on `host`, under their own ids:
    /// the agent runs one it never received and answers from its ledger for one it ran.
    async fn resume_chains(&mut self, host: &str, now: UnixMs) {
        let (mine, others) = std::mem::take(&mut self.resume)
            .into_iter()
            .partition(|p| p.finding.host == host);
        self.resume = others;
        for pending in mine {
            let set = Arc::clone(&self.policies.borrow());
            let Some(policy) = set.get(&pending.policy) else {
                self.state.record_finished(&pending.chain);
                let why = format!(
                    "an action of policy {} was in flight when the controller restarted, and \
                     that policy no longer exists; nothing was sent again",
                    pending.policy
                );
                self.escalate(&pending.finding, None, why, now).await;
                continue;
            };
            tracing::info!(host = %host, finding = %pending.finding.id, policy = %policy.name, "Sending again an action that was in flight when the controller stopped.");
            let chain = Chain {
                id: pending.chain,
                finding: pending.finding,
                policy: policy.clone(),
                current: pending.current,
                expires_at: now,
            };
            self.advance(chain, now).await;
        }
        self.persist();
    }

    /// Ends a chain that cannot go on, and tells a human why.
    async fn give_up(&mut self, chain: Chain, why: String, now: UnixMs) {
        self.state.record_finished(&chain.id);
        self.persist();
        self.escalate(&chain.finding, Some(&chain.policy), why, now)
            .await;
    }

    /// Asks each action of the policy for its plan.
    async fn dry_run(&mut self, f: &Finding, policy: &Policy, now: UnixMs) {
        for (index, &kind) in policy.actions.iter().enumerate() {
            if kind == ActionKind::Escalate {
                continue;
            }
            let request = request::build(f, policy, index, kind, true);
            if let Ok(request) = &request {
                self.audit(
                    record(Kind::ActionDispatched, now)
                        .host(&f.host)
                        .incident(&f.id)
                        .policy(&policy.name, policy.source.file.digest.to_string())
                        .body(serde_json::json!({
                            "action_id": request.action_id,
                            "kind": kind.to_string(),
                            "unit": request.unit,
                            "socket_path": request.socket_path,
                            "dry_run": true,
                        })),
                )
                .await;
            }
            let sent = request.and_then(|request| {
                let id = request.action_id.clone();
                self.fleet
                    .send_action(&f.host, request)
                    .map(|()| id)
                    .map_err(|e| Unfit::Unsent {
                        kind,
                        why: e.to_string(),
                    })
            });
            match sent {
                Ok(id) => {
                    tracing::info!(host = %f.host, action = %id, kind = %kind, policy = %policy.name, "Dry run: plan requested, nothing runs.");
                }
                Err(e) => {
                    tracing::warn!(host = %f.host, kind = %kind, policy = %policy.name, error = %e, "Dry run: no plan.");
                }
            }
        }
    }

    async fn on_result(&mut self, host: &str, result: ActionResult, now: UnixMs) {
        let status = ActionStatus::try_from(result.status).unwrap_or(ActionStatus::Unspecified);
        self.stats.action(status);
        let kind = if status == ActionStatus::Refused {
            Kind::Refused
        } else {
            Kind::ActionResult
        };
        let incident = self.chains.get(&result.action_id).map_or_else(
            || request::finding_of(&result.action_id).to_owned(),
            |c| c.finding.id.clone(),
        );
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
        )
        .await;
        let Some(mut chain) = self.chains.remove(&result.action_id) else {
            // A dry-run plan, or a result for an action given up on (or decided before a
            // controller restart): stored by ingest, nothing to advance.
            tracing::info!(host = %host, action = %result.action_id, status = %status, outcome = ?result.message, "Action result.");
            return;
        };
        if status == ActionStatus::Succeeded {
            tracing::info!(host = %host, action = %result.action_id, status = %status, outcome = ?result.message, "Action succeeded and verified.");
            chain.current += 1;
            self.advance(chain, now).await;
        } else {
            tracing::warn!(host = %host, action = %result.action_id, status = %status, outcome = ?result.message, "Action did not mend it.");
            let why = format!(
                "action {} ended {status}: {}",
                result.action_id, result.message
            );
            self.give_up(chain, why, now).await;
        }
    }

    /// Gives up the actions whose result did not come in time.
    async fn expire(&mut self, now: UnixMs) {
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

    async fn escalate(&self, f: &Finding, policy: Option<&Policy>, why: String, now: UnixMs) {
        self.stats
            .escalations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut audited = record(Kind::Escalated, now)
            .host(&f.host)
            .incident(&f.id)
            .body(serde_json::json!({ "why": why }));
        if let Some(p) = policy {
            audited = audited.policy(&p.name, p.source.file.digest.to_string());
        }
        self.audit(audited).await;
        let policy_name = policy.map(|p| p.name.clone()).unwrap_or_default();
        let escalation = Escalation {
            id: format!("{}@{}/{policy_name}", f.id, f.revision),
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
            decided_at: Time(now).to_string(),
        };
        let webhook = policy
            .and_then(|p| p.escalate.as_ref())
            .map(|e| e.webhook.as_str());
        self.notifier.escalate(webhook, escalation);
    }
}

/// One line per decision. Held and no-policy decisions come with every finding update, so
/// they log at DEBUG; the decisions that act or escalate, and resolutions, at INFO.
fn log(f: &Finding, d: &Decision<'_>) {
    let policy = d.policy.map(|p| p.name.as_str()).unwrap_or("");
    let digest = d
        .policy
        .map(|p| p.source.file.digest.to_string())
        .unwrap_or_default();
    match d.outcome {
        Outcome::Resolved => {
            tracing::info!(host = %f.host, finding = %f.id, revision = f.revision, cause = %f.cause, unit = %f.unit, "Finding resolved.");
        }
        Outcome::Held { .. } | Outcome::NoPolicy => {
            tracing::debug!(host = %f.host, finding = %f.id, revision = f.revision, cause = %f.cause, root_cause = %f.root_cause, policy, decision = d.outcome.id(), detail = %d.outcome, "Decided.");
        }
        _ => {
            tracing::info!(host = %f.host, finding = %f.id, revision = f.revision, cause = %f.cause, root_cause = %f.root_cause, unit = %f.unit, policy, policy_digest = %digest, decision = d.outcome.id(), detail = %d.outcome, why = ?f.root_cause_detail, "Decided.");
        }
    }
}

/// A record by the controller itself.
fn record(kind: Kind, now: UnixMs) -> NewRecord {
    NewRecord::new(now, kind, "controller")
}

fn now_ms() -> UnixMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
