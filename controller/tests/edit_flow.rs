//! A configuration edit through the real controller binary: a stand-in agent proposes the
//! demo's fix (fastcgi_pass back on the php8.2 socket); the shipped edit policy asks for an
//! approval that carries the diff in the API, the CLI, the review page and the page a human
//! receives; approving sends exactly that edit; a rollback pages with the agent's reason and
//! the timeline shows the diff.

// Test helpers panic by design: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use gatemend_proto::v1::{ActionResult, ActionStep, agent_message};
use gatemend_proto::{ActionKind, ActionStatus};

mod support;

use support::{Agent, Controller, EDIT_DIFF as DIFF, Launch, wrong_socket};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_edit_carries_its_diff_everywhere_and_a_rollback_pages_with_the_reason() {
    let policy = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/edit.yaml"
    ))
    .unwrap();
    let ctl = Controller::launch(&Launch {
        policy: &policy,
        ..Launch::default()
    });
    let mut web1 = Agent::connect(ctl.grpc, "web1").await;
    let id = "web1/upstream_socket_missing/unix:/run/php/php7.4-fpm.sock#1";
    web1.send(wrong_socket(id)).await;

    let pending = ctl.pending_approval().await;
    assert_eq!(pending["policy"], "edit-upstream-target", "{pending}");
    let approval = pending["id"].as_str().unwrap().to_owned();
    // The API: the finding with its edit and diff.
    let (status, one) = ctl
        .get(&ctl.vera, &format!("/api/v1/approvals/{approval}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(one["finding"]["edit"]["diff"], DIFF, "{one}");
    assert_eq!(one["finding"]["edit"]["directive"], "fastcgi_pass");
    // The CLI, as an operator reads it.
    let shown = Command::new(env!("CARGO_BIN_EXE_gatemend"))
        .args(["approvals", "show", &approval, "--controller"])
        .arg(format!("http://{}", ctl.http))
        .env("GATEMEND_TOKEN", &ctl.vera)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(
        text.contains(
            "fastcgi_pass unix:/run/php/php7.4-fpm.sock -> unix:/run/php/php8.2-fpm.sock"
        ),
        "{text}"
    );
    assert!(text.contains(DIFF), "{text}");

    // Approved: exactly this edit is asked of the host.
    let (status, body) = ctl
        .post(
            &ctl.alice,
            &format!("/api/v1/approvals/{approval}/approve"),
            serde_json::json!({ "reason": "the 8.2 socket is the right one" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let request = web1.next_request(Duration::from_secs(20)).await.unwrap();
    assert_eq!(request.kind, ActionKind::EditConfig as i32);
    let edit = request.edit.clone().expect("the edit");
    assert_eq!(edit.new_value, "unix:/run/php/php8.2-fpm.sock");
    assert_eq!(edit.file_sha256, "ab".repeat(32));
    assert_eq!(request.unit, "nginx.service");

    // The host applied it, its verification failed, it restored the old file.
    web1.send(agent_message::Body::ActionResult(ActionResult {
        action_id: request.action_id.clone(),
        host: "web1".into(),
        status: ActionStatus::RolledBack as i32,
        message:
            "verify: GET /index.php answered 502; restored the backup, nginx -t passed, reloaded"
                .into(),
        steps: vec![ActionStep {
            name: "rollback".into(),
            ok: true,
            duration_ms: 120,
            output: "restored /etc/nginx/sites-enabled/default (sha256 abab...)".into(),
        }],
        ..Default::default()
    }))
    .await;
    let records = ctl.wait_timeline(id, "action_result").await;
    let dispatched = records
        .iter()
        .find(|r| r["kind"] == "action_dispatched")
        .expect("the dispatched edit");
    assert_eq!(dispatched["body"]["edit"]["diff"], DIFF, "{dispatched}");
    let result = records
        .iter()
        .find(|r| r["kind"] == "action_result")
        .unwrap();
    assert_eq!(result["body"]["status"], "rolled_back");
    // One page for the incident: the approval request. The rollback's reason is recorded on
    // the incident, not paged again.
    let pages: Vec<_> = records
        .iter()
        .filter(|r| r["kind"] == "escalated")
        .collect();
    assert_eq!(pages.len(), 1, "{records:#?}");
    let records = ctl.wait_timeline(id, "incident").await;
    assert!(
        records.iter().any(|r| r["kind"] == "incident"
            && r["body"]["why"].as_str().is_some_and(
                |w| w.contains("ended rolled_back: verify: GET /index.php answered 502")
            )),
        "{records:#?}"
    );
    // The review page shows the diff, escaped.
    let login = support::client()
        .post(ctl.url("/login"))
        .header("origin", format!("http://{}", ctl.http))
        .form(&[("token", ctl.vera.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 303);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let html = support::client()
        .get(ctl.url(&format!("/approvals/{approval}")))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("<pre id=edit-diff>"), "{html}");
    assert!(
        html.contains("+\t\tfastcgi_pass unix:/run/php/php8.2-fpm.sock;"),
        "{html}"
    );
}
