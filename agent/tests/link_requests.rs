//! The link against a stand-in controller on real gRPC (loopback): one bad ActionRequest is
//! answered with a refusal and the stream goes on; it never ends the link (and with it the
//! agent, which systemd would restart into the same request, again and again).

// Test helpers panic by design: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use gatemend_agent::config::{AgentConfig, ControllerConfig, OutboxConfig};
use gatemend_agent::link::{ActionRunner, Link, Outcome};
use gatemend_proto::v1::link_server::{Link as LinkService, LinkServer};
use gatemend_proto::v1::{
    Ack, ActionRequest, ActionResult, AgentMessage, ControllerMessage, agent_message,
    controller_message,
};
use gatemend_proto::{ActionKind, ActionStatus};
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

/// A controller that acks everything, hands the test what the agent says and sends the
/// requests the test gives it. Counts the streams opened.
struct StandIn {
    requests: Arc<Mutex<mpsc::Receiver<ActionRequest>>>,
    heard: mpsc::Sender<AgentMessage>,
    streams: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl LinkService for StandIn {
    type StreamStream = ReceiverStream<Result<ControllerMessage, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        self.streams.fetch_add(1, Ordering::SeqCst);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let heard = self.heard.clone();
        let requests = Arc::clone(&self.requests);
        tokio::spawn(async move {
            // One stream at a time takes the test's requests.
            let mut requests = requests.lock_owned().await;
            loop {
                tokio::select! {
                    message = inbound.message() => {
                        let Ok(Some(message)) = message else { return };
                        let id = match &message.body {
                            Some(agent_message::Body::Finding(f)) => Some(f.id.clone()),
                            Some(agent_message::Body::ActionResult(r)) => Some(r.action_id.clone()),
                            _ => None,
                        };
                        if let Some(id) = id {
                            let ack = ControllerMessage {
                                body: Some(controller_message::Body::Ack(Ack {
                                    id,
                                    refused: String::new(),
                                })),
                            };
                            if tx.send(Ok(ack)).await.is_err() {
                                return;
                            }
                        }
                        if heard.send(message).await.is_err() {
                            return;
                        }
                    }
                    Some(request) = requests.recv() => {
                        let out = ControllerMessage {
                            body: Some(controller_message::Body::ActionRequest(request)),
                        };
                        if tx.send(Ok(out)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Counts the actions it runs; each succeeds.
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

fn agent_config(dir: &std::path::Path, endpoint: String) -> AgentConfig {
    AgentConfig {
        host: "web1".into(),
        labels: Default::default(),
        allowed_actions: vec![ActionKind::RestartUnit],
        controller: ControllerConfig {
            endpoints: vec![endpoint],
            tls: None,
            insecure: true,
            heartbeat_secs: 60,
            backoff_initial_ms: 50,
            backoff_max_ms: 500,
            send_rate_per_sec: 1_000,
        },
        outbox: OutboxConfig {
            dir: dir.join("outbox"),
            max_messages: 1_000,
        },
        state_dir: dir.join("state"),
        actions: Default::default(),
        units: Default::default(),
        detect: Default::default(),
    }
}

fn restart(id: &str) -> ActionRequest {
    ActionRequest {
        action_id: id.into(),
        kind: ActionKind::RestartUnit as i32,
        unit: "php8.2-fpm.service".into(),
        ..Default::default()
    }
}

/// The next ActionResult the agent sends (its Hello and heartbeats skipped).
async fn next_result(heard: &mut mpsc::Receiver<AgentMessage>) -> ActionResult {
    let wait = async {
        loop {
            match heard.recv().await {
                Some(AgentMessage {
                    body: Some(agent_message::Body::ActionResult(result)),
                }) => return result,
                Some(_) => {}
                None => panic!("the stand-in controller stopped"),
            }
        }
    };
    // A bound on a hang, not a measured time: the answer comes in milliseconds.
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("no ActionResult: the link ended or is stuck")
}

#[tokio::test]
async fn a_request_the_ledger_cannot_note_is_refused_and_the_same_stream_serves_the_next() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (give, requests) = mpsc::channel(16);
    let (heard_tx, mut heard) = mpsc::channel(256);
    let streams = Arc::new(AtomicUsize::new(0));
    let stand_in = StandIn {
        requests: Arc::new(Mutex::new(requests)),
        heard: heard_tx,
        streams: Arc::clone(&streams),
    };
    tokio::spawn(
        Server::builder()
            .add_service(LinkServer::new(stand_in))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );

    let dir = tempfile::tempdir().unwrap();
    let runner = Counting::default();
    let link = Link::open(
        &agent_config(dir.path(), format!("http://{addr}")),
        Arc::new(runner.clone()),
    )
    .unwrap();
    let stats = link.stats();
    let (_findings, findings_rx) = mpsc::channel(1);
    let running = tokio::spawn(link.run(findings_rx));

    // The ledger's directory replaced by a file: noting an action fails (ENOTDIR), as a file
    // name longer than 255 bytes did for a long host name.
    let ledger = dir.path().join("state/actions");
    std::fs::remove_dir_all(&ledger).unwrap();
    std::fs::write(&ledger, b"").unwrap();
    give.send(restart("a1")).await.unwrap();
    let refused = next_result(&mut heard).await;
    assert_eq!(refused.action_id, "a1");
    assert_eq!(refused.status, ActionStatus::Refused as i32, "{refused:?}");
    assert!(
        refused.message.contains("ledger"),
        "the answer says why: {}",
        refused.message
    );

    // Other bad fields on the same stream: an id too long, a kind this host does not allow.
    give.send(restart(&"x".repeat(5_000))).await.unwrap();
    let refused = next_result(&mut heard).await;
    assert_eq!(refused.status, ActionStatus::Refused as i32, "{refused:?}");
    give.send(ActionRequest {
        kind: ActionKind::FixSocketOwnership as i32,
        ..restart("a2")
    })
    .await
    .unwrap();
    let refused = next_result(&mut heard).await;
    assert_eq!(
        (refused.action_id.as_str(), refused.status),
        ("a2", ActionStatus::Refused as i32)
    );

    // The ledger is back: the next request runs, on the same stream.
    std::fs::remove_file(&ledger).unwrap();
    std::fs::create_dir(&ledger).unwrap();
    give.send(restart("a3")).await.unwrap();
    let done = next_result(&mut heard).await;
    assert_eq!(
        (done.action_id.as_str(), done.status),
        ("a3", ActionStatus::Succeeded as i32)
    );
    assert_eq!(runner.0.load(Ordering::SeqCst), 1, "only a3 ran");
    assert!(!running.is_finished(), "the link is still running");
    assert_eq!(streams.load(Ordering::SeqCst), 1, "the stream never ended");
    assert_eq!(stats.sessions.load(Ordering::Relaxed), 1);
    assert_eq!(stats.requests_refused.load(Ordering::Relaxed), 3);
    assert!(stats.ledger_errors.load(Ordering::Relaxed) >= 1);
}
