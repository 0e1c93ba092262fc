//! The approvals store on a real SQLite file: requested once per decision, decided exactly
//! once however many operators approve at the same moment, expired ones never approved.

// Test helpers panic by design: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use gatemend_controller::approvals::{ApprovalError, Approvals, NewApproval, State};
use gatemend_controller::audit::Audit;
use gatemend_controller::decide::Finding;

fn finding(revision: u64) -> Finding {
    serde_json::from_value(serde_json::json!({
        "id": "web1/upstream_socket_permission/unix:/run/php/php8.2-fpm.sock#1",
        "revision": revision,
        "host": "web1",
        "cause": "upstream_socket_permission",
        "root_cause": "socket_permission",
        "first_seen": 1,
        "last_seen": 2,
    }))
    .unwrap()
}

fn new(revision: u64, expires_in: Duration) -> NewApproval {
    NewApproval {
        finding: finding(revision),
        incident: "web1/upstream_socket_permission/unix:/run/php/php8.2-fpm.sock#1".into(),
        policy: "fix-socket-ownership".into(),
        policy_digest: "sha256:00".into(),
        actions: vec!["fix_socket_ownership".into()],
        why: "www-data may not connect".into(),
        expires_in,
    }
}

async fn store(dir: &tempfile::TempDir) -> Approvals {
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let audit = Audit::open(&url).await.unwrap();
    Approvals::open(audit.pool().clone()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_operators_approving_at_once_make_exactly_one_approval() {
    let dir = tempfile::tempdir().unwrap();
    let approvals = store(&dir).await;
    let a = approvals
        .request(new(1, Duration::from_secs(1800)), 1_000)
        .await
        .unwrap();
    assert_eq!(a.state, State::Pending);
    assert_eq!(a.id.len(), 12);
    // Asking again for the same decision gives the same approval, not a second one.
    let again = approvals
        .request(new(1, Duration::from_secs(1800)), 1_500)
        .await
        .unwrap();
    assert_eq!(
        (again.id.as_str(), again.created_at),
        (a.id.as_str(), 1_000)
    );
    assert_eq!(approvals.list(Some(State::Pending)).await.unwrap().len(), 1);

    let mut tasks = Vec::new();
    for who in 0..16 {
        let approvals = approvals.clone();
        let id = a.id.clone();
        tasks.push(tokio::spawn(async move {
            approvals
                .approve(&id, &format!("op{who}"), "fix it", 2_000)
                .await
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(approval) => won.push(approval),
            Err(ApprovalError::AlreadyDecided { state, .. }) => assert_eq!(state, "approving"),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one operator's approval counts");
    assert_eq!(won[0].state, State::Approving);
    // Not dispatchable until its audit record is written.
    assert!(approvals.undispatched().await.unwrap().is_empty());
    approvals.settle(&a.id, true).await.unwrap();
    let stored = approvals.get(&a.id).await.unwrap().unwrap();
    assert_eq!(stored.state, State::Approved);
    assert_eq!(approvals.undispatched().await.unwrap().len(), 1);
    assert_eq!(stored.decided_by, won[0].decided_by);
    assert_eq!(stored.reason.as_deref(), Some("fix it"));
    // A deny after the approval is refused and changes nothing.
    assert!(matches!(
        approvals.deny(&a.id, "op99", "no", 3_000).await,
        Err(ApprovalError::AlreadyDecided { .. })
    ));
}

#[tokio::test]
async fn an_expired_approval_can_no_longer_be_approved_and_a_reason_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let approvals = store(&dir).await;
    let a = approvals
        .request(new(2, Duration::from_secs(60)), 1_000)
        .await
        .unwrap();
    assert!(matches!(
        approvals.approve(&a.id, "alice", "  ", 2_000).await,
        Err(ApprovalError::NoReason)
    ));
    // Past its expiry, before the sweeper ran: refused as expired.
    assert!(matches!(
        approvals.approve(&a.id, "alice", "ok", 61_001).await,
        Err(ApprovalError::Expired { .. })
    ));
    let expired = approvals.expire_due(61_001).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(
        approvals.get(&a.id).await.unwrap().unwrap().state,
        State::Expired
    );
    assert!(approvals.expire_due(70_000).await.unwrap().is_empty());
    assert!(matches!(
        approvals.approve("nope", "alice", "ok", 2_000).await,
        Err(ApprovalError::NotFound(_))
    ));
}

#[tokio::test]
async fn an_approval_whose_audit_record_failed_goes_back_to_pending_and_is_never_dispatched() {
    let dir = tempfile::tempdir().unwrap();
    let approvals = store(&dir).await;
    let a = approvals
        .request(new(3, Duration::from_secs(600)), 1_000)
        .await
        .unwrap();
    let approving = approvals
        .approve(&a.id, "alice", "ok", 2_000)
        .await
        .unwrap();
    assert_eq!(approving.state, State::Approving);
    assert!(approvals.undispatched().await.unwrap().is_empty());
    assert!(
        !approvals.claim(&a.id, 2_500).await.unwrap(),
        "claimed before it was audited"
    );
    let back = approvals.settle(&a.id, false).await.unwrap();
    assert_eq!(back.state, State::Pending);
    assert_eq!(back.decided_by, None);
    assert!(approvals.undispatched().await.unwrap().is_empty());
    // It can be approved again, and settles once.
    approvals
        .approve(&a.id, "bob", "log is back", 3_000)
        .await
        .unwrap();
    approvals.settle(&a.id, true).await.unwrap();
    assert!(approvals.settle(&a.id, true).await.is_err());
    assert!(approvals.claim(&a.id, 3_500).await.unwrap());
}

#[tokio::test]
async fn an_approval_left_approving_by_a_dead_controller_expires_and_never_runs() {
    let dir = tempfile::tempdir().unwrap();
    let approvals = store(&dir).await;
    let a = approvals
        .request(new(4, Duration::from_secs(60)), 1_000)
        .await
        .unwrap();
    approvals
        .approve(&a.id, "alice", "ok", 2_000)
        .await
        .unwrap();
    let expired = approvals.expire_due(61_001).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(
        approvals.get(&a.id).await.unwrap().unwrap().state,
        State::Expired
    );
    assert!(approvals.undispatched().await.unwrap().is_empty());
}
