//! The `Link` gRPC service: one task per agent stream.
//!
//! Order on a stream: Hello (checked against the client certificate), then findings, action
//! results and heartbeats. Every finding and action result is stored through the
//! [`FindingSink`] first and acked after; a store failure closes the stream without an ack,
//! so the agent keeps the message and resends it. With [`LinkService::ack_when_decided`], an
//! ack also waits until the decision stage has committed every event forwarded up to it: a
//! controller that dies before deciding leaves the message in the agent's outbox, and the next
//! controller gets it. Acks leave in the order the messages came (the agent matches them so).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatemend_proto::v1::link_server::{Link, LinkServer};
use gatemend_proto::v1::{
    Ack, ActionResult, AgentMessage, ControllerMessage, Finding, agent_message, controller_message,
};
use gatemend_proto::{ActionKind, Cause, RootCause};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::sync::{mpsc, watch};
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
    /// Acks one stream holds while they wait for the decision stage (which stops while the
    /// database is lost). At this many the stream is not read until some leave: the agent
    /// keeps the rest in its outbox.
    pub waiting_acks: usize,
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
            waiting_acks: 4_096,
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

/// An event numbered in the order it entered the decision stage's queue: the decision stage
/// says how far it has committed by publishing the last number it decided.
#[derive(Debug, Clone)]
pub struct Forwarded {
    /// 1, 2, ... in queue order; 0 for events not numbered (the binary's silence sweep).
    pub seq: u64,
    pub event: Ingested,
}

/// What the ingest stage hands to the decision stage, in the order it happened on each stream.
///
/// Every event goes through one bounded queue: when the decision stage falls behind, the
/// streams wait (and their agents keep the unacked messages in their outboxes) rather than
/// losing an event.
#[derive(Debug, Clone)]
// A finding is most of what flows here; boxing it would allocate once per message to save
// the few hundred bytes the other variants leave unused in a queue slot.
#[allow(clippy::large_enum_variant)]
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
    /// Times a stream stopped being read because its acks waiting for decisions were at the
    /// cap ([`Limits::waiting_acks`]).
    pub acks_backpressure: AtomicU64,
}

