//! The real binaries as separate processes, over real gRPC with mutual TLS on loopback:
//! `gatemend pki`, `gatemend-controller` (killed with SIGKILL and restarted), and the agent's link library standing in for the detector that will feed it findings.

// Test helpers panic by design: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gatemend_agent::config::{AgentConfig, ControllerConfig, OutboxConfig, TlsConfig};
use gatemend_agent::link::{Link, RefuseAll};
use gatemend_controller::ingest::FileSink;
use gatemend_controller::ingest::sink::RecordKind;
use gatemend_proto::Cause;
use gatemend_proto::v1::link_client::LinkClient;
use gatemend_proto::v1::{AgentMessage, Finding, Hello, agent_message};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// The outage the issue asks for: the controller stays dead this long while the agent keeps
/// producing findings (into its outbox) and keeps retrying (its backoff is capped at 1 s here).
const RESTART_DELAY: Duration = Duration::from_secs(60);

fn gatemend(args: &[&str]) {
    let status = Command::new(env!("CARGO_BIN_EXE_gatemend"))
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "gatemend {args:?} failed");
}

fn pki(dir: &Path, hosts: &[&str]) {
    gatemend(&["pki", "init", dir.to_str().unwrap(), "--san", "127.0.0.1"]);
    for host in hosts {
        gatemend(&["pki", "issue", "--host", host, dir.to_str().unwrap()]);
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A child process killed when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn controller(addr: SocketAddr, pki: &Path, findings_log: &Path, stderr: &Path) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr)
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_gatemend-controller"))
        .args(["--listen", &addr.to_string(), "--tls-dir"])
        .arg(pki)
        .arg("--findings-log")
        .arg(findings_log)
        .env("RUST_LOG", "info")
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "the controller did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc(child)
}

