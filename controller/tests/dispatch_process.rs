//! The controller binary deciding and dispatching: findings sent over real gRPC by a raw
//! stream (standing in for an agent) meet the YAML policies, action requests come back on the
//! stream, escalations reach a webhook, and the policies reload on file change and SIGHUP.

// Test helpers panic by design: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use gatemend_proto::v1::{ActionResult, Finding, agent_message};
use gatemend_proto::{ActionKind, ActionStatus, Cause, RootCause};

mod support;

use support::{Agent, Proc, free_addr};

const RESTART: &str = "policies:
  - name: restart
    match: { cause: [upstream_socket_missing], root_cause: [service_down], unit: ['php*-fpm.service'] }
    mode: auto
    actions: [restart_unit]
    verify: { timeout: 5s }
    guards: { max_attempts: 1, fleet: { max_concurrent: 5, max_percent: 100 } }
";

const ESCALATE_DNS: &str = "policies:
  - name: escalate-dns
    match: { cause: [dns_resolution_failed] }
    mode: auto
    actions: [escalate]
    escalate: { webhook: 'http://WEBHOOK/hook' }
";

/// A webhook receiver on loopback: every POST body, as JSON, in arrival order.
fn webhook() -> (SocketAddr, std_mpsc::Receiver<serde_json::Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let line = line.trim_end().to_ascii_lowercase();
                if line.is_empty() {
                    break;
                }
                if let Some(v) = line.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mut stream = reader.into_inner();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .unwrap();
            let _ = tx.send(serde_json::from_slice(&body).unwrap());
        }
    });
    (addr, rx)
}

fn controller(addr: SocketAddr, policies: &Path, log: &Path) -> Proc {
    controller_with(addr, policies, log, &[])
}

fn controller_with(addr: SocketAddr, policies: &Path, log: &Path, extra: &[&str]) -> Proc {
    let stderr = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_gatemend-controller"))
        .args(["--listen", &addr.to_string(), "--insecure", "--policies"])
        .arg(policies)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "the controller did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc(child)
}

