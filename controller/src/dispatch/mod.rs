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
//! The state lives in this one task, and decisions are made in arrival order, in batches:
//! events that arrive together, or one tick of the clock. With a database ([`state_db`]) each
//! batch is one session: the fleet state is locked and brought up to date first, written back
//! and committed last, and only then are its actions sent and its escalations notified
//! ([`Outgoing`]). Several controllers on one PostgreSQL thus count the guards over the whole
//! fleet. When the database is lost, the batch is decided again once it is back; meanwhile the
//! dispatcher decides nothing ([`health`]) and the events wait (ingest stops acking when the
//! queue is full; the agents keep their outboxes).
//!
//! A chain of actions belongs to the controller that sends its actions; it is kept in the
//! fleet state with its progress ([`decide::ChainState`]), so that when its host reconnects to
//! another controller (its own died), that one sends the running action again under the same
//! id: the agent answers from its ledger if it already ran it.

mod error;
pub mod health;
pub mod request;
pub mod state_db;
pub mod state_file;
pub mod stats;
pub mod webhook;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatemend_proto::v1::{self, ActionRequest, ActionResult};
use gatemend_proto::{ActionKind, ActionStatus};
use tokio::sync::{mpsc, watch};

pub use error::{BatchError, Unfit};
pub use health::Health;
pub use state_db::{StateDb, StateDbError};
pub use state_file::StateFileError;
pub use stats::DispatchStats;
pub use webhook::{Escalation, Notifier};

use crate::approvals::{Approval, Approvals, NewApproval};
use crate::audit::{Audit, AuditError, Kind, NewRecord};
use crate::decide::{
    self, ChainState, Decision, Finding, FleetState, InFlight, Options, Outcome, Time, UnixMs,
};
use crate::ingest::{Fleet, Forwarded, Ingested};
use crate::policy::{Policy, PolicySet};

/// How long after its deadline an action without a result is given up (the agent may be
/// reconnecting and resending the result from its outbox).
const RESULT_GRACE: Duration = Duration::from_secs(30);
/// How much longer a chain whose controller is gone waits for its host to reconnect to a live
/// one before it is given up (by whichever controller notices first).
const ORPHAN_GRACE: Duration = Duration::from_secs(60);
/// A controller silent this long (no batch committed) is gone: its hosts are offline until
/// they reconnect to another one.
const CONTROLLER_SILENT: Duration = Duration::from_secs(30);
/// Events decided in one batch at most.
const BATCH: usize = 512;
/// How long a dispatcher that lost its database waits before trying again.
const RETRY: Duration = Duration::from_secs(1);

/// A policy's actions for one finding revision, while they run.
#[derive(Debug, Clone)]
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
    /// This controller's id (the owner of its chains, the controller of its hosts).
    id: String,
    state: FleetState,
    policies: watch::Receiver<Arc<PolicySet>>,
    options: Options,
    fleet: Fleet,
    notifier: Notifier,
    /// Running chains by the action id they wait for.
    chains: HashMap<String, Chain>,
    /// Where the fleet state is kept across restarts without a database, when it is.
    state_file: Option<PathBuf>,
    /// The fleet state's tables, shared with the other controllers on the same database.
    state_db: Option<StateDb>,
    /// The batch's session with `state_db`, while one runs. In a (never contended) tokio
    /// mutex only because a database connection is not `Sync`, and the dispatcher is
    /// borrowed across awaits.
    session: tokio::sync::Mutex<Option<state_db::Session>>,
    /// What the batch sends once it is committed.
    outbox: Vec<Outgoing>,
    /// Whether it decides.
    health: Health,
    /// The audit log every step is written to (before an action is dispatched), when kept.
    audit: Option<Audit>,
    /// The batch's audit records, appended together at its end.
    audit_queue: Vec<NewRecord>,
    /// Pending approvals, when kept.
    approvals: Option<Approvals>,
    /// What operators decided, from [`Handle`]s.
    commands: Option<mpsc::Receiver<Command>>,
    /// The number of the last ingest event committed: ingest acks a message to its agent once
    /// its event is decided, so a controller that dies first leaves it in the agent's outbox.
    decided: watch::Sender<u64>,
    stats: Arc<DispatchStats>,
}