fn agent_config(dir: &Path, pki: &Path, addr: SocketAddr) -> AgentConfig {
    AgentConfig {
        host: "web1".into(),
        labels: Default::default(),
        allowed_actions: vec![],
        controller: ControllerConfig {
            endpoints: vec![format!("https://{addr}")],
            tls: Some(TlsConfig {
                ca: pki.join("ca.pem"),
                cert: pki.join("hosts/web1.pem"),
                key: pki.join("hosts/web1.key"),
                server_name: "gatemend-controller".into(),
            }),
            insecure: false,
            heartbeat_secs: 1,
            backoff_initial_ms: 100,
            backoff_max_ms: 1_000,
            send_rate_per_sec: 500,
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

async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_finding_arrives_exactly_once_across_a_controller_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    pki(&pki_dir, &["web1"]);
    let addr = free_addr();
    let store = dir.path().join("findings.jsonl");
    let stderr = dir.path().join("controller.log");
    let mut ctl = controller(addr, &pki_dir, &store, &stderr);

    let link = Link::open(
        &agent_config(dir.path(), &pki_dir, addr),
        Arc::new(RefuseAll),
    )
    .unwrap();
    let stats = link.stats();
    let (tx, rx) = mpsc::channel(1_024);
    tokio::spawn(link.run(rx));

    // 40 findings, each re-sent with 10 revisions: 400 distinct (id, revision) over ~20 s,
    // most of them while the controller is dead.
    const TOTAL: u64 = 400;
    let producer = tokio::spawn(async move {
        for i in 0..TOTAL {
            let finding = Finding {
                id: format!("web1/f{}", i % 40),
                revision: i / 40 + 1,
                host: "web1".into(),
                cause: Cause::UpstreamRefused as i32,
                count: i + 1,
                ..Default::default()
            };
            tx.send(finding).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tx
    });

    tokio::time::sleep(Duration::from_millis(1_000)).await;
    ctl.0.kill().unwrap(); // SIGKILL: no shutdown path runs.
    ctl.0.wait().unwrap();
    tokio::time::sleep(RESTART_DELAY).await;
    let _ctl = controller(addr, &pki_dir, &store, &stderr);

    let _tx = producer.await.unwrap();
    wait_for("the outbox to drain", Duration::from_secs(120), || {
        stats.pending.load(Ordering::Relaxed) == 0 && stats.acked.load(Ordering::Relaxed) >= TOTAL
    })
    .await;

    let lines = FileSink::read_lines(&store).unwrap();
    let keys: Vec<(String, u64)> = lines
        .iter()
        .filter(|l| l.kind == RecordKind::Finding)
        .map(|l| (l.id.clone(), l.revision))
        .collect();
    let distinct: HashSet<_> = keys.iter().cloned().collect();
    assert_eq!(distinct.len(), keys.len(), "a finding was stored twice");
    assert_eq!(
        keys.len() as u64,
        TOTAL,
        "a finding was lost\n{}",
        read(&stderr)
    );
    assert!(
        stats.sessions.load(Ordering::Relaxed) >= 2,
        "the agent reconnected"
    );
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
}

fn tls(pki: &Path, identity: Option<(&str, &Path)>) -> ClientTlsConfig {
    let ca = std::fs::read(pki.join("ca.pem")).unwrap();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("gatemend-controller");
    if let Some((host, dir)) = identity {
        let cert = std::fs::read(dir.join(format!("hosts/{host}.pem"))).unwrap();
        let key = std::fs::read(dir.join(format!("hosts/{host}.key"))).unwrap();
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    tls
}

/// Opens a stream saying Hello as `host`; the error, if the controller refused.
async fn hello_as(addr: SocketAddr, tls: ClientTlsConfig, host: &str) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    let (tx, rx) = mpsc::channel(4);
    tx.send(AgentMessage {
        body: Some(agent_message::Body::Hello(Hello {
            host: host.into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut client = LinkClient::new(channel);
    let mut inbound = client
        .stream(ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    // Accepted: the stream stays open (nothing to read until the controller acks something).
    match tokio::time::timeout(Duration::from_millis(300), inbound.message()).await {
        Err(_) => Ok(()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_certificates_are_refused_with_the_reason_logged() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    pki(&pki_dir, &["web1"]);
    let other = dir.path().join("other-pki");
    pki(&other, &["web1"]);
    let addr = free_addr();
    let stderr = dir.path().join("controller.log");
    let _ctl = controller(addr, &pki_dir, &dir.path().join("f.jsonl"), &stderr);
    let refusals = |log: &str| log.matches("TLS handshake refused.").count();

    hello_as(addr, tls(&pki_dir, Some(("web1", &pki_dir))), "web1")
        .await
        .expect("the right certificate is accepted");

    let err = hello_as(addr, tls(&pki_dir, None), "web1")
        .await
        .unwrap_err();
    println!("no certificate: {err}");
    wait_for(
        "the no-certificate refusal in the log",
        Duration::from_secs(5),
        || refusals(&read(&stderr)) >= 1,
    )
    .await;

    let err = hello_as(addr, tls(&pki_dir, Some(("web1", &other))), "web1")
        .await
        .unwrap_err();
    println!("another CA: {err}");
    wait_for(
        "the unknown-CA refusal in the log",
        Duration::from_secs(5),
        || refusals(&read(&stderr)) >= 2,
    )
    .await;

    let err = hello_as(addr, tls(&pki_dir, Some(("web1", &pki_dir))), "web2")
        .await
        .unwrap_err();
    assert!(err.starts_with("PermissionDenied"), "{err}");
    wait_for(
        "the host mismatch in the log",
        Duration::from_secs(5),
        || read(&stderr).contains("Hello host `web2` does not match the client certificate"),
    )
    .await;
    let log = read(&stderr);
    assert!(
        log.contains("peer sent no certificates") || log.contains("NoCertificatesPresented"),
        "{log}"
    );
    // Both CAs are named "gatemend CA": rustls finds the issuer by name and the signature fails.
    assert!(
        log.contains("invalid peer certificate: BadSignature"),
        "{log}"
    );
}
