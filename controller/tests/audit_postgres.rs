//! The audit log on a real PostgreSQL server that the test starts itself (tests/setup-host.sh
//! installs it; without it these tests fail, they do not skip): append and verify, tampering
//! caught, and one chain under concurrent writers — many connections in this process and two
//! other processes appending at the same time, as several controllers on one database would.

#[path = "audit_support/pg_cluster.rs"]
mod pg_cluster;

use std::process::Command;

use anyhow::{Context, Result, ensure};
use gatemend_controller::audit::{Audit, Backend, Filter, Kind, NewRecord, Verification};
use pg_cluster::PgCluster;
use serde_json::json;

const CHILD_URL: &str = "GATEMEND_AUDIT_TEST_CHILD_URL";
const CHILD_RECORDS: i64 = 150;

fn record(i: i64) -> NewRecord {
    NewRecord::new(1_700_000_000_000 + i, Kind::Decision, "controller")
        .host(format!("web-{}", i % 4))
        .incident(format!("f-{i}"))
        .policy("php-fpm", "sha256:0123")
        .body(json!({"decision": "restart", "i": i, "guards": {"cooldown": "ok", "attempts": 1}}))
}

fn broken_seq(v: Verification) -> i64 {
    match v {
        Verification::Broken(b) => b.seq,
        Verification::Intact { records } => {
            panic!("tampering not caught ({records} records intact)")
        }
    }
}

fn cli_verify(url: &str) -> Result<(i32, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_gatemend"))
        .args(["audit", "verify", "--db", url])
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

async fn filled(url: &str, n: i64) -> Result<Audit> {
    let audit = Audit::open(url).await?;
    ensure!(audit.backend() == Backend::Postgres);
    for i in 1..=n {
        audit.append(record(i)).await?;
    }
    Ok(audit)
}

#[tokio::test]
async fn appends_verify_and_tampering_is_caught_on_postgres() -> Result<()> {
    let pg = PgCluster::start(false)?;

    let url = pg.create_db("intact")?;
    let audit = filled(&url, 10).await?;
    assert_eq!(audit.verify().await?, Verification::Intact { records: 10 });
    // A batch larger than one INSERT statement takes: consecutive, stored as returned.
    let big_url = pg.create_db("big_batch")?;
    let big_log = Audit::open(&big_url).await?;
    let big = big_log.append_many((1..=600).map(record).collect()).await?;
    ensure!(
        big.iter().map(|r| r.seq).eq(1..=600),
        "seqs not consecutive"
    );
    ensure!(
        big_log.get(599).await?.as_ref() == big.get(598),
        "row 599 differs"
    );
    ensure!(big_log.verify().await? == Verification::Intact { records: 600 });
    let web2 = audit
        .query(&Filter {
            host: Some("web-2".into()),
            since: Some(1_700_000_000_003),
            ..Filter::default()
        })
        .await?;
    assert_eq!(web2.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![6, 10]);
    assert_eq!(audit.get(3).await?.map(|r| r.body), Some(record(3).body));
    assert_eq!(cli_verify(&url)?.0, 0);
    // Reopening (the migration already applied) continues the chain.
    audit.close().await;
    let audit = Audit::open(&url).await?;
    assert_eq!(audit.append(record(11)).await?.seq, 11);
    assert_eq!(audit.verify().await?, Verification::Intact { records: 11 });

    let url = pg.create_db("edited")?;
    let audit = filled(&url, 10).await?;
    pg.psql(
        "edited",
        r#"UPDATE audit_log SET body = '{"decision":"none"}' WHERE seq = 6"#,
    )?;
    assert_eq!(broken_seq(audit.verify().await?), 6);
    let (code, out) = cli_verify(&url)?;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BROKEN at record 6:"), "{out}");

    let url = pg.create_db("deleted")?;
    let audit = filled(&url, 10).await?;
    pg.psql("deleted", "DELETE FROM audit_log WHERE seq = 2")?;
    assert_eq!(broken_seq(audit.verify().await?), 2);
    let (code, out) = cli_verify(&url)?;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("record 2 is missing"), "{out}");

    let url = pg.create_db("swapped")?;
    let audit = filled(&url, 10).await?;
    pg.psql(
        "swapped",
        "UPDATE audit_log SET seq = -1 WHERE seq = 4; \
         UPDATE audit_log SET seq = 4 WHERE seq = 9; \
         UPDATE audit_log SET seq = 9 WHERE seq = -1",
    )?;
    assert_eq!(broken_seq(audit.verify().await?), 4);
    assert_eq!(cli_verify(&url)?.0, 1);

    let url = pg.create_db("truncated")?;
    let audit = filled(&url, 10).await?;
    pg.psql("truncated", "DELETE FROM audit_log WHERE seq = 10")?;
    assert_eq!(broken_seq(audit.verify().await?), 10);
    Ok(())
}

#[tokio::test]
async fn many_connections_and_two_processes_append_to_one_chain() -> Result<()> {
    let pg = PgCluster::start(false)?;
    let url = pg.create_db("concurrent")?;

    // Two other processes (this test binary, running `child_appender`), each with its own pool,
    // start appending while this process does too.
    let mut children = Vec::new();
    for _ in 0..2 {
        children.push(
            tokio::process::Command::new(std::env::current_exe()?)
                .args(["child_appender", "--exact", "--ignored", "--nocapture"])
                .env(CHILD_URL, &url)
                .spawn()?,
        );
    }
    // Here: four independent pools (opened concurrently: the migration must not race), each
    // shared by four tasks.
    let opens = (0..4).map(|_| Audit::open(&url));
    let audits = futures_util::future::try_join_all(opens).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..16i64 {
        let audit = audits[usize::try_from(t % 4)?].clone();
        tasks.spawn(async move {
            for i in 0..40 {
                audit.append(record(1000 + t * 100 + i)).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    for mut child in children {
        let status = child.wait().await?;
        ensure!(status.success(), "a child appender failed: {status}");
    }

    let total = 16 * 40 + 2 * CHILD_RECORDS;
    let all = audits[0].query(&Filter::default()).await?;
    assert_eq!(all.len(), usize::try_from(total)?);
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    let from_children = all.iter().filter(|r| r.actor.starts_with("child-")).count();
    assert_eq!(from_children, usize::try_from(2 * CHILD_RECORDS)?);
    assert_eq!(
        audits[0].verify().await?,
        Verification::Intact {
            records: u64::try_from(total)?
        }
    );
    let (code, out) = cli_verify(&url)?;
    assert_eq!(code, 0, "{out}");
    Ok(())
}

/// Not a test on its own: the second and third writer processes of
/// `many_connections_and_two_processes_append_to_one_chain`.
#[tokio::test]
#[ignore = "run as a child process by many_connections_and_two_processes_append_to_one_chain"]
async fn child_appender() -> Result<()> {
    let url = std::env::var(CHILD_URL).with_context(|| format!("{CHILD_URL} is not set"))?;
    let audit = Audit::open(&url).await?;
    let me = format!("child-{}", std::process::id());
    for i in 0..CHILD_RECORDS {
        let mut r = record(i);
        r.actor.clone_from(&me);
        audit.append(r).await?;
    }
    Ok(())
}
