//! The `Link` gRPC service: one task per agent stream.
//!
//! Order on a stream: Hello (checked against the client certificate), then findings, action
//! results and heartbeats. Every finding and action result is stored through the
//! [`FindingSink`] first and acked after; a store failure closes the stream without an ack,
//! so the agent keeps the message and resends it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatemend_proto::v1::link_server::{Link, LinkServer};
use gatemend_proto::v1::{
    Ack, ActionResult, AgentMessage, ControllerMessage, Finding, agent_message, controller_message,
};
use gatemend_proto::{ActionKind, Cause, RootCause};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::fleet::{ConnId, Fleet, Hello, Outbound};
use super::limit::{TokenBucket, per_token};
use super::sink::{FindingSink, Record, Stored};

/// The bounds that keep one agent from hurting the controller.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest AgentMessage accepted, encoded; larger ones end the stream with OUT_OF_RANGE.
    pub max_message_bytes: usize,
    /// Sustained messages per second per stream, after Hello.
    pub rate_per_sec: u32,
    /// Messages a stream may send at once above the rate (a resend of the outbox).
    pub burst: u32,
    /// How long a new stream may take to send its Hello.
    pub hello_timeout: Duration,
    /// A stream silent this long (no heartbeat, nothing) is closed and its host marked offline.
    pub heartbeat_timeout: Duration,
    /// Acks and action requests waiting to be written to one agent.
    pub outbound_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 256 * 1024,
            rate_per_sec: 1_000,
            burst: 2_000,
            hello_timeout: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(30),
            outbound_queue: 1_024,
        }
    }
}

/// How an agent proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAuth {
    /// The client certificate (verified against the CA during the handshake) must be valid for
    /// the Hello's host as a DNS subject alternative name.
    Certificate,
    /// `--insecure`: plain text, the Hello's host is believed.
    Insecure,
}

/// What the ingest stage hands to the decision stage, in the order it happened on each stream.
///
/// Every event goes through one bounded queue: when the decision stage falls behind, the
/// streams wait (and their agents keep the unacked messages in their outboxes) rather than
/// losing an event.
#[derive(Debug, Clone)]
pub enum Ingested {
    /// A host said Hello: it is online, with these labels.
    Online {
        host: String,
        labels: BTreeMap<String, String>,
    },
    /// A host's stream ended or fell silent.
    Offline { host: String },
    /// A new finding (or a new revision of one), already stored; `received` is when it
    /// arrived (the decision latency is measured from there).
    Finding {
        host: String,
        finding: Finding,
        received: std::time::Instant,
    },
    /// An action's result, already stored.
    ActionResult { host: String, result: ActionResult },
}

/// Counters an operator (and `/metrics`, later) reads.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub findings_new: AtomicU64,
    pub findings_duplicate: AtomicU64,
    pub action_results: AtomicU64,
    pub refused: AtomicU64,
    /// Events the decision stage could not take because it had stopped.
    pub forward_dropped: AtomicU64,
    pub rate_limited: AtomicU64,
    pub streams_refused: AtomicU64,
}

/// Shared by every stream.
#[derive(Debug)]
struct Shared<S> {
    fleet: Fleet,
    sink: Arc<S>,
    forward: mpsc::Sender<Ingested>,
    limits: Limits,
    auth: PeerAuth,
    stats: Arc<IngestStats>,
}

/// The ingest stage's gRPC service.
#[derive(Debug)]
pub struct LinkService<S> {
    shared: Arc<Shared<S>>,
}

impl<S: FindingSink> LinkService<S> {
    /// `forward` is the bounded queue toward the decision stage.
    pub fn new(
        fleet: Fleet,
        sink: Arc<S>,
        forward: mpsc::Sender<Ingested>,
        limits: Limits,
        auth: PeerAuth,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                fleet,
                sink,
                forward,
                limits,
                auth,
                stats: Arc::default(),
            }),
        }
    }

    pub fn stats(&self) -> Arc<IngestStats> {
        Arc::clone(&self.shared.stats)
    }

    /// The tonic service, with the message size limit applied.
    pub fn into_server(self) -> LinkServer<Self> {
        let max = self.shared.limits.max_message_bytes;
        LinkServer::new(self).max_decoding_message_size(max)
    }
}

