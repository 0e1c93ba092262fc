//! Real gRPC on loopback between the ingest service and the agent's link library, in one
//! process: the stream's rules (Hello first, limits, refusals) and action idempotency.

// Test helpers panic by design: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use gatemend_agent::config::{AgentConfig, ControllerConfig, OutboxConfig};
use gatemend_agent::link::{ActionRunner, Link, LinkStats, Outcome, RefuseAll};
use gatemend_controller::ingest::{
    self, Fleet, Forwarded, Limits, LinkService, MemorySink, PeerAuth, Record,
};
use gatemend_proto::v1::link_client::LinkClient;
use gatemend_proto::v1::{
    ActionRequest, AgentMessage, ControllerMessage, Finding, Heartbeat, Hello, agent_message,
    controller_message,
};
use gatemend_proto::{ActionKind, ActionStatus, Cause};
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

struct Controller {
    addr: SocketAddr,
    fleet: Fleet,
    sink: Arc<MemorySink>,
    _findings: mpsc::Receiver<Forwarded>,
}

async fn controller(limits: Limits) -> Controller {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fleet = Fleet::new();
    let sink = Arc::new(MemorySink::recording());
    let (forward, findings) = mpsc::channel(10_000);
    let service = LinkService::new(
        fleet.clone(),
        Arc::clone(&sink),
        forward,
        limits,
        PeerAuth::Insecure,
    );
    tokio::spawn(ingest::serve(
        listener,
        None,
        service,
        std::future::pending(),
    ));
    Controller {
        addr,
        fleet,
        sink,
        _findings: findings,
    }
}