/// What a batch does once its decisions are committed.
#[derive(Debug)]
enum Outgoing {
    /// Send an action request to the host's agent.
    Action {
        host: String,
        request: ActionRequest,
    },
    /// Tell a human.
    Escalation {
        webhook: Option<String>,
        escalation: Escalation,
    },
}

/// One batch of work.
#[derive(Debug)]
enum Work {
    /// Ingest events, in arrival order.
    Events(Vec<Forwarded>),
    /// An approval was given here: dispatch the approved ones.
    Approved,
    /// The clock: heartbeat, timeouts, expiries, approvals given elsewhere.
    Tick,
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
    /// A dispatcher for the controller `id`.
    pub fn new(
        id: &str,
        policies: watch::Receiver<Arc<PolicySet>>,
        options: Options,
        fleet: Fleet,
        notifier: Notifier,
    ) -> Dispatcher {
        Dispatcher {
            id: id.to_owned(),
            state: FleetState::new(),
            policies,
            options,
            fleet,
            notifier,
            chains: HashMap::new(),
            state_file: None,
            state_db: None,
            session: tokio::sync::Mutex::new(None),
            outbox: Vec::new(),
            health: Health::new(id),
            audit: None,
            audit_queue: Vec::new(),
            approvals: None,
            commands: None,
            decided: watch::Sender::new(0),
            stats: Arc::default(),
        }
    }

    /// How far it has decided, for ingest to ack by ([`crate::ingest::LinkService::ack_when_decided`]).
    pub fn decided(&self) -> watch::Receiver<u64> {
        self.decided.subscribe()
    }

    /// Whether it decides, for `/healthz`.
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// The counters `/metrics` reads.
    pub fn stats(&self) -> Arc<DispatchStats> {
        Arc::clone(&self.stats)
    }

    /// Keeps everything in one database: every step written to `audit` (findings, decisions,
    /// dispatched actions, results, escalations, resolutions, hosts online and offline), the
    /// fleet state in `state` (shared with every controller on the database), approvals in
    /// `approvals`. Each batch's audit records are appended together, durably, before its
    /// state commits and before any of its actions is sent: an action that cannot be audited
    /// does not run, and while the database is lost nothing is decided.
    pub fn with_database(
        mut self,
        audit: Audit,
        state: StateDb,
        approvals: Approvals,
    ) -> Dispatcher {
        self.audit = Some(audit);
        self.state_db = Some(state);
        self.approvals = Some(approvals);
        self
    }

    /// Queues one audit record; the batch appends them all at its end.
    fn audit(&mut self, record: NewRecord) {
        if self.audit.is_some() {
            self.audit_queue.push(record);
        }
    }

    /// Appends the batch's audit records in one transaction.
    async fn write_audit(&mut self) -> Result<(), AuditError> {
        let queued = std::mem::take(&mut self.audit_queue);
        let Some(audit) = &self.audit else {
            return Ok(());
        };
        if queued.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let written = audit.append_many(queued).await;
        self.stats.audit_write(started.elapsed(), written.is_ok());
        written.map(|_| ())
    }

    /// Keeps the fleet state in `path` (loaded now, saved after every decision that acts),
    /// so a restarted controller remembers its cooldowns and attempts. For one controller
    /// without a database; see [`Dispatcher::with_database`].
    pub fn with_state_file(mut self, path: PathBuf) -> Result<Dispatcher, StateFileError> {
        self.state = state_file::load(&path)?;
        self.state_file = Some(path);
        Ok(self)
    }

    /// Saves the state to the state file after a change that must survive a restart.
    fn persist(&self) {
        if let Some(path) = &self.state_file
            && let Err(e) = state_file::save(path, &self.state)
        {
            tracing::error!(error = %e, "Could not save the fleet state; a restart would forget cooldowns and attempts.");
        }
    }