/// Shared by every stream.
#[derive(Debug)]
struct Shared<S> {
    fleet: Fleet,
    sink: Arc<S>,
    forward: mpsc::Sender<Forwarded>,
    /// The number of the last event forwarded; held while forwarding, so that numbers follow
    /// the queue's order.
    order: tokio::sync::Mutex<u64>,
    /// The number of the last event the decision stage committed, when acks wait for it.
    decided: Option<watch::Receiver<u64>>,
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
        forward: mpsc::Sender<Forwarded>,
        limits: Limits,
        auth: PeerAuth,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                fleet,
                sink,
                forward,
                order: tokio::sync::Mutex::new(0),
                decided: None,
                limits,
                auth,
                stats: Arc::default(),
            }),
        }
    }

    pub fn stats(&self) -> Arc<IngestStats> {
        Arc::clone(&self.shared.stats)
    }

    /// Acks wait until `decided` (the number of the last event the decision stage committed)
    /// reaches the events forwarded before them. Call before serving.
    #[must_use]
    pub fn ack_when_decided(mut self, decided: watch::Receiver<u64>) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.decided = Some(decided);
        }
        self
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
        forward(&shared, |_| Ingested::Online {
            host: host.clone(),
            labels,
        })
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
    // One host, one key: names are compared and kept lowercase (DNS names are
    // case-insensitive, and so is the certificate check below).
    let host = hello.host.to_ascii_lowercase();
    let name = ServerName::try_from(host.as_str()).map_err(|_| {
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
        host,
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
    let mut decided = shared.decided.clone();
    // Acks waiting for the decision stage, in the order their messages came.
    let mut waiting: VecDeque<Reply> = VecDeque::new();
    let end: Option<Status> = loop {
        let room = waiting.len() < limits.waiting_acks;
        if !room {
            let times = shared
                .stats
                .acks_backpressure
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            if times.is_power_of_two() {
                tracing::warn!(host = %host, waiting = waiting.len(), times, "Stopped reading an agent's stream until the decision stage catches up.");
            }
        }
        let next = tokio::select! {
            next = tokio::time::timeout(limits.heartbeat_timeout, inbound.message()), if room => next,
            () = tx.closed() => break None,
            () = decided_moved(&mut decided), if !waiting.is_empty() => {
                if send_ready(&mut waiting, decided.as_ref(), &tx).await.is_err() {
                    break None;
                }
                continue;
            }
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
            Ok(Some(reply)) => {
                waiting.push_back(reply);
                if send_ready(&mut waiting, decided.as_ref(), &tx)
                    .await
                    .is_err()
                {
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
        forward(&shared, |_| Ingested::Offline { host }).await;
    }
}

/// Sends the waiting acks whose events the decision stage has committed, oldest first.
async fn send_ready(
    waiting: &mut VecDeque<Reply>,
    decided: Option<&watch::Receiver<u64>>,
    tx: &Outbound,
) -> Result<(), ()> {
    let committed = decided.map_or(u64::MAX, |d| *d.borrow());
    while waiting.front().is_some_and(|r| r.after <= committed) {
        let Some(reply) = waiting.pop_front() else {
            break;
        };
        let message = ControllerMessage {
            body: Some(controller_message::Body::Ack(reply.ack)),
        };
        tx.send(Ok(message)).await.map_err(|_| ())?;
    }
    Ok(())
}

/// Returns when the decision stage has committed more; never when acks do not wait for it (or
/// it has stopped: then nothing more is acked and the agents keep their messages).
async fn decided_moved(decided: &mut Option<watch::Receiver<u64>>) {
    let moved = match decided {
        Some(rx) => rx.changed().await.is_ok(),
        None => false,
    };
    if !moved {
        std::future::pending::<()>().await;
    }
}

/// Hands an event to the decision stage, waiting while its queue is full; returns its number.
async fn forward<S>(shared: &Shared<S>, event: impl FnOnce(u64) -> Ingested) -> u64 {
    let mut last = shared.order.lock().await;
    let seq = *last + 1;
    *last = seq;
    let forwarded = Forwarded {
        seq,
        event: event(seq),
    };
    if shared.forward.send(forwarded).await.is_err() {
        let dropped = shared.stats.forward_dropped.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::error!(
            dropped,
            "The decision stage has stopped; event stored but not decided."
        );
    }
    seq
}

/// The number of the last event forwarded: what a message that forwards nothing (a duplicate)
/// waits for before its ack.
async fn forwarded<S>(shared: &Shared<S>) -> u64 {
    *shared.order.lock().await
}

/// An ack, and the event number the decision stage must have committed before it is sent.
#[derive(Debug)]
struct Reply {
    ack: Ack,
    after: u64,
}

impl Reply {
    fn now(ack: Ack) -> Option<Reply> {
        Some(Reply { ack, after: 0 })
    }
}

fn refused(id: String, reason: String) -> Ack {
    Ack {
        id,
        refused: reason,
    }
}

/// Validates, stores, forwards, then acks. `Err` closes the stream (store failure): no ack is
/// sent.
async fn on_finding<S: FindingSink>(
    shared: &Shared<S>,
    host: &str,
    finding: Finding,
) -> Result<Option<Reply>, Status> {
    let received = std::time::Instant::now();
    if let Some(reason) = invalid_finding(host, &finding) {
        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(host = %host, finding = %finding.id, reason = %reason, "Refused a finding.");
        return Ok(Reply::now(refused(finding.id, reason)));
    }
    let finding = Finding {
        host: host.to_owned(),
        ..finding
    };
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
    let after = match stored {
        Stored::Duplicate => {
            shared
                .stats
                .findings_duplicate
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(host = %host, finding = %finding.id, revision = finding.revision, "Duplicate finding acked again.");
            // Its first copy may still wait for its decision.
            forwarded(shared).await
        }
        Stored::New => {
            shared.stats.findings_new.fetch_add(1, Ordering::Relaxed);
            shared.fleet.finding(host, &finding);
            forward(shared, |_| Ingested::Finding {
                host: host.to_owned(),
                finding,
                received,
            })
            .await
        }
    };
    Ok(Some(Reply { ack, after }))
}

async fn on_action_result<S: FindingSink>(
    shared: &Shared<S>,
    host: &str,
    result: ActionResult,
) -> Result<Option<Reply>, Status> {
    if result.action_id.is_empty() {
        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        return Ok(Reply::now(refused(
            String::new(),
            "action result without an action_id".into(),
        )));
    }
    if !result.host.eq_ignore_ascii_case(host) {
        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        let reason = format!(
            "action result for host `{}` on the stream of `{host}`",
            result.host
        );
        tracing::warn!(host = %host, action = %result.action_id, reason = %reason, "Refused an action result.");
        return Ok(Reply::now(refused(result.action_id, reason)));
    }
    if !owned_by(&result.action_id, host) {
        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        let reason = format!(
            "action id `{}` does not begin with the stream's host `{host}/`: no action of \
             another host can be answered",
            truncate(&result.action_id, 200)
        );
        tracing::warn!(host = %host, reason = %reason, "Refused an action result.");
        return Ok(Reply::now(refused(result.action_id, reason)));
    }
    let id = result.action_id.clone();
    let record = Record::ActionResult {
        host: host.to_owned(),
        result: ActionResult {
            host: host.to_owned(),
            ..result
        },
    };
    let after = match (store(shared, host, &record).await?, record) {
        (Stored::New, Record::ActionResult { result, .. }) => {
            shared.stats.action_results.fetch_add(1, Ordering::Relaxed);
            tracing::info!(host = %host, action = %id, "Action result stored.");
            forward(shared, |_| Ingested::ActionResult {
                host: host.to_owned(),
                result,
            })
            .await
        }
        _ => forwarded(shared).await,
    };
    Ok(Some(Reply {
        ack: Ack {
            id,
            refused: String::new(),
        },
        after,
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
    if !finding.host.eq_ignore_ascii_case(host) {
        return Some(format!(
            "finding for host `{}` on the stream of `{host}`",
            finding.host
        ));
    }
    // Every key downstream (dedup, chains, action ids, approvals) starts from the finding id:
    // it must be this host's, so no agent can name another host's finding.
    if !owned_by(&finding.id, host) {
        return Some(format!(
            "finding id `{}` does not begin with its host `{host}/`",
            truncate(&finding.id, 200)
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

/// Whether `id` (a finding id, or an action id derived from one) names `host` first:
/// `HOST/...`, the host compared case-insensitively.
fn owned_by(id: &str, host: &str) -> bool {
    id.get(..host.len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(host))
        && id.as_bytes().get(host.len()) == Some(&b'/')
}

/// At most `max` bytes of `text` (cut at a character boundary), for messages that quote what
/// an agent sent.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