fn agent_config(dir: &std::path::Path, endpoint: &str) -> AgentConfig {
    AgentConfig {
        host: "web1".into(),
        labels: [("env".to_owned(), "test".to_owned())].into(),
        allowed_actions: vec![ActionKind::RestartUnit],
        controller: ControllerConfig {
            endpoints: vec![endpoint.to_owned()],
            tls: None,
            insecure: true,
            heartbeat_secs: 1,
            backoff_initial_ms: 50,
            backoff_max_ms: 500,
            send_rate_per_sec: 2_000,
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

fn finding(id: &str, revision: u64) -> Finding {
    Finding {
        id: id.into(),
        revision,
        host: "web1".into(),
        cause: Cause::UpstreamSocketMissing as i32,
        unit: "php8.2-fpm.service".into(),
        count: revision,
        ..Default::default()
    }
}

#[track_caller]
fn eventually(what: &str, mut check: impl FnMut() -> bool) -> impl Future<Output = ()> {
    let caller = std::panic::Location::caller();
    let what = what.to_owned();
    async move {
        for _ in 0..400 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{caller}: timed out waiting for {what}");
    }
}

fn findings_in(sink: &MemorySink) -> Vec<(String, u64)> {
    sink.records()
        .into_iter()
        .filter_map(|r| match r {
            Record::Finding { finding, .. } => Some((finding.id, finding.revision)),
            Record::ActionResult { .. } => None,
        })
        .collect()
}

#[tokio::test]
async fn findings_reach_the_controller_and_the_fleet_shows_the_host() {
    let ctl = controller(Limits::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let link = Link::open(
        &agent_config(dir.path(), &format!("http://{}", ctl.addr)),
        Arc::new(RefuseAll),
    )
    .unwrap();
    let stats = link.stats();
    let (tx, rx) = mpsc::channel(100);
    tokio::spawn(link.run(rx));
    // Two revisions of one finding: both arrive, matched to their acks in order.
    for (id, revision) in [("web1/f1", 1), ("web1/f2", 1), ("web1/f1", 2)] {
        tx.send(finding(id, revision)).await.unwrap();
    }
    eventually("every finding acked", || {
        stats.acked.load(Ordering::Relaxed) == 3 && stats.pending.load(Ordering::Relaxed) == 0
    })
    .await;
    assert_eq!(
        findings_in(&ctl.sink),
        [
            ("web1/f1".to_owned(), 1),
            ("web1/f2".to_owned(), 1),
            ("web1/f1".to_owned(), 2)
        ]
    );
    let host = ctl.fleet.host("web1").unwrap();
    assert!(host.online);
    assert_eq!(host.labels.get("env").map(String::as_str), Some("test"));
    assert_eq!(host.allowed_actions, [ActionKind::RestartUnit]);
    assert_eq!(host.open_findings.len(), 2);
    eventually("a heartbeat", || {
        ctl.fleet
            .host("web1")
            .unwrap()
            .last_heartbeat_unix_ms
            .is_some()
    })
    .await;
}

#[tokio::test]
async fn with_ack_when_decided_a_finding_stays_in_the_outbox_until_its_decision_commits() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sink = Arc::new(MemorySink::recording());
    let (forward, mut events) = mpsc::channel(10_000);
    let (decided, decided_rx) = tokio::sync::watch::channel(0u64);
    let service = LinkService::new(
        Fleet::new(),
        Arc::clone(&sink),
        forward,
        Limits::default(),
        PeerAuth::Insecure,
    )
    .ack_when_decided(decided_rx);
    tokio::spawn(ingest::serve(
        listener,
        None,
        service,
        std::future::pending(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let link = Link::open(
        &agent_config(dir.path(), &format!("http://{addr}")),
        Arc::new(RefuseAll),
    )
    .unwrap();
    let stats = link.stats();
    let (tx, rx) = mpsc::channel(100);
    tokio::spawn(link.run(rx));
    tx.send(finding("web1/f1", 1)).await.unwrap();
    tx.send(finding("web1/f2", 1)).await.unwrap();
    // Online, then the two findings, numbered in queue order.
    let mut seqs = Vec::new();
    while seqs.len() < 3 {
        seqs.push(events.recv().await.unwrap().seq);
    }
    assert_eq!(seqs, [1, 2, 3]);
    // Stored, forwarded, not decided: not acked, still in the agent's outbox.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stats.acked.load(Ordering::Relaxed), 0);
    assert_eq!(stats.pending.load(Ordering::Relaxed), 2);
    // The first one decided: its ack alone leaves.
    decided.send_replace(2);
    eventually("f1 acked", || stats.acked.load(Ordering::Relaxed) == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stats.acked.load(Ordering::Relaxed), 1);
    decided.send_replace(3);
    eventually("f2 acked", || {
        stats.acked.load(Ordering::Relaxed) == 2 && stats.pending.load(Ordering::Relaxed) == 0
    })
    .await;
}

/// A raw stream, for what the link library would never send.
async fn raw_stream(
    addr: SocketAddr,
    first: Vec<AgentMessage>,
) -> (
    mpsc::Sender<AgentMessage>,
    Result<tonic::Streaming<ControllerMessage>, tonic::Status>,
) {
    let mut client = LinkClient::connect(format!("http://{addr}")).await.unwrap();
    let (tx, rx) = mpsc::channel(10_000);
    for m in first {
        tx.send(m).await.unwrap();
    }
    let response = client
        .stream(ReceiverStream::new(rx))
        .await
        .map(|r| r.into_inner());
    (tx, response)
}

fn hello(host: &str) -> AgentMessage {
    AgentMessage {
        body: Some(agent_message::Body::Hello(Hello {
            host: host.into(),
            ..Default::default()
        })),
    }
}

fn wrap(finding: Finding) -> AgentMessage {
    AgentMessage {
        body: Some(agent_message::Body::Finding(finding)),
    }
}

#[tokio::test]
async fn a_message_before_hello_is_refused() {
    let ctl = controller(Limits::default()).await;
    let beat = AgentMessage {
        body: Some(agent_message::Body::Heartbeat(Heartbeat::default())),
    };
    let (_tx, response) = raw_stream(ctl.addr, vec![beat]).await;
    let status = response.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("must be Hello"), "{status:?}");
    assert!(ctl.fleet.hosts().is_empty());
}

#[tokio::test]
async fn an_unknown_cause_or_another_hosts_finding_is_acked_as_refused() {
    let ctl = controller(Limits::default()).await;
    let mut unknown = finding("web1/f1", 1);
    unknown.cause = 999;
    let mut foreign = finding("web1/f2", 1);
    foreign.host = "web2".into();
    let (_tx, response) =
        raw_stream(ctl.addr, vec![hello("web1"), wrap(unknown), wrap(foreign)]).await;
    let mut inbound = response.unwrap();
    let mut refusals = Vec::new();
    for _ in 0..2 {
        match inbound.message().await.unwrap().and_then(|m| m.body) {
            Some(controller_message::Body::Ack(ack)) => refusals.push((ack.id, ack.refused)),
            other => panic!("expected an ack, got {other:?}"),
        }
    }
    assert_eq!(refusals[0].0, "web1/f1");
    assert!(
        refusals[0].1.contains("unknown cause id 999"),
        "{refusals:?}"
    );
    assert!(
        refusals[1].1.contains("finding for host `web2`"),
        "{refusals:?}"
    );
    assert!(findings_in(&ctl.sink).is_empty());
}

#[tokio::test]
async fn a_flood_gets_resource_exhausted() {
    let ctl = controller(Limits {
        rate_per_sec: 10,
        burst: 20,
        ..Limits::default()
    })
    .await;
    let mut messages = vec![hello("web1")];
    messages.extend((0..100).map(|i| wrap(finding(&format!("f{i}"), 1))));
    let (_tx, response) = raw_stream(ctl.addr, messages).await;
    let mut inbound = response.unwrap();
    let mut acks = 0;
    let status = loop {
        match inbound.message().await {
            Ok(Some(_)) => acks += 1,
            Ok(None) => panic!("stream ended without a status after {acks} acks"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("rate limit"), "{status:?}");
    assert!(
        (20..=25).contains(&acks),
        "the burst passes, then the flood stops: {acks}"
    );
}

#[tokio::test]
async fn an_oversized_message_ends_the_stream_with_out_of_range() {
    let ctl = controller(Limits {
        max_message_bytes: 4 * 1024,
        ..Limits::default()
    })
    .await;
    let mut big = finding("web1/f1", 1);
    big.root_cause_detail = "x".repeat(10 * 1024);
    let (_tx, response) = raw_stream(ctl.addr, vec![hello("web1"), wrap(big)]).await;
    let status = response.unwrap().message().await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(findings_in(&ctl.sink).is_empty());
}

/// Counts how often an action really ran.
#[derive(Debug, Default, Clone)]
struct Counting(Arc<AtomicUsize>);

impl ActionRunner for Counting {
    fn run(&self, _request: ActionRequest) -> BoxFuture<'static, Outcome> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            Outcome {
                status: ActionStatus::Succeeded,
                steps: Vec::new(),
                message: "restarted".into(),
            }
        })
    }
}

/// A TCP relay the test can cut, as a broken network would.
struct Relay {
    addr: SocketAddr,
    cut: mpsc::Sender<()>,
}

async fn relay(upstream: SocketAddr) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cut, mut cuts) = mpsc::channel::<()>(4);
    tokio::spawn(async move {
        let mut links = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((mut down, _)) = accepted else { continue };
                    links.spawn(async move {
                        if let Ok(mut up) = TcpStream::connect(upstream).await {
                            let _ = copy_bidirectional(&mut down, &mut up).await;
                        }
                    });
                }
                Some(()) = cuts.recv() => links.abort_all(),
            }
        }
    });
    Relay { addr, cut }
}

