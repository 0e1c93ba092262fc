//! The agent's link to the controller: one long-lived gRPC stream, an on-disk outbox, and
//! the ledger that makes a re-delivered ActionRequest run once.
//!
//! The [`Link`] owns one task. Findings arrive on a bounded channel (filled by the detector);
//! each is written to the [`outbox::Outbox`] before it is sent and removed when the controller
//! acks it. A lost stream is re-opened with exponential backoff and jitter, moving through the
//! configured endpoints; everything still unacked is resent, in order, on the new stream.
//!
//! Acks name only the message id (`Ack.id`), not a finding's revision. The controller answers
//! a stream's messages in the order it read them, so the link matches an ack to the oldest
//! in-flight message with that id on the same stream.
//!
//! One ActionRequest never ends the link: whatever goes wrong with it (its fields, the
//! ledger's write, too many actions running) is answered with an ActionResult saying why,
//! logged and counted, and the stream goes on. Only the outbox failing ends the link: with it
//! gone, nothing the agent says can be kept until it is acked.

pub mod backoff;
mod durable;
pub mod error;
pub mod ledger;
pub mod outbox;
pub mod runner;

use gatemend_proto::error_chain;
use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use gatemend_proto::v1::link_client::LinkClient;
use gatemend_proto::v1::{
    ActionRequest, ActionResult, AgentMessage, ControllerMessage, Finding, Heartbeat, Hello,
    agent_message, controller_message,
};
use gatemend_proto::{ActionKind, ActionStatus};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::config::{ActionsConfig, AgentConfig};
use backoff::Backoff;
pub use error::LinkError;
use error::SessionEnd;
use ledger::{Ledger, Seen};
use outbox::Outbox;
pub use runner::{ActionRunner, Outcome, RefuseAll};

/// Messages sent and not yet acked on one stream; bounds what a slow controller buffers.
const WINDOW: usize = 256;
/// Messages queued toward the gRPC stream.
const STREAM_QUEUE: usize = 64;
/// Action results waiting to be written to the outbox.
const RESULTS_QUEUE: usize = 64;
/// Open (unresolved) findings the link counts for the heartbeat; more are counted as dropped.
pub const MAX_OPEN_FINDINGS: usize = 4_096;
/// Actions running at once; a request for one more is refused.
pub const MAX_RUNNING_ACTIONS: usize = 64;
/// The longest action id the agent accepts. The controller's ids are
/// `{host}/{cause}/{upstream}#{time}@{revision}/{policy}/{index}`: a 253-byte host name and a
/// 108-byte socket path fit with room to spare.
pub const MAX_ACTION_ID_BYTES: usize = 1_024;
/// Findings from the detector waiting for the outbox.
pub const FINDINGS_QUEUE: usize = 1_024;
/// Largest ControllerMessage the agent accepts.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// What the link has done, for tests and (later) the agent's metrics.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub connected: AtomicBool,
    pub sessions: AtomicU64,
    pub acked: AtomicU64,
    pub refused_by_controller: AtomicU64,
    pub pending: AtomicUsize,
    pub dropped: AtomicU64,
    /// ActionRequests the link answered with a refusal of its own (bad fields, outside
    /// allowed_actions, ledger failure, too many running), each logged.
    pub requests_refused: AtomicU64,
    /// ActionRequests without an id: nothing can name them in an answer, so they are dropped.
    pub requests_without_id: AtomicU64,
    /// Writes to the action ledger that failed (the request was refused, or the result sent
    /// without being kept).
    pub ledger_errors: AtomicU64,
    /// Findings not tracked as open because [`MAX_OPEN_FINDINGS`] were.
    pub open_findings_dropped: AtomicU64,
}