    /// Runs until the ingest stage is gone.
    pub async fn run(mut self, mut events: mpsc::Receiver<Forwarded>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut commands = self.commands.take();
        loop {
            let work = tokio::select! {
                event = events.recv() => match event {
                    Some(event) => {
                        let mut batch = vec![event];
                        while batch.len() < BATCH {
                            match events.try_recv() {
                                Ok(event) => batch.push(event),
                                Err(_) => break,
                            }
                        }
                        Work::Events(batch)
                    }
                    None => return,
                },
                // An approval given here wakes the dispatcher at once; one given through another
                // controller is found at the next tick. Either way it is claimed first.
                Some(Command::Approved) = next_command(&mut commands) => Work::Approved,
                _ = tick.tick() => Work::Tick,
            };
            self.work(&work).await;
        }
    }

    /// Does one batch, again and again while the database is lost: nothing else is decided
    /// meanwhile.
    async fn work(&mut self, work: &Work) {
        loop {
            match self.try_work(work).await {
                Ok(()) => {
                    self.health.deciding(now_ms());
                    return;
                }
                Err(e) => {
                    self.health.lost(e.to_string(), now_ms());
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// One batch: begin (lock, catch up), decide, append its audit records, commit, then
    /// send. When the audit or the commit fails nothing is sent, the chains are as they were,
    /// and the state is reloaded from the database at the next begin.
    async fn try_work(&mut self, work: &Work) -> Result<(), BatchError> {
        let chains_before = self.state_db.as_ref().map(|_| self.chains.clone());
        if let Some(db) = &mut self.state_db {
            *self.session.get_mut() = Some(db.begin(&mut self.state).await?);
            self.drop_chains_of_others();
        }
        let now = now_ms();
        let mut received = Vec::new();
        let mut last_seq = 0;
        match work {
            Work::Events(events) => {
                for Forwarded { seq, event } in events {
                    if let Ingested::Finding { received: at, .. } = event {
                        received.push(*at);
                    }
                    last_seq = last_seq.max(*seq);
                    self.on_event(event.clone(), now_ms()).await;
                }
            }
            Work::Approved => self.dispatch_approved(now).await,
            Work::Tick => self.on_tick(now).await,
        }
        let session = self.session.get_mut().take();
        let written = match self.write_audit().await {
            Ok(()) => match (&mut self.state_db, session) {
                (Some(db), Some(session)) => db
                    .commit(session, &mut self.state)
                    .await
                    .map_err(BatchError::from),
                _ => {
                    self.state.take_changes();
                    Ok(())
                }
            },
            Err(e) => {
                // The session's transaction rolls back as it is dropped.
                if let Some(db) = &mut self.state_db {
                    db.forget_cache();
                }
                Err(BatchError::from(e))
            }
        };
        if let Err(e) = written {
            self.outbox.clear();
            self.audit_queue.clear();
            if let Some(chains) = chains_before {
                self.chains = chains;
            }
            return Err(e);
        }
        for at in received {
            self.stats.decision_latency.observe(at.elapsed());
        }
        self.flush();
        self.decided.send_if_modified(|decided| {
            let moved = last_seq > *decided;
            *decided = (*decided).max(last_seq);
            moved
        });
        Ok(())
    }

    /// Sends what the committed batch decided.
    fn flush(&mut self) {
        for out in std::mem::take(&mut self.outbox) {
            match out {
                Outgoing::Action { host, request } => {
                    let id = request.action_id.clone();
                    let kind = ActionKind::try_from(request.kind).unwrap_or_default();
                    let unit = request.unit.clone();
                    let dry_run = request.dry_run;
                    match self.fleet.send_action(&host, request) {
                        Ok(()) if dry_run => {
                            tracing::info!(host = %host, action = %id, kind = %kind, "Dry run: plan requested, nothing runs.");
                        }
                        Ok(()) => {
                            tracing::info!(host = %host, action = %id, kind = %kind, unit = %unit, "Action dispatched.");
                        }
                        // Gone between the decision and now: the chain is given up at its
                        // deadline unless the host reconnects first (then it is sent again).
                        Err(e) => {
                            tracing::warn!(host = %host, action = %id, error = %e, "Action decided but not sent.");
                        }
                    }
                }
                Outgoing::Escalation {
                    webhook,
                    escalation,
                } => self.notifier.escalate(webhook.as_deref(), escalation),
            }
        }
    }

    /// Forgets the chains another controller took over (or that ended) since the last batch.
    fn drop_chains_of_others(&mut self) {
        let in_flight = &self.state.data().in_flight;
        let id = &self.id;
        self.chains.retain(|action, chain| {
            let mine = in_flight
                .get(&chain.id)
                .and_then(|a| a.chain.as_ref())
                .is_some_and(|c| c.owner == *id);
            if !mine {
                tracing::info!(action = %action, host = %chain.finding.host, "Chain taken over by another controller (its host reconnected there) or ended.");
            }
            mine
        });
    }

    /// The clock: this controller's heartbeat, the controllers gone silent, the hosts
    /// connected here, timeouts, expiries, approvals given elsewhere.
    async fn on_tick(&mut self, now: UnixMs) {
        if self.state_db.is_some() {
            self.state.record_heartbeat(&self.id, now);
            for gone in self.state.silent_controllers(now, CONTROLLER_SILENT) {
                if gone == self.id {
                    continue;
                }
                let hosts = self.state.forget_controller(&gone);
                tracing::warn!(controller = %gone, hosts = hosts.len(), "A controller went silent; its hosts are offline until they reconnect.");
            }
            // The hosts connected here are online here, whatever another controller wrote
            // (it may have taken this one for gone while the database was away).
            for view in self.fleet.hosts() {
                let here = view.online
                    && self
                        .state
                        .host(&view.host)
                        .is_some_and(|h| h.online && h.controller == self.id);
                if view.online && !here {
                    self.state.host_online(&view.host, view.labels, &self.id);
                }
            }
        }
        self.expire(now).await;
        self.expire_orphans(now).await;
        self.expire_approvals(now).await;
        self.dispatch_approved(now).await;
    }

    /// A handle to tell this dispatcher what operators decided (the web API holds one).
    pub fn handle(&mut self) -> Handle {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        self.commands = Some(rx);
        Handle { tx }
    }

    async fn on_event(&mut self, event: Ingested, now: UnixMs) {
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

    async fn on_finding(&mut self, host: &str, wire: &v1::Finding, now: UnixMs) {
        let f = match Finding::try_from(wire) {
            Ok(f) => f,
            Err(e) => {
                // Ingest refuses these already; a finding that slips through is not decided.
                tracing::error!(host = %host, error = %e, "Finding not decidable.");
                return;
            }
        };
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
                    .incident(&f.id)
                    .body(body),
            );
        }
        self.state.record_finding(&f, now, &self.id);
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
        self.audit(decided);
        if decision.outcome == Outcome::Resolved {
            self.audit(record(Kind::Resolved, now).host(&f.host).incident(&f.id));
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
        );
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
                    );
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
            chain: None,
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
            if let Err(e) = self.fleet.check_send(&chain.finding.host, kind) {
                return self
                    .give_up(chain, format!("cannot send {kind}: {e}"), now)
                    .await;
            }
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
                    "controller": self.id,
                }));
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
        self.persist();
        tracing::info!(host = %chain.finding.host, finding = %chain.finding.id, policy = %chain.policy.name, "Every action of the policy succeeded.");
    }

    /// Sends again the running actions of the chains in flight on `host`, under their own
    /// ids, taking over those another controller (or a previous run) drove: the agent runs one
    /// it never received and answers from its ledger for one it ran.
    async fn resume_chains(&mut self, host: &str, now: UnixMs) {
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
                );
            }
            let checked = request.and_then(|request| {
                self.fleet
                    .check_send(&f.host, kind)
                    .map(|()| request)
                    .map_err(|e| Unfit::Unsent {
                        kind,
                        why: e.to_string(),
                    })
            });
            match checked {
                Ok(request) => {
                    self.outbox.push(Outgoing::Action {
                        host: f.host.clone(),
                        request,
                    });
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
        );
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

    /// Gives up the chains nobody drives any more (their controller is gone) and whose host did
    /// not reconnect to a live controller in time.
    async fn expire_orphans(&mut self, now: UnixMs) {
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

    async fn escalate(&mut self, f: &Finding, policy: Option<&Policy>, why: String, now: UnixMs) {
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
        self.audit(audited);
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
            .map(|e| e.webhook.clone());
        self.outbox.push(Outgoing::Escalation {
            webhook,
            escalation,
        });
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
