//! The audit log on a real SQLite file: append and verify, tampering with raw SQL caught at the
//! right seq (by the API and by `gatemend audit verify`), concurrent writers keep one chain.

use std::process::Command;

use anyhow::{Context, Result};
use gatemend_controller::audit::{Audit, Filter, Kind, NewRecord, Verification};
use serde_json::json;

fn db_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("audit.db").display())
}

fn record(i: i64) -> NewRecord {
    NewRecord::new(1_700_000_000_000 + i, Kind::ActionStep, "controller")
        .host(format!("web-{}", i % 3))
        .incident(format!("f-{}", i % 2))
        .policy("php-fpm", "sha256:abc")
        .body(json!({"step": i, "output": "Restarted php8.2-fpm.service", "nested": {"b": 1, "a": [i]}}))
}

async fn filled(dir: &tempfile::TempDir, n: i64) -> Result<Audit> {
    let audit = Audit::open(&db_url(dir)).await?;
    for i in 1..=n {
        audit.append(record(i)).await?;
    }
    Ok(audit)
}

/// Raw SQL on the file, as an attacker with write access would (not through the audit API).
async fn tamper(dir: &tempfile::TempDir, statements: &[&'static str]) -> Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&db_url(dir)).await?;
    for sql in statements {
        sqlx::query(*sql)
            .execute(&mut conn)
            .await
            .with_context(|| *sql)?;
    }
    conn.close().await?;
    Ok(())
}

fn broken_seq(v: Verification) -> i64 {
    match v {
        Verification::Broken(b) => b.seq,
        Verification::Intact { records } => {
            panic!("tampering not caught ({records} records intact)")
        }
    }
}

/// `gatemend audit verify`: its exit code and stdout.
fn cli_verify(dir: &tempfile::TempDir) -> Result<(i32, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_gatemend"))
        .args(["audit", "verify", "--db", &db_url(dir)])
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

#[tokio::test]
async fn appended_records_chain_verify_and_read_back() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let audit = filled(&dir, 10).await?;
    assert_eq!(audit.verify().await?, Verification::Intact { records: 10 });

    let all = audit.query(&Filter::default()).await?;
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(all[0].prev_hash, gatemend_controller::audit::GENESIS_HEX);
    for pair in all.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    assert_eq!(all[4].body, record(5).body);
    assert_eq!(audit.get(5).await?.as_ref(), Some(&all[4]));
    assert_eq!(audit.get(11).await?, None);

    let web1 = audit
        .query(&Filter {
            host: Some("web-1".into()),
            ..Filter::default()
        })
        .await?;
    assert_eq!(
        web1.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 4, 7, 10]
    );
    let window = audit
        .query(&Filter {
            incident: Some("f-0".into()),
            since: Some(1_700_000_000_004),
            until: Some(1_700_000_000_010),
            limit: Some(2),
            ..Filter::default()
        })
        .await?;
    assert_eq!(window.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![4, 6]);
    let none = audit
        .query(&Filter {
            kind: Some(Kind::Approved),
            ..Filter::default()
        })
        .await?;
    assert!(none.is_empty());

    // Reopening the file keeps the chain going where it was.
    audit.close().await;
    let again = Audit::open(&db_url(&dir)).await?;
    assert_eq!(again.append(record(11)).await?.seq, 11);
    assert_eq!(again.verify().await?, Verification::Intact { records: 11 });
    // A batch is consecutive in the chain.
    let batch = again
        .append_many(vec![record(12), record(13), record(14)])
        .await?;
    assert_eq!(
        batch.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![12, 13, 14]
    );
    assert_eq!(batch[1].prev_hash, batch[0].hash);
    assert_eq!(again.get(14).await?.as_ref(), Some(&batch[2]));
    assert!(again.append_many(Vec::new()).await?.is_empty());
    assert_eq!(again.verify().await?, Verification::Intact { records: 14 });
    // A batch larger than one INSERT statement takes (a busy dispatcher's): still consecutive,
    // every row stored as returned.
    let big = again.append_many((15..=614).map(record).collect()).await?;
    assert_eq!(
        big.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (15..=614).collect::<Vec<_>>()
    );
    assert_eq!(again.get(300).await?.as_ref(), Some(&big[285]));
    assert_eq!(again.get(614).await?.as_ref(), big.last());
    assert_eq!(again.verify().await?, Verification::Intact { records: 614 });
    assert_eq!(cli_verify(&dir)?.0, 0);
    Ok(())
}

#[tokio::test]
async fn the_file_is_in_wal_mode() -> Result<()> {
    use sqlx::Connection;
    let dir = tempfile::tempdir()?;
    let _audit = filled(&dir, 1).await?;
    let mut conn = sqlx::SqliteConnection::connect(&db_url(&dir)).await?;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(mode, "wal");
    Ok(())
}

#[tokio::test]
async fn an_edited_body_is_caught_at_its_seq() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let audit = filled(&dir, 10).await?;
    tamper(
        &dir,
        &[r#"UPDATE audit_log SET body = '{"step":7,"output":"nothing happened"}' WHERE seq = 7"#],
    )
    .await?;
    assert_eq!(broken_seq(audit.verify().await?), 7);
    let (code, out) = cli_verify(&dir)?;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BROKEN at record 7:"), "{out}");
    Ok(())
}