#[tonic::async_trait]
impl<S: FindingSink> Link for LinkService<S> {
    type StreamStream = ReceiverStream<Result<ControllerMessage, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let shared = Arc::clone(&self.shared);
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let certs = request.peer_certs();
        let mut inbound = request.into_inner();
        let hello = match accept_hello(&shared, &mut inbound, certs.as_deref()).await {
            Ok(hello) => hello,
            Err(status) => {
                shared.stats.streams_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = %peer, code = ?status.code(), reason = status.message(), "Refused an agent stream.");
                return Err(status);
            }
        };
        let (tx, rx) = mpsc::channel(shared.limits.outbound_queue);
        let host = hello.host.clone();
        let labels = hello.labels.clone();
        let conn = shared.fleet.connect(hello, tx.clone(), Instant::now());
        tracing::info!(host = %host, peer = %peer, "Agent connected.");
        forward(
            &shared,
            Ingested::Online {
                host: host.clone(),
                labels,
            },
        )
        .await;
        tokio::spawn(session(shared, host, conn, inbound, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn accept_hello(
    shared: &Shared<impl FindingSink>,
    inbound: &mut Streaming<AgentMessage>,
    certs: Option<&Vec<CertificateDer<'static>>>,
) -> Result<Hello, Status> {
    let first = tokio::time::timeout(shared.limits.hello_timeout, inbound.message())
        .await
        .map_err(|_| Status::deadline_exceeded("no Hello within the hello timeout"))??;
    let hello = match first.and_then(|m| m.body) {
        Some(agent_message::Body::Hello(hello)) => hello,
        Some(_) => {
            return Err(Status::failed_precondition(
                "the first message on a stream must be Hello",
            ));
        }
        None => {
            return Err(Status::invalid_argument(
                "stream ended or empty message before Hello",
            ));
        }
    };
    let name = ServerName::try_from(hello.host.as_str()).map_err(|_| {
        Status::invalid_argument(format!(
            "Hello host `{}` is not a valid host name",
            hello.host
        ))
    })?;
    if shared.auth == PeerAuth::Certificate {
        let leaf = certs
            .and_then(|c| c.first())
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let cert = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| Status::unauthenticated(format!("unreadable client certificate: {e}")))?;
        cert.verify_is_valid_for_subject_name(&name).map_err(|_| {
            Status::permission_denied(format!(
                "Hello host `{}` does not match the client certificate's DNS name",
                hello.host
            ))
        })?;
    }
    let mut allowed_actions = Vec::with_capacity(hello.allowed_actions.len());
    for value in hello.allowed_actions {
        match ActionKind::try_from(value) {
            Ok(kind) if kind != ActionKind::Unspecified => allowed_actions.push(kind),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "Hello lists unknown action kind {value}"
                )));
            }
        }
    }
    Ok(Hello {
        host: hello.host,
        labels: hello.labels.into_iter().collect::<BTreeMap<_, _>>(),
        agent_version: hello.agent_version,
        allowed_actions,
    })
}

/// Reads one agent's stream until it ends, fails, floods or falls silent.
async fn session<S: FindingSink>(
    shared: Arc<Shared<S>>,
    host: String,
    conn: ConnId,
    mut inbound: Streaming<AgentMessage>,
    tx: Outbound,
) {
    let limits = &shared.limits;
    let mut bucket = TokenBucket::new(limits.rate_per_sec, limits.burst, Instant::now());
    let end: Option<Status> = loop {
        let next = tokio::select! {
            next = tokio::time::timeout(limits.heartbeat_timeout, inbound.message()) => next,
            () = tx.closed() => break None,
        };
        let message = match next {
            Err(_) => {
                tracing::warn!(host = %host, timeout_s = limits.heartbeat_timeout.as_secs(), "Agent fell silent; closing its stream.");
                break Some(Status::deadline_exceeded(
                    "no heartbeat within the heartbeat timeout",
                ));
            }
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) => break None,
            Ok(Err(status)) => {
                // Oversized messages land here as OUT_OF_RANGE from tonic's decoder.
                tracing::warn!(host = %host, code = ?status.code(), reason = status.message(), "Agent stream failed.");
                // Tell the agent why, when it still listens (an oversized message, say).
                break Some(status);
            }
        };
        let now = Instant::now();
        if !bucket.take(now) {
            shared.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(host = %host, rate_per_sec = limits.rate_per_sec, burst = limits.burst, "Agent exceeded its rate limit; closing its stream.");
            break Some(Status::resource_exhausted(format!(
                "rate limit: at most {} messages/s (burst {}); retry after {:?}",
                limits.rate_per_sec,
                limits.burst,
                per_token(limits.rate_per_sec)
            )));
        }
        let body = message.body;
        let heartbeat_ms = match &body {
            Some(agent_message::Body::Heartbeat(h)) => Some(h.sent_unix_ms),
            _ => None,
        };
        shared.fleet.heard(&host, now, heartbeat_ms);
        let reply = match body {
            Some(agent_message::Body::Finding(finding)) => {
                on_finding(&shared, &host, finding).await
            }
            Some(agent_message::Body::ActionResult(result)) => {
                on_action_result(&shared, &host, result).await
            }
            Some(agent_message::Body::Heartbeat(_)) => Ok(None),
            Some(agent_message::Body::Hello(_)) => Err(Status::failed_precondition(
                "Hello may only be the first message",
            )),
            None => Err(Status::invalid_argument("empty AgentMessage")),
        };
        match reply {
            Ok(Some(ack)) => {
                let message = ControllerMessage {
                    body: Some(controller_message::Body::Ack(ack)),
                };
                if tx.send(Ok(message)).await.is_err() {
                    break None;
                }
            }
            Ok(None) => {}
            Err(status) => {
                tracing::warn!(host = %host, code = ?status.code(), reason = status.message(), "Closing agent stream.");
                break Some(status);
            }
        }
    };
    if let Some(status) = end {
        // Best effort: the agent may already be gone.
        let _ = tx.try_send(Err(status));
    }
    if shared.fleet.disconnect(&host, conn) {
        tracing::info!(host = %host, "Agent offline.");
        forward(&shared, Ingested::Offline { host }).await;
    }
}