/// The agent's end of the stream.
pub struct Link {
    host: String,
    hello: Hello,
    endpoints: Vec<(String, Endpoint)>,
    heartbeat: Duration,
    send_interval: Duration,
    backoff: Backoff,
    outbox: Outbox,
    ledger: Ledger,
    runner: Arc<dyn ActionRunner>,
    /// Deadlines: the request's, `actions.default_deadline_ms` when none, at most
    /// `actions.max_deadline_ms` (the runner computes the same).
    actions: ActionsConfig,
    running: HashSet<String>,
    results_tx: mpsc::Sender<ActionResult>,
    results_rx: Option<mpsc::Receiver<ActionResult>>,
    open_findings: BTreeSet<String>,
    findings_open: bool,
    stats: Arc<LinkStats>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("host", &self.host)
            .field("outbox", &self.outbox)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// Opens the outbox and the ledger and reads the TLS files; connects nothing yet.
    pub fn open(config: &AgentConfig, runner: Arc<dyn ActionRunner>) -> Result<Self, LinkError> {
        let controller = &config.controller;
        let tls = match &controller.tls {
            Some(tls) => {
                let read = |path: &std::path::Path| {
                    std::fs::read(path).map_err(|source| LinkError::TlsFile {
                        path: path.to_owned(),
                        source,
                    })
                };
                Some(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(read(&tls.ca)?))
                        .identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?))
                        .domain_name(tls.server_name.clone()),
                )
            }
            None => {
                tracing::warn!(host = %config.host, "INSECURE: the link to the controller is plain text without certificates (controller.insecure: true).");
                None
            }
        };
        let mut endpoints = Vec::with_capacity(controller.endpoints.len());
        for uri in &controller.endpoints {
            let endpoint_error = |source| LinkError::Endpoint {
                endpoint: uri.clone(),
                source,
            };
            let mut endpoint = Endpoint::from_shared(uri.clone())
                .map_err(endpoint_error)?
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(20))
                .keep_alive_timeout(Duration::from_secs(20));
            if let Some(tls) = &tls {
                endpoint = endpoint.tls_config(tls.clone()).map_err(endpoint_error)?;
            }
            endpoints.push((uri.clone(), endpoint));
        }
        let outbox = Outbox::open(&config.outbox.dir, config.outbox.max_messages)?;
        let ledger = Ledger::open(&config.state_dir.join("actions"), SystemTime::now())?;
        let (results_tx, results_rx) = mpsc::channel(RESULTS_QUEUE);
        let stats = Arc::new(LinkStats::default());
        stats.pending.store(outbox.len(), Ordering::Relaxed);
        Ok(Self {
            host: config.host.clone(),
            hello: Hello {
                host: config.host.clone(),
                labels: config.labels.clone().into_iter().collect(),
                agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                allowed_actions: config.allowed_actions.iter().map(|a| *a as i32).collect(),
            },
            endpoints,
            heartbeat: controller.heartbeat(),
            send_interval: Duration::from_secs_f64(
                1.0 / f64::from(controller.send_rate_per_sec.max(1)),
            ),
            backoff: Backoff::new(
                Duration::from_millis(controller.backoff_initial_ms),
                Duration::from_millis(controller.backoff_max_ms),
            ),
            outbox,
            ledger,
            runner,
            actions: config.actions.clone(),
            running: HashSet::new(),
            results_tx,
            results_rx: Some(results_rx),
            open_findings: BTreeSet::new(),
            findings_open: true,
            stats,
        })
    }

    pub fn stats(&self) -> Arc<LinkStats> {
        Arc::clone(&self.stats)
    }

    /// Runs until the outbox or ledger fails. Dropping the future is a clean stop: every
    /// message taken from `findings` is already on disk.
    pub async fn run(mut self, mut findings: mpsc::Receiver<Finding>) -> Result<(), LinkError> {
        let Some(mut results) = self.results_rx.take() else {
            return Ok(());
        };
        let mut index = 0usize;
        loop {
            let (uri, endpoint) = match self.endpoints.get(index % self.endpoints.len().max(1)) {
                Some((uri, endpoint)) => (uri.clone(), endpoint.clone()),
                None => return Ok(()),
            };
            let mut established = false;
            let end = self
                .session(
                    &uri,
                    endpoint,
                    &mut findings,
                    &mut results,
                    &mut established,
                )
                .await;
            self.stats.connected.store(false, Ordering::Relaxed);
            match end {
                SessionEnd::Local(e) => return Err(e),
                end => {
                    let reason = error_chain(&end);
                    tracing::warn!(host = %self.host, endpoint = %uri, reason = %reason, pending = self.outbox.len(), "Link to the controller lost; reconnecting.");
                }
            }
            // A controller that failed (to connect, or after serving) is not the first one
            // tried again: another one listed takes its agents at once.
            if established {
                self.backoff.reset();
            }
            index = index.wrapping_add(1);
            let delay = self.backoff.next(rand::random::<f64>());
            self.idle(delay, &mut findings, &mut results).await?;
        }
    }

    /// Waits out a reconnect delay, still taking findings and results into the outbox.
    async fn idle(
        &mut self,
        delay: Duration,
        findings: &mut mpsc::Receiver<Finding>,
        results: &mut mpsc::Receiver<ActionResult>,
    ) -> Result<(), LinkError> {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return Ok(()),
                finding = findings.recv(), if self.findings_open => self.take_finding(finding)?,
                Some(result) = results.recv() => self.take_result(result)?,
            }
        }
    }

    async fn session(
        &mut self,
        uri: &str,
        endpoint: Endpoint,
        findings: &mut mpsc::Receiver<Finding>,
        results: &mut mpsc::Receiver<ActionResult>,
        established: &mut bool,
    ) -> SessionEnd {
        let channel = match endpoint.connect().await {
            Ok(channel) => channel,
            Err(source) => {
                return SessionEnd::Connect {
                    endpoint: uri.to_owned(),
                    source,
                };
            }
        };
        let mut client = LinkClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let hello = AgentMessage {
            body: Some(agent_message::Body::Hello(self.hello.clone())),
        };
        if tx.try_send(hello).is_err() {
            return SessionEnd::Closed;
        }
        let mut inbound = match client.stream(ReceiverStream::new(rx)).await {
            Ok(response) => response.into_inner(),
            Err(status) => return SessionEnd::Refused(status),
        };
        *established = true;
        self.stats.connected.store(true, Ordering::Relaxed);
        self.stats.sessions.fetch_add(1, Ordering::Relaxed);
        tracing::info!(host = %self.host, endpoint = %uri, pending = self.outbox.len(), "Connected to the controller.");

        let mut sent_upto = 0u64;
        let mut in_flight: VecDeque<(String, u64)> = VecDeque::new();
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        let mut pace = tokio::time::interval(self.send_interval);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let can_send =
                in_flight.len() < WINDOW && self.outbox.after(sent_upto).next().is_some();
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(message)) => {
                        if let Err(e) = self.on_controller_message(message, &mut in_flight) {
                            return SessionEnd::Local(e);
                        }
                    }
                    Ok(None) => return SessionEnd::Closed,
                    Err(status) => return SessionEnd::Refused(status),
                },
                finding = findings.recv(), if self.findings_open => {
                    if let Err(e) = self.take_finding(finding) {
                        return SessionEnd::Local(e);
                    }
                }
                Some(result) = results.recv() => {
                    if let Err(e) = self.take_result(result) {
                        return SessionEnd::Local(e);
                    }
                }
                _ = heartbeat.tick() => {
                    let beat = AgentMessage {
                        body: Some(agent_message::Body::Heartbeat(Heartbeat {
                            sent_unix_ms: crate::now_ms(),
                            open_findings: u32::try_from(self.open_findings.len()).unwrap_or(u32::MAX),
                        })),
                    };
                    if tx.send(beat).await.is_err() {
                        return SessionEnd::Closed;
                    }
                }
                _ = pace.tick(), if can_send => {
                    let Some(entry) = self.outbox.after(sent_upto).next().cloned() else {
                        continue;
                    };
                    if tx.send(entry.message).await.is_err() {
                        return SessionEnd::Closed;
                    }
                    sent_upto = entry.seq;
                    in_flight.push_back((entry.id, entry.seq));
                }
            }
        }
    }

    fn on_controller_message(
        &mut self,
        message: ControllerMessage,
        in_flight: &mut VecDeque<(String, u64)>,
    ) -> Result<(), LinkError> {
        match message.body {
            Some(controller_message::Body::Ack(ack)) => {
                let Some(index) = in_flight.iter().position(|(id, _)| *id == ack.id) else {
                    tracing::debug!(host = %self.host, id = %ack.id, "Ack for nothing in flight.");
                    return Ok(());
                };
                if let Some((_, seq)) = in_flight.remove(index) {
                    self.outbox.remove(seq)?;
                }
                self.stats.acked.fetch_add(1, Ordering::Relaxed);
                if !ack.refused.is_empty() {
                    self.stats
                        .refused_by_controller
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(host = %self.host, id = %ack.id, reason = %ack.refused, "The controller refused a message; it is dropped.");
                }
                self.publish();
            }
            Some(controller_message::Body::ActionRequest(request)) => {
                self.on_action_request(request)?;
            }
            None => {}
        }
        Ok(())
    }

    /// Answers one ActionRequest: from the ledger, with a refusal, or by running it. Never
    /// fails for a reason of the request's own; `Err` only when the outbox fails.
    fn on_action_request(&mut self, request: ActionRequest) -> Result<(), LinkError> {
        let id = request.action_id.clone();
        if id.is_empty() {
            let total = self
                .stats
                .requests_without_id
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            tracing::warn!(host = %self.host, dropped_total = total, "Ignored an action request without an id: no answer can name it.");
            return Ok(());
        }
        if id.len() > MAX_ACTION_ID_BYTES {
            // Answered, not kept: an id this long is not worth a ledger entry.
            let result = self.refusal(
                &id,
                ActionStatus::Refused,
                format!(
                    "the action id is {} bytes long; this agent accepts at most {MAX_ACTION_ID_BYTES}",
                    id.len()
                ),
            );
            return self.enqueue(AgentMessage {
                body: Some(agent_message::Body::ActionResult(result)),
            });
        }
        self.ledger.prune_if_due(SystemTime::now());
        match self.ledger.seen(&id) {
            Seen::Done(first) => {
                tracing::info!(host = %self.host, action = %id, "Action already ran; answering with its first result.");
                self.enqueue(AgentMessage {
                    body: Some(agent_message::Body::ActionResult(first)),
                })?;
            }
            Seen::Started if self.running.contains(&id) => {
                tracing::info!(host = %self.host, action = %id, "Action is running; its result will answer both requests.");
            }
            Seen::Started => {
                let result = self.result(
                    &id,
                    Outcome {
                        status: ActionStatus::Failed,
                        steps: Vec::new(),
                        message: "the agent stopped while this action ran; not run again".into(),
                    },
                );
                self.take_result(result)?;
            }
            Seen::New => self.start_action(request)?,
        }
        Ok(())
    }

    /// A request never seen before: refused by the link's own rules, or noted in the ledger
    /// and handed to the runner under its deadline.
    fn start_action(&mut self, request: ActionRequest) -> Result<(), LinkError> {
        let id = request.action_id.clone();
        let kind = ActionKind::try_from(request.kind).unwrap_or(ActionKind::Unspecified);
        if !self.hello_allows(kind) {
            let result = self.refusal(
                &id,
                ActionStatus::Refused,
                format!("action `{kind}` is not in this host's allowed_actions"),
            );
            return self.take_result(result);
        }
        if self.running.len() >= MAX_RUNNING_ACTIONS {
            let result = self.refusal(
                &id,
                ActionStatus::Refused,
                format!(
                    "{} actions are running, the most this agent runs at once; not run",
                    self.running.len()
                ),
            );
            return self.take_result(result);
        }
        if let Err(e) = self.ledger.start(&id) {
            let total = self.stats.ledger_errors.fetch_add(1, Ordering::Relaxed) + 1;
            let why = error_chain(&e);
            tracing::error!(host = %self.host, action = %id, error = %why, ledger_errors_total = total, "Cannot note the action in the ledger.");
            // Not run: a request delivered again could not be told from a new one, and the
            // action would run twice. Nothing was touched; the controller decides what next.
            let result = self.refusal(
                &id,
                ActionStatus::Refused,
                format!(
                    "the agent cannot note this action in its ledger, so it did not run it: {why}"
                ),
            );
            return self.take_result(result);
        }
        self.running.insert(id.clone());
        let deadline = self.actions.deadline(request.deadline_ms);
        tracing::info!(host = %self.host, action = %id, kind = %kind, policy = %request.policy, deadline_ms = deadline.duration.as_millis() as u64, "Running action.");
        let deadline = deadline.duration;
        let run = self.runner.run(request);
        let results = self.results_tx.clone();
        let host = self.host.clone();
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(deadline, run)
                .await
                .unwrap_or(Outcome {
                    status: ActionStatus::TimedOut,
                    steps: Vec::new(),
                    message: format!("the deadline of {deadline:?} passed"),
                });
            let result = envelope(&host, &id, outcome);
            // The link outlives its actions; a closed queue means the agent is stopping.
            let _ = results.send(result).await;
        });
        Ok(())
    }

    /// A result refusing request `id` for `why`: logged and counted.
    fn refusal(&self, id: &str, status: ActionStatus, why: String) -> ActionResult {
        let total = self.stats.requests_refused.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(host = %self.host, action = %id, status = %status, reason = %why, refused_total = total, "Refused an action request.");
        self.result(
            id,
            Outcome {
                status,
                steps: Vec::new(),
                message: why,
            },
        )
    }

    fn hello_allows(&self, kind: ActionKind) -> bool {
        self.hello.allowed_actions.contains(&(kind as i32)) && kind != ActionKind::Unspecified
    }

    fn result(&self, id: &str, outcome: Outcome) -> ActionResult {
        envelope(&self.host, id, outcome)
    }

    fn take_finding(&mut self, finding: Option<Finding>) -> Result<(), LinkError> {
        let Some(finding) = finding else {
            // The detector is gone; keep the link up for what the outbox still holds.
            self.findings_open = false;
            return Ok(());
        };
        if finding.resolved {
            self.open_findings.remove(&finding.id);
        } else if self.open_findings.len() < MAX_OPEN_FINDINGS
            || self.open_findings.contains(&finding.id)
        {
            self.open_findings.insert(finding.id.clone());
        } else {
            // The finding itself is still sent; only the heartbeat's count stops growing.
            let total = self
                .stats
                .open_findings_dropped
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            if total == 1 || total.is_power_of_two() {
                tracing::warn!(host = %self.host, id = %finding.id, max = MAX_OPEN_FINDINGS, dropped_total = total, "Too many open findings to track; this one is not counted in the heartbeat.");
            }
        }
        self.enqueue(AgentMessage {
            body: Some(agent_message::Body::Finding(finding)),
        })
    }

    /// Keeps a result in the ledger and sends it. A ledger that cannot keep it is logged and
    /// counted, and the result is sent all the same: the controller must hear how it ended.
    fn take_result(&mut self, result: ActionResult) -> Result<(), LinkError> {
        self.running.remove(&result.action_id);
        if let Err(e) = self.ledger.finish(&result) {
            let total = self.stats.ledger_errors.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::error!(host = %self.host, action = %result.action_id, error = %error_chain(&e), ledger_errors_total = total, "Cannot keep the action's result in the ledger; sending it anyway.");
        }
        self.enqueue(AgentMessage {
            body: Some(agent_message::Body::ActionResult(result)),
        })
    }

    fn enqueue(&mut self, message: AgentMessage) -> Result<(), LinkError> {
        self.outbox.push(message)?;
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        self.stats
            .pending
            .store(self.outbox.len(), Ordering::Relaxed);
        self.stats
            .dropped
            .store(self.outbox.dropped(), Ordering::Relaxed);
    }
}

