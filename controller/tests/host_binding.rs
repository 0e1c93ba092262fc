//! One host cannot touch another's incidents: the real controller binary over mutual TLS, two
//! stand-in agents with their own certificates (made by the real `gatemend pki`), the second
//! trying every collision an attacker on a compromised host would try.

// Test helpers panic by design: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use gatemend_proto::ActionStatus;
use gatemend_proto::v1::{ActionResult, agent_message};

mod support;

use support::{Agent, Controller, Launch, fpm_down};

/// web1's finding id, as its agent makes them (`HOST/CAUSE/UPSTREAM#MS`): guessable.
const A_ID: &str = "web1/upstream_socket_missing/unix:/run/php/php8.2-fpm.sock#1764806400000";

fn pki(dir: &Path, hosts: &[&str]) {
    let run = |args: &[&str]| {
        let status = Command::new(env!("CARGO_BIN_EXE_gatemend"))
            .args(args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "gatemend {args:?} failed");
    };
    run(&["pki", "init", dir.to_str().unwrap(), "--san", "127.0.0.1"]);
    for host in hosts {
        run(&["pki", "issue", "--host", host, dir.to_str().unwrap()]);
    }
}

#[track_caller]
fn assert_refused(ack: Option<gatemend_proto::v1::Ack>, because: &str) {
    let ack = ack.expect("an ack");
    assert!(
        ack.refused.contains(because),
        "expected a refusal saying {because:?}, got {ack:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_cannot_shadow_advance_or_answer_the_first_hosts_incident() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    pki(&pki_dir, &["web1", "web2"]);
    let ctl = Controller::launch(&Launch {
        tls_dir: Some(&pki_dir),
        ..Launch::default()
    });
    let wait = Duration::from_secs(10);
    let mut attacker = Agent::connect_tls(ctl.grpc, &pki_dir, "web2", "web2").await;

    // 1. web1's finding id, sent first from web2: refused, so web1's own copy is not taken
    //    for a duplicate later.
    attacker.send(fpm_down("web2", A_ID, 1)).await;
    assert_refused(
        attacker.next_ack(wait).await,
        "does not begin with its host `web2/`",
    );
    let shouting = A_ID.replacen("web1", "WEB1", 1);
    attacker.send(fpm_down("web2", &shouting, 1)).await;
    assert_refused(
        attacker.next_ack(wait).await,
        "does not begin with its host",
    );
    // 2. A finding naming web1 as its host, on web2's stream.
    attacker.send(fpm_down("web1", A_ID, 1)).await;
    assert_refused(attacker.next_ack(wait).await, "on the stream of `web2`");

    // web1 reports the real fault: decided, an approval for web1 only.
    let mut web1 = Agent::connect_tls(ctl.grpc, &pki_dir, "web1", "web1").await;
    web1.report_fpm_down("web1", A_ID).await;
    let approval = ctl.pending_approval().await;
    assert_eq!(approval["host"], "web1", "{approval}");
    assert_eq!(approval["incident"], A_ID, "{approval}");

    // web2's own finding with the same suffix is its own incident and its own approval.
    let b_id = A_ID.replacen("web1", "web2", 1);
    attacker.send(fpm_down("web2", &b_id, 1)).await;
    let ack = attacker.next_ack(wait).await.unwrap();
    assert!(ack.refused.is_empty(), "{ack:?}");
    // (A new incident settles a few seconds before it asks.)
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let all = loop {
        let (_, all) = ctl.get(&ctl.vera, "/api/v1/approvals").await;
        let all = all.as_array().unwrap().clone();
        if all.len() >= 2 || std::time::Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(all.len(), 2, "{all:?}");
    assert_ne!(all[0]["id"], all[1]["id"]);

    // web1's approval is approved; its restart goes to web1.
    let id = approval["id"].as_str().unwrap();
    let (status, body) = ctl
        .post(
            &ctl.alice,
            &format!("/api/v1/approvals/{id}/approve"),
            serde_json::json!({ "reason": "php-fpm is down on web1" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let request = web1.next_request(Duration::from_secs(20)).await.unwrap();
    assert!(request.action_id.starts_with(A_ID), "{request:?}");

    // 3. web2 answers web1's action, as itself and claiming to be web1: both refused.
    for claimed in ["web2", "web1"] {
        attacker
            .send(agent_message::Body::ActionResult(ActionResult {
                action_id: request.action_id.clone(),
                host: claimed.into(),
                status: ActionStatus::Failed as i32,
                message: "forged".into(),
                ..Default::default()
            }))
            .await;
        assert_refused(attacker.next_ack(wait).await, "web2");
    }

    // web1's chain still waits for web1: its real result advances it.
    web1.succeed("web1", &request, "php8.2-fpm.service active")
        .await;
    let records = ctl.wait_timeline(A_ID, "action_result").await;
    assert!(
        records.iter().all(|r| r["host"] == "web1"),
        "a record of another host in web1's incident: {records:#?}"
    );
    let results: Vec<_> = records
        .iter()
        .filter(|r| r["kind"] == "action_result" || r["kind"] == "refused")
        .collect();
    assert_eq!(results.len(), 1, "{results:#?}");
    assert_eq!(results[0]["body"]["status"], "succeeded", "{results:#?}");
    // The one page is the approval request; the forged failure left no trace in the incident.
    assert_eq!(
        records.iter().filter(|r| r["kind"] == "escalated").count(),
        1,
        "{records:#?}"
    );
    assert!(
        !records.iter().any(|r| r.to_string().contains("forged")),
        "the forged failure reached web1's incident: {records:#?}"
    );

    // One host, one key: web1 saying Hello in capitals is the same host.
    let _again = Agent::connect_tls(ctl.grpc, &pki_dir, "web1", "WEB1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, fleet) = ctl.get(&ctl.vera, "/api/v1/fleet").await;
    let hosts: Vec<&str> = fleet
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["host"].as_str())
        .collect();
    assert_eq!(
        hosts
            .iter()
            .filter(|h| h.eq_ignore_ascii_case("web1"))
            .count(),
        1,
        "{fleet}"
    );
    assert!(hosts.contains(&"web1"), "{fleet}");

    let metrics = ctl.metrics().await;
    assert!(
        metrics["gatemend_ingest_refused_total"] >= 5.0,
        "{metrics:?}"
    );
}