/// Waits until the controller's log has `needle` `times` times. Blocking: the tests run on a
/// multi-threaded runtime, so the streams go on meanwhile.
#[track_caller]
fn wait_log(log: &Path, needle: &str, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches(needle).count() >= times {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the controller never logged `{needle}` x{times}; its log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn finding(
    host: &str,
    id: &str,
    revision: u64,
    cause: Cause,
    root: RootCause,
) -> agent_message::Body {
    agent_message::Body::Finding(Finding {
        id: id.into(),
        revision,
        host: host.into(),
        cause: cause as i32,
        root_cause: root as i32,
        // A name that does not resolve is another upstream (another incident) than php-fpm.
        upstream: if cause == Cause::DnsResolutionFailed {
            "backend.example:80".into()
        } else {
            "unix:/run/php/php8.2-fpm.sock".into()
        },
        unit: "php8.2-fpm.service".into(),
        count: 1,
        first_seen_unix_ms: 1,
        last_seen_unix_ms: 2,
        ..Default::default()
    })
}

fn result(host: &str, action_id: &str, status: ActionStatus, message: &str) -> agent_message::Body {
    agent_message::Body::ActionResult(ActionResult {
        action_id: action_id.into(),
        host: host.into(),
        status: status as i32,
        message: message.into(),
        ..Default::default()
    })
}

fn policy_dir(webhook: SocketAddr, files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    for (name, text) in files {
        let text = text.replace("WEBHOOK", &webhook.to_string());
        std::fs::write(policies.join(name), text).unwrap();
    }
    (dir, policies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_policy_dispatches_its_action_and_a_failed_action_escalates_to_the_webhook() {
    let (hook, posts) = webhook();
    let (dir, policies) = policy_dir(
        hook,
        &[("restart.yaml", RESTART), ("dns.yaml", ESCALATE_DNS)],
    );
    let log = dir.path().join("controller.log");
    let addr = free_addr();
    let _ctl = controller(addr, &policies, &log);
    let mut agent = Agent::connect(addr, "web1").await;

    agent
        .send(finding(
            "web1",
            "web1/f1",
            1,
            Cause::UpstreamSocketMissing,
            RootCause::ServiceDown,
        ))
        .await;
    let request = agent
        .next_request(Duration::from_secs(20))
        .await
        .expect("an action request");
    assert_eq!(request.action_id, "web1/f1@1/restart/0");
    assert_eq!(request.kind, ActionKind::RestartUnit as i32);
    assert_eq!(request.unit, "php8.2-fpm.service");
    assert_eq!(request.socket_path, "/run/php/php8.2-fpm.sock");
    assert_eq!(request.verify_timeout_ms, 5_000);
    assert!(!request.dry_run);

    // The action fails on the host: the controller does not retry by itself, it escalates.
    agent
        .send(result(
            "web1",
            &request.action_id,
            ActionStatus::Failed,
            "php8.2-fpm.service failed (Result=exit-code)",
        ))
        .await;
    // The restart policy names no webhook and there is no --escalate-webhook: logged only.
    wait_log(&log, "Escalated to a human.", 1);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("ended failed: php8.2-fpm.service failed (Result=exit-code)"),
        "{text}"
    );

    // A DNS failure: an escalate-only policy with a webhook. Nothing is sent to the host.
    agent
        .send(finding(
            "web1",
            "web1/f2",
            1,
            Cause::DnsResolutionFailed,
            RootCause::DnsFailure,
        ))
        .await;
    let post = posts
        .recv_timeout(Duration::from_secs(20))
        .expect("a webhook POST");
    assert_eq!(post["host"], "web1");
    assert_eq!(post["finding_id"], "web1/f2");
    assert_eq!(post["cause"], "dns_resolution_failed");
    assert_eq!(post["policy"], "escalate-dns");
    assert_eq!(post["why"], "the policy escalates to a human");
    assert_eq!(agent.next_request(Duration::from_millis(500)).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_reload_on_change_and_sighup_and_an_invalid_set_is_rejected_whole() {
    let (hook, posts) = webhook();
    let (dir, policies) = policy_dir(hook, &[("dns.yaml", ESCALATE_DNS)]);
    let log = dir.path().join("controller.log");
    let addr = free_addr();
    let ctl = controller(addr, &policies, &log);
    let mut web1 = Agent::connect(addr, "web1").await;

    // No policy for a missing socket yet: decided no_policy, nothing sent. The DNS finding
    // after it is decided after it, so once its POST arrives any request would be queued.
    web1.send(finding(
        "web1",
        "web1/f1",
        1,
        Cause::UpstreamSocketMissing,
        RootCause::ServiceDown,
    ))
    .await;
    web1.send(finding(
        "web1",
        "web1/d1",
        1,
        Cause::DnsResolutionFailed,
        RootCause::DnsFailure,
    ))
    .await;
    posts
        .recv_timeout(Duration::from_secs(20))
        .expect("a webhook POST");
    assert_eq!(web1.next_request(Duration::from_millis(500)).await, None);

    // A new file: the set is reloaded and the next revision is acted on.
    std::fs::write(policies.join("restart.yaml"), RESTART).unwrap();
    wait_log(&log, "Policies reloaded.", 1);
    web1.send(finding(
        "web1",
        "web1/f1",
        2,
        Cause::UpstreamSocketMissing,
        RootCause::ServiceDown,
    ))
    .await;
    let request = web1
        .next_request(Duration::from_secs(20))
        .await
        .expect("a request");
    assert_eq!(request.action_id, "web1/f1@2/restart/0");
    web1.send(result(
        "web1",
        &request.action_id,
        ActionStatus::Succeeded,
        "restarted",
    ))
    .await;

    // An invalid file rejects the whole new set; the running set (with restart) stays.
    std::fs::write(
        policies.join("broken.yaml"),
        "policies:\n  - name: broken\n    match: { cause: [no_such_cause] }\n    mode: auto\n    actions: [restart_unit]\n",
    )
    .unwrap();
    wait_log(&log, "Policy reload rejected; the running set stays.", 1);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("broken.yaml:3:"),
        "the rejection names file and line:\n{text}"
    );
    let mut web2 = Agent::connect(addr, "web2").await;
    web2.send(finding(
        "web2",
        "web2/g1",
        1,
        Cause::UpstreamSocketMissing,
        RootCause::ServiceDown,
    ))
    .await;
    let request = web2
        .next_request(Duration::from_secs(20))
        .await
        .expect("a request");
    assert_eq!(request.action_id, "web2/g1@1/restart/0");

    // SIGHUP rereads the directory (still invalid: rejected again, by the signal).
    std::fs::remove_file(policies.join("broken.yaml")).unwrap();
    wait_log(&log, "Policies re", 2);
    let status = Command::new("kill")
        .args(["-HUP", &ctl.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_log(&log, "trigger=\"sighup\"", 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_wide_dry_run_asks_for_plans_and_holds_nothing_in_flight() {
    let (hook, _posts) = webhook();
    let one_at_a_time = RESTART.replace("max_concurrent: 5", "max_concurrent: 1");
    let (dir, policies) = policy_dir(hook, &[("restart.yaml", &one_at_a_time)]);
    let log = dir.path().join("controller.log");
    let addr = free_addr();
    let _ctl = controller_with(addr, &policies, &log, &["--dry-run"]);
    let mut agent = Agent::connect(addr, "web1").await;
    agent
        .send(finding(
            "web1",
            "web1/f1",
            1,
            Cause::UpstreamSocketMissing,
            RootCause::ServiceDown,
        ))
        .await;
    let request = agent
        .next_request(Duration::from_secs(20))
        .await
        .expect("a dry-run request");
    assert!(request.dry_run);
    assert_eq!(request.action_id, "web1/f1@1/restart/0/dry");
    wait_log(&log, "decision=\"dry_run\"", 1);
    // A plan is not in flight: while web1's plan is unanswered, a finding on web2 is planned
    // too, though the policy allows one host at a time.
    let mut web2 = Agent::connect(addr, "web2").await;
    web2.send(finding(
        "web2",
        "web2/g1",
        1,
        Cause::UpstreamSocketMissing,
        RootCause::ServiceDown,
    ))
    .await;
    let request = web2
        .next_request(Duration::from_secs(20))
        .await
        .expect("a plan");
    assert!(request.dry_run);
}

const FIX_SOCKET: &str = "policies:
  - name: fix-socket
    match: { cause: [upstream_socket_permission], root_cause: [socket_permission] }
    mode: approve
    actions: [fix_socket_ownership]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_recorded_in_the_database_is_dispatched_once_when_approved() {
    use gatemend_controller::approvals::{Approvals, State};
    use gatemend_controller::audit::Audit;

    let (hook, _posts) = webhook();
    let (dir, policies) = policy_dir(hook, &[("fix.yaml", FIX_SOCKET)]);
    let log = dir.path().join("controller.log");
    let db = format!("sqlite://{}", dir.path().join("audit.db").display());
    let addr = free_addr();
    let _ctl = controller_with(addr, &policies, &log, &["--db", &db]);
    let mut agent = Agent::connect(addr, "web1").await;
    agent
        .send(finding(
            "web1",
            "web1/f1",
            1,
            Cause::UpstreamSocketPermission,
            RootCause::SocketPermission,
        ))
        .await;
    wait_log(&log, "decision=\"await_approval\"", 1);
    // Nothing runs before an operator approves.
    assert_eq!(agent.next_request(Duration::from_millis(500)).await, None);

    // Approved through the database, as the API (or another controller's) would: the
    // controller finds it and dispatches it, once.
    let audit = Audit::open(&db).await.unwrap();
    let approvals = Approvals::open(audit.pool().clone()).await.unwrap();
    // The decision is logged just before its approval is recorded.
    let deadline = Instant::now() + Duration::from_secs(10);
    let pending = loop {
        let pending = approvals.list(Some(State::Pending)).await.unwrap();
        if !pending.is_empty() || Instant::now() > deadline {
            break pending;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(pending.len(), 1, "{pending:?}");
    // Past its expiry it cannot be approved.
    assert!(
        approvals
            .approve(&pending[0].id, "alice", "late", i64::MAX / 2)
            .await
            .is_err()
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    approvals
        .approve(&pending[0].id, "alice", "socket fix reviewed", now)
        .await
        .unwrap();
    // Approving, its audit record not yet written: nothing is dispatched.
    assert_eq!(agent.next_request(Duration::from_millis(2_500)).await, None);
    approvals.settle(&pending[0].id, true).await.unwrap();
    let request = agent
        .next_request(Duration::from_secs(20))
        .await
        .expect("the approved action");
    assert_eq!(request.kind, ActionKind::FixSocketOwnership as i32);
    assert_eq!(request.socket_path, "/run/php/php8.2-fpm.sock");
    assert_eq!(
        agent.next_request(Duration::from_secs(2)).await,
        None,
        "dispatched twice"
    );
    wait_log(&log, "Approved; dispatching.", 1);
}