#[tokio::test]
async fn an_action_request_delivered_again_after_a_reconnect_runs_once() {
    let ctl = controller(Limits::default()).await;
    let relay = relay(ctl.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let counting = Counting::default();
    let link = Link::open(
        &agent_config(dir.path(), &format!("http://{}", relay.addr)),
        Arc::new(counting.clone()),
    )
    .unwrap();
    let stats: Arc<LinkStats> = link.stats();
    let (_tx, rx) = mpsc::channel(1);
    tokio::spawn(link.run(rx));
    eventually("web1 online", || {
        ctl.fleet.host("web1").is_some_and(|h| h.online)
    })
    .await;

    let request = ActionRequest {
        action_id: "web1/act-1".into(),
        finding_id: "web1/f1".into(),
        kind: ActionKind::RestartUnit as i32,
        unit: "php8.2-fpm.service".into(),
        ..Default::default()
    };
    ctl.fleet.send_action("web1", request.clone()).unwrap();
    eventually("the first result acked", || {
        stats.acked.load(Ordering::Relaxed) == 1
    })
    .await;

    relay.cut.send(()).await.unwrap();
    eventually("a second session", || {
        stats.sessions.load(Ordering::Relaxed) == 2
            && ctl.fleet.host("web1").is_some_and(|h| h.online)
    })
    .await;
    ctl.fleet.send_action("web1", request).unwrap();
    eventually("the repeated answer acked", || {
        stats.acked.load(Ordering::Relaxed) == 2
    })
    .await;

    assert_eq!(counting.0.load(Ordering::SeqCst), 1, "the action ran once");
    let results: Vec<_> = ctl
        .sink
        .records()
        .into_iter()
        .filter_map(|r| match r {
            Record::ActionResult { result, .. } => Some(result),
            Record::Finding { .. } => None,
        })
        .collect();
    assert_eq!(
        results.len(),
        1,
        "the repeated answer is the same record: {results:?}"
    );
    assert_eq!(results[0].message, "restarted");

    // The agent's own allow-list is checked too: a kind it does not allow is refused there.
    let error = ctl.fleet.send_action(
        "web1",
        ActionRequest {
            action_id: "web1/act-2".into(),
            kind: ActionKind::ReloadNginx as i32,
            ..Default::default()
        },
    );
    assert!(
        error.is_err(),
        "the controller never asks for an action the host does not allow"
    );
}
