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

mod approval;
mod batch;
mod chain;
mod dry_run;
mod error;
mod events;
pub mod health;
mod page;
pub mod request;
pub mod state_db;
pub mod state_file;
pub mod stats;
pub mod webhook;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
use crate::audit::{Audit, AuditError, Kind, NewRecord, now_ms};
use crate::decide::{
    self, ChainState, Decision, Edit, Finding, FleetState, InFlight, Options, Outcome, Time, UnixMs,
};
use crate::ingest::{Fleet, Forwarded, Ingested};
use crate::policy::{Policy, PolicySet};
use chain::Chain;

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

    /// The incident records about `finding` (of chain `chain`) are kept under: its open
    /// incident, else the finding itself.
    fn incident_id(&self, host: &str, chain: Option<&str>, finding: &str) -> String {
        self.state
            .incident_of(host, chain, finding)
            .unwrap_or_else(|| finding.to_owned())
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

    /// A handle to tell this dispatcher what operators decided (the web API holds one).
    pub fn handle(&mut self) -> Handle {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        self.commands = Some(rx);
        Handle { tx }
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

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