/// Hands an event to the decision stage, waiting while its queue is full.
async fn forward<S>(shared: &Shared<S>, event: Ingested) {
    if shared.forward.send(event).await.is_err() {
        let dropped = shared.stats.forward_dropped.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::error!(
            dropped,
            "The decision stage has stopped; event stored but not decided."
        );
    }
}

fn refused(id: String, reason: String) -> Ack {
    Ack {
        id,
        refused: reason,
    }
}

/// Validates, stores, then acks. `Err` closes the stream (store failure): no ack is sent.
async fn on_finding<S: FindingSink>(
    shared: &Shared<S>,
    host: &str,
    finding: Finding,
) -> Result<Option<Ack>, Status> {
    let received = std::time::Instant::now();
    if let Some(reason) = invalid_finding(host, &finding) {
        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(host = %host, finding = %finding.id, reason = %reason, "Refused a finding.");
        return Ok(Some(refused(finding.id, reason)));
    }
    let record = Record::Finding {
        host: host.to_owned(),
        finding,
    };
    let stored = store(shared, host, &record).await?;
    let Record::Finding { finding, .. } = record else {
        return Ok(None);
    };
    let ack = Ack {
        id: finding.id.clone(),
        refused: String::new(),
    };
    match stored {
        Stored::Duplicate => {
            shared
                .stats
                .findings_duplicate
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(host = %host, finding = %finding.id, revision = finding.revision, "Duplicate finding acked again.");
        }
        Stored::New => {
            shared.stats.findings_new.fetch_add(1, Ordering::Relaxed);
            shared.fleet.finding(host, &finding);
            forward(
                shared,
                Ingested::Finding {
                    host: host.to_owned(),
                    finding,
                    received,
                },
            )
            .await;
        }
    }
    Ok(Some(ack))
}

async fn on_action_result<S: FindingSink>(
    shared: &Shared<S>,
    host: &str,
    result: ActionResult,
) -> Result<Option<Ack>, Status> {
    if result.action_id.is_empty() {
        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        return Ok(Some(refused(
            String::new(),
            "action result without an action_id".into(),
        )));
    }
    if result.host != host {
        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        let reason = format!(
            "action result for host `{}` on the stream of `{host}`",
            result.host
        );
        tracing::warn!(host = %host, action = %result.action_id, reason = %reason, "Refused an action result.");
        return Ok(Some(refused(result.action_id, reason)));
    }
    let id = result.action_id.clone();
    let record = Record::ActionResult {
        host: host.to_owned(),
        result,
    };
    if store(shared, host, &record).await? == Stored::New {
        shared.stats.action_results.fetch_add(1, Ordering::Relaxed);
        tracing::info!(host = %host, action = %id, "Action result stored.");
        if let Record::ActionResult { result, .. } = record {
            forward(
                shared,
                Ingested::ActionResult {
                    host: host.to_owned(),
                    result,
                },
            )
            .await;
        }
    }
    Ok(Some(Ack {
        id,
        refused: String::new(),
    }))
}

async fn store<S: FindingSink>(
    shared: &Shared<S>,
    host: &str,
    record: &Record,
) -> Result<Stored, Status> {
    shared.sink.store(record).await.map_err(|e| {
        tracing::error!(host = %host, error = %e, "Could not store a record; closing the stream so the agent resends it.");
        Status::unavailable("the controller could not store the message; resend later")
    })
}

/// Why a finding is refused, or None when it is acceptable.
fn invalid_finding(host: &str, finding: &Finding) -> Option<String> {
    if finding.id.is_empty() {
        return Some("finding without an id".into());
    }
    if finding.host != host {
        return Some(format!(
            "finding for host `{}` on the stream of `{host}`",
            finding.host
        ));
    }
    match Cause::try_from(finding.cause) {
        Ok(Cause::Unspecified) | Err(_) => {
            return Some(format!("unknown cause id {}", finding.cause));
        }
        Ok(_) => {}
    }
    if RootCause::try_from(finding.root_cause).is_err() {
        return Some(format!("unknown root cause id {}", finding.root_cause));
    }
    None
}
