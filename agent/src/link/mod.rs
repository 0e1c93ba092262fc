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
use std::time::Duration;

use gatemend_proto::v1::link_client::LinkClient;
use gatemend_proto::v1::{
    ActionRequest, ActionResult, AgentMessage, ControllerMessage, Finding, Heartbeat, Hello,
    agent_message, controller_message,
};
use gatemend_proto::{ActionKind, ActionStatus};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::config::AgentConfig;
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
/// When a request carries no deadline.
const DEFAULT_ACTION_DEADLINE: Duration = Duration::from_secs(120);
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
        let ledger = Ledger::open(&config.state_dir.join("actions"))?;
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
                            sent_unix_ms: unix_ms_now(),
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

    fn on_action_request(&mut self, request: ActionRequest) -> Result<(), LinkError> {
        let id = request.action_id.clone();
        if id.is_empty() {
            tracing::warn!(host = %self.host, "Ignored an action request without an id: no answer can name it.");
            return Ok(());
        }
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
            Seen::New => {
                let kind = ActionKind::try_from(request.kind).unwrap_or(ActionKind::Unspecified);
                if !self.hello_allows(kind) {
                    let result = self.result(
                        &id,
                        Outcome {
                            status: ActionStatus::Refused,
                            steps: Vec::new(),
                            message: format!(
                                "action `{kind}` is not in this host's allowed_actions"
                            ),
                        },
                    );
                    tracing::warn!(host = %self.host, action = %id, kind = %kind, "Refused an action outside the allow-list.");
                    return self.take_result(result);
                }
                self.ledger.start(&id)?;
                self.running.insert(id.clone());
                tracing::info!(host = %self.host, action = %id, kind = %kind, policy = %request.policy, "Running action.");
                let deadline = match request.deadline_ms {
                    0 => DEFAULT_ACTION_DEADLINE,
                    ms => Duration::from_millis(u64::from(ms)),
                };
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
            }
        }
        Ok(())
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
        } else {
            self.open_findings.insert(finding.id.clone());
        }
        self.enqueue(AgentMessage {
            body: Some(agent_message::Body::Finding(finding)),
        })
    }

    fn take_result(&mut self, result: ActionResult) -> Result<(), LinkError> {
        self.running.remove(&result.action_id);
        self.ledger.finish(&result)?;
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
        finished_unix_ms: unix_ms_now(),
    }
}

fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