#[tokio::test]
async fn an_edited_actor_or_time_is_caught() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let audit = filled(&dir, 5).await?;
    tamper(
        &dir,
        &["UPDATE audit_log SET actor = 'alice' WHERE seq = 2"],
    )
    .await?;
    assert_eq!(broken_seq(audit.verify().await?), 2);
    tamper(
        &dir,
        &[
            "UPDATE audit_log SET actor = 'controller' WHERE seq = 2",
            "UPDATE audit_log SET at = at + 1 WHERE seq = 1",
        ],
    )
    .await?;
    assert_eq!(broken_seq(audit.verify().await?), 1);
    Ok(())
}

#[tokio::test]
async fn a_deleted_row_is_named() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let audit = filled(&dir, 10).await?;
    tamper(&dir, &["DELETE FROM audit_log WHERE seq = 4"]).await?;
    assert_eq!(broken_seq(audit.verify().await?), 4);
    let (code, out) = cli_verify(&dir)?;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("record 4 is missing"), "{out}");
    Ok(())
}

#[tokio::test]
async fn deleting_the_newest_rows_is_caught_by_the_head() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let audit = filled(&dir, 10).await?;
    tamper(&dir, &["DELETE FROM audit_log WHERE seq >= 9"]).await?;
    assert_eq!(broken_seq(audit.verify().await?), 9);
    assert_eq!(cli_verify(&dir)?.0, 1);
    Ok(())
}

#[tokio::test]
async fn a_deleted_row_with_renumbered_successors_is_caught() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let audit = filled(&dir, 10).await?;
    tamper(
        &dir,
        &[
            "DELETE FROM audit_log WHERE seq = 5",
            "UPDATE audit_log SET seq = seq - 1 WHERE seq > 5",
            "UPDATE audit_head SET seq = 9",
        ],
    )
    .await?;
    assert_eq!(broken_seq(audit.verify().await?), 5);
    Ok(())
}

#[tokio::test]
async fn swapped_rows_are_caught_at_the_first() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let audit = filled(&dir, 10).await?;
    tamper(
        &dir,
        &[
            "UPDATE audit_log SET seq = -1 WHERE seq = 3",
            "UPDATE audit_log SET seq = 3 WHERE seq = 8",
            "UPDATE audit_log SET seq = 8 WHERE seq = -1",
        ],
    )
    .await?;
    assert_eq!(broken_seq(audit.verify().await?), 3);
    let (code, out) = cli_verify(&dir)?;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BROKEN at record 3:"), "{out}");
    Ok(())
}

#[tokio::test]
async fn many_tasks_and_pools_appending_at_once_keep_one_chain() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = db_url(&dir);
    // Two independent `Audit`s on one file (as two controller processes would be), each shared
    // by eight tasks; half of the tasks append batches of three, which must stay consecutive.
    let a = Audit::open(&url).await?;
    let b = Audit::open(&url).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..16i64 {
        let audit = if t % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            let mut got = Vec::new();
            for i in 0..25 {
                let n = t * 100 + i;
                if t % 4 < 2 {
                    let r = audit.append(record(n)).await?;
                    got.push((r, n));
                } else {
                    let batch = audit
                        .append_many(vec![record(n), record(n + 10_000), record(n + 20_000)])
                        .await?;
                    assert_eq!(batch[1].seq, batch[0].seq + 1);
                    assert_eq!(batch[2].seq, batch[0].seq + 2);
                    got.extend(batch.into_iter().zip([n, n + 10_000, n + 20_000]));
                }
            }
            anyhow::Ok(got)
        });
    }
    let mut got = Vec::new();
    while let Some(done) = tasks.join_next().await {
        got.extend(done??);
    }
    let total = 8 * 25 + 8 * 25 * 3;
    // Each caller got back its own record, as stored.
    for (returned, n) in &got {
        assert_eq!(returned.body, record(*n).body);
        assert_eq!(a.get(returned.seq).await?.as_ref(), Some(returned));
    }
    let mut seqs: Vec<i64> = got.iter().map(|(r, _)| r.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    assert_eq!(
        a.verify().await?,
        Verification::Intact {
            records: u64::try_from(total)?
        }
    );
    assert_eq!(cli_verify(&dir)?.0, 0);
    Ok(())
}

#[tokio::test]
async fn reading_commands_do_not_create_a_missing_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_gatemend"))
        .args(["audit", "verify", "--db", &db_url(&dir)])
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no audit database at"));
    assert!(!dir.path().join("audit.db").exists());
    Ok(())
}

#[tokio::test]
async fn without_a_chain_head_every_waiting_append_fails_and_nothing_is_written() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let audit = filled(&dir, 3).await?;
    tamper(&dir, &["DELETE FROM audit_head"]).await?;
    let (one, two) = tokio::join!(audit.append(record(4)), audit.append(record(5)));
    for outcome in [one, two] {
        assert!(
            matches!(outcome, Err(gatemend_controller::audit::AuditError::NoHead)),
            "{outcome:?}"
        );
    }
    assert_eq!(audit.query(&Filter::default()).await?.len(), 3);
    Ok(())
}