fn envelope(host: &str, id: &str, outcome: Outcome) -> ActionResult {
    ActionResult {
        action_id: id.to_owned(),
        host: host.to_owned(),
        status: outcome.status as i32,
        steps: outcome.steps,
        message: outcome.message,
        finished_unix_ms: crate::now_ms(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures_util::future::BoxFuture;
    use gatemend_proto::v1::AgentMessage;

    use super::*;
    use crate::config::{ControllerConfig, OutboxConfig};

    /// Counts the actions it is asked to run; each succeeds.
    #[derive(Clone, Default)]
    struct Counting(Arc<AtomicUsize>);

    impl ActionRunner for Counting {
        fn run(&self, _request: ActionRequest) -> BoxFuture<'static, Outcome> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(std::future::ready(Outcome {
                status: ActionStatus::Succeeded,
                steps: Vec::new(),
                message: "restarted".into(),
            }))
        }
    }

    fn config(dir: &std::path::Path) -> AgentConfig {
        AgentConfig {
            host: "web1".into(),
            labels: Default::default(),
            allowed_actions: vec![ActionKind::RestartUnit],
            controller: ControllerConfig {
                endpoints: vec!["http://127.0.0.1:9".into()],
                tls: None,
                insecure: true,
                heartbeat_secs: 10,
                backoff_initial_ms: 50,
                backoff_max_ms: 500,
                send_rate_per_sec: 100,
            },
            outbox: OutboxConfig {
                dir: dir.join("outbox"),
                max_messages: 10_000,
            },
            state_dir: dir.join("state"),
            actions: Default::default(),
            units: Default::default(),
            detect: Default::default(),
        }
    }

    fn request(id: &str) -> ActionRequest {
        ActionRequest {
            action_id: id.into(),
            kind: ActionKind::RestartUnit as i32,
            unit: "php8.2-fpm.service".into(),
            ..Default::default()
        }
    }

    fn results(link: &Link) -> Vec<ActionResult> {
        link.outbox
            .after(0)
            .filter_map(|e| match &e.message {
                AgentMessage {
                    body: Some(agent_message::Body::ActionResult(r)),
                } => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_ledger_that_cannot_be_written_refuses_that_request_and_the_link_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let runner = Counting::default();
        let mut link = Link::open(&config(dir.path()), Arc::new(runner.clone())).unwrap();
        let mut done = link.results_rx.take().unwrap();
        // The ledger's directory replaced by a file: every write in it fails (ENOTDIR), as a
        // name too long for the file system did.
        let ledger_dir = dir.path().join("state/actions");
        std::fs::remove_dir_all(&ledger_dir).unwrap();
        std::fs::write(&ledger_dir, b"").unwrap();

        link.on_action_request(request("a1"))
            .expect("one request's ledger error does not end the link");
        let refused = results(&link);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].action_id, "a1");
        assert_eq!(refused[0].status, ActionStatus::Refused as i32);
        assert!(
            refused[0]
                .message
                .contains("cannot note this action in its ledger"),
            "{}",
            refused[0].message
        );
        assert_eq!(runner.0.load(Ordering::SeqCst), 0, "not run");
        assert!(link.stats.ledger_errors.load(Ordering::Relaxed) >= 1);
        assert_eq!(link.stats.requests_refused.load(Ordering::Relaxed), 1);

        // The ledger is back: the next request runs and its result is kept.
        std::fs::remove_file(&ledger_dir).unwrap();
        std::fs::create_dir(&ledger_dir).unwrap();
        link.on_action_request(request("a2")).unwrap();
        let result = done.recv().await.unwrap();
        link.take_result(result).unwrap();
        assert_eq!(runner.0.load(Ordering::SeqCst), 1);
        let all = results(&link);
        assert_eq!(all.len(), 2);
        assert_eq!(
            (all[1].action_id.as_str(), all[1].status),
            ("a2", ActionStatus::Succeeded as i32)
        );
        assert!(matches!(link.ledger.seen("a2"), Seen::Done(_)));
    }

    #[tokio::test]
    async fn bad_fields_are_answered_or_dropped_never_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let runner = Counting::default();
        let mut link = Link::open(&config(dir.path()), Arc::new(runner.clone())).unwrap();
        // No id: nothing could name the answer.
        link.on_action_request(request("")).unwrap();
        assert_eq!(link.stats.requests_without_id.load(Ordering::Relaxed), 1);
        // An id longer than any the controller makes.
        let long = "x".repeat(MAX_ACTION_ID_BYTES + 1);
        link.on_action_request(request(&long)).unwrap();
        // A kind this host does not allow, and one that is no kind at all.
        link.on_action_request(ActionRequest {
            kind: ActionKind::ReloadNginx as i32,
            ..request("k1")
        })
        .unwrap();
        link.on_action_request(ActionRequest {
            kind: 99,
            ..request("k2")
        })
        .unwrap();
        let answers = results(&link);
        let statuses: Vec<(usize, i32)> = answers
            .iter()
            .map(|r| (r.action_id.len(), r.status))
            .collect();
        assert_eq!(
            statuses,
            [
                (MAX_ACTION_ID_BYTES + 1, ActionStatus::Refused as i32),
                (2, ActionStatus::Refused as i32),
                (2, ActionStatus::Refused as i32),
            ]
        );
        assert!(
            answers[0].message.contains("at most 1024"),
            "{}",
            answers[0].message
        );
        assert_eq!(link.stats.requests_refused.load(Ordering::Relaxed), 3);
        assert_eq!(runner.0.load(Ordering::SeqCst), 0);
        assert_eq!(link.ledger.seen(&long), Seen::New, "not kept");
    }

    #[tokio::test]
    async fn more_running_actions_than_the_cap_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut link = Link::open(&config(dir.path()), Arc::new(Counting::default())).unwrap();
        // Their results are never taken: all stay running.
        for i in 0..MAX_RUNNING_ACTIONS {
            link.on_action_request(request(&format!("r{i}"))).unwrap();
        }
        assert_eq!(link.running.len(), MAX_RUNNING_ACTIONS);
        assert!(results(&link).is_empty());
        link.on_action_request(request("one-more")).unwrap();
        let refused = results(&link);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].status, ActionStatus::Refused as i32);
        assert!(
            refused[0].message.contains("64 actions are running"),
            "{}",
            refused[0].message
        );
    }

    #[test]
    fn open_findings_are_tracked_up_to_the_cap_and_the_rest_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut link = Link::open(&config(dir.path()), Arc::new(Counting::default())).unwrap();
        let finding = |id: String, resolved: bool| Finding {
            id,
            resolved,
            ..Default::default()
        };
        for i in 0..MAX_OPEN_FINDINGS + 10 {
            link.take_finding(Some(finding(format!("f{i}"), false)))
                .unwrap();
        }
        assert_eq!(link.open_findings.len(), MAX_OPEN_FINDINGS);
        assert_eq!(link.stats.open_findings_dropped.load(Ordering::Relaxed), 10);
        // A new revision of one already tracked is not dropped; a resolved one makes room.
        link.take_finding(Some(finding("f0".into(), false)))
            .unwrap();
        assert_eq!(link.stats.open_findings_dropped.load(Ordering::Relaxed), 10);
        link.take_finding(Some(finding("f0".into(), true))).unwrap();
        link.take_finding(Some(finding("new".into(), false)))
            .unwrap();
        assert!(link.open_findings.contains("new"));
        assert_eq!(link.open_findings.len(), MAX_OPEN_FINDINGS);
        // Every finding was still sent.
        assert_eq!(link.outbox.len(), MAX_OPEN_FINDINGS + 13);
    }
}
