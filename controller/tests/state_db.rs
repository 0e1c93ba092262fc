//! The fleet state in the database, as two controllers see it: what one commits the other
//! reads at its next begin; on PostgreSQL a batch holds the fleet lock, so the second
//! controller's batch waits for the first to commit and then sees its in-flight action; on
//! SQLite a second writer that decided on an old version is refused (a conflict), never merged.
//! A real PostgreSQL server (tests/setup-host.sh installs it) and a real SQLite file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "audit_support/pg_cluster.rs"]
mod pg_cluster;

use std::time::Duration;

use gatemend_controller::audit::Audit;
use gatemend_controller::decide::{ChainState, Finding, FleetState, InFlight};
use gatemend_controller::dispatch::{StateDb, StateDbError};
use gatemend_proto::Cause;
use pg_cluster::PgCluster;

fn finding(host: &str) -> Finding {
    serde_json::from_value(serde_json::json!({
        "id": format!("f-{host}"), "host": host, "cause": "upstream_refused",
        "first_seen": 1, "last_seen": 2
    }))
    .unwrap()
}

/// A controller: its own pool on the database, its own cache.
async fn controller(url: &str) -> (StateDb, FleetState) {
    let audit = Audit::open(url).await.unwrap();
    let db = StateDb::open(audit.pool().clone(), audit.backend())
        .await
        .unwrap();
    (db, FleetState::new())
}

/// `who` dispatches an action on `host` in its cache.
fn dispatch(state: &mut FleetState, host: &str, who: &str) {
    let f = finding(host);
    state.record_finding(&f, 10, who);
    let action = InFlight {
        host: host.into(),
        policy: "restart".into(),
        cause: Cause::UpstreamRefused,
        since: 10,
        chain: Some(ChainState {
            finding: f.clone(),
            current: 0,
            owner: who.into(),
            expires_at: 100,
        }),
    };
    state.record_dispatched(
        &format!("{}@1/restart", f.id),
        action,
        Duration::from_secs(3600),
        10,
    );
    state.record_acted(host, "restart", 10);
}

async fn what_one_commits_the_other_reads(url: &str) {
    let (mut db_a, mut a) = controller(url).await;
    let (mut db_b, mut b) = controller(url).await;
    let session = db_a.begin(&mut a).await.unwrap();
    dispatch(&mut a, "web-1", "c1");
    a.record_heartbeat("c1", 10);
    db_a.commit(session, &mut a).await.unwrap();

    let session = db_b.begin(&mut b).await.unwrap();
    assert!(b.is_busy("web-1"), "b sees a's in-flight action");
    assert_eq!(b.busy_hosts(), 1);
    assert_eq!(b.last_acted("web-1", "restart"), Some(10));
    assert_eq!(b.attempts("web-1", "restart", 20).0, 1);
    assert_eq!(b.host("web-1").unwrap().controller, "c1");
    assert_eq!(b.online_hosts(), 1);
    assert_eq!(b.data().controllers.get("c1"), Some(&10));
    // b finishes it; a learns at its next begin.
    b.record_finished("f-web-1@1/restart").unwrap();
    b.host_offline("web-1");
    db_b.commit(session, &mut b).await.unwrap();

    let session = db_a.begin(&mut a).await.unwrap();
    assert!(!a.is_busy("web-1"));
    assert_eq!(a.online_hosts(), 0);
    assert_eq!(a.last_acted("web-1", "restart"), Some(10));
    db_a.commit(session, &mut a).await.unwrap();

    // A controller started later reads everything.
    let (mut db_c, mut c) = controller(url).await;
    let session = db_c.begin(&mut c).await.unwrap();
    assert_eq!(c.data(), a.data());
    db_c.commit(session, &mut c).await.unwrap();
}

#[tokio::test]
async fn sqlite_what_one_commits_the_other_reads() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    what_one_commits_the_other_reads(&url).await;
}

#[tokio::test]
async fn postgres_what_one_commits_the_other_reads() {
    let pg = PgCluster::start(false).unwrap();
    let url = pg.create_db("state_read").unwrap();
    what_one_commits_the_other_reads(&url).await;
}

#[tokio::test]
async fn sqlite_a_writer_that_decided_on_an_old_version_is_refused_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let (mut db_a, mut a) = controller(&url).await;
    let (mut db_b, mut b) = controller(&url).await;
    let session_a = db_a.begin(&mut a).await.unwrap();
    let session_b = db_b.begin(&mut b).await.unwrap();
    dispatch(&mut a, "web-1", "c1");
    db_a.commit(session_a, &mut a).await.unwrap();
    dispatch(&mut b, "web-2", "c2");
    let refused = db_b.commit(session_b, &mut b).await;
    assert!(
        matches!(refused, Err(StateDbError::Conflict { .. })),
        "{refused:?}"
    );
    // Decided again on the current state: b now sees a's action (and not its own lost one).
    let session = db_b.begin(&mut b).await.unwrap();
    assert!(b.is_busy("web-1"));
    assert!(!b.is_busy("web-2"));
    db_b.commit(session, &mut b).await.unwrap();
}

#[tokio::test]
async fn postgres_a_batch_waits_for_the_fleet_lock_and_then_sees_the_slot_taken() {
    let pg = PgCluster::start(false).unwrap();
    let url = pg.create_db("state_lock").unwrap();
    let (mut db_a, mut a) = controller(&url).await;
    let (mut db_b, mut b) = controller(&url).await;
    let session_a = db_a.begin(&mut a).await.unwrap();
    // b's batch cannot start while a holds the lock.
    let b_task = tokio::spawn(async move {
        let session = db_b.begin(&mut b).await.unwrap();
        let busy = b.is_busy("web-1");
        db_b.commit(session, &mut b).await.unwrap();
        busy
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!b_task.is_finished(), "b began while a held the fleet lock");
    dispatch(&mut a, "web-1", "c1");
    db_a.commit(session_a, &mut a).await.unwrap();
    assert!(
        b_task.await.unwrap(),
        "b, let in after a committed, sees a's in-flight action"
    );
}

#[tokio::test]
async fn postgres_lost_and_back_reloads_the_whole_state() {
    let pg = PgCluster::start(false).unwrap();
    let url = pg.create_db("state_lost").unwrap();
    let (mut db_a, mut a) = controller(&url).await;
    let session = db_a.begin(&mut a).await.unwrap();
    dispatch(&mut a, "web-1", "c1");
    db_a.commit(session, &mut a).await.unwrap();
    // A batch whose commit fails leaves nothing behind: the cache is reloaded from the
    // database, so what the failed batch decided is forgotten.
    let session = db_a.begin(&mut a).await.unwrap();
    dispatch(&mut a, "web-2", "c1");
    pg.psql(
        "state_lost",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = 'state_lost' AND pid <> pg_backend_pid()",
    )
    .unwrap();
    assert!(db_a.commit(session, &mut a).await.is_err());
    let session = db_a.begin(&mut a).await.unwrap();
    assert!(a.is_busy("web-1"));
    assert!(
        !a.is_busy("web-2"),
        "the failed batch's action is not in flight"
    );
    db_a.commit(session, &mut a).await.unwrap();
}
