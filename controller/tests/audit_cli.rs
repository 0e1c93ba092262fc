//! `gatemend audit list|show|export` as an operator runs them, on a real SQLite file.

use std::process::{Command, Output};

use anyhow::Result;
use gatemend_controller::audit::{Audit, Kind, NewRecord, Record};
use serde_json::json;

fn gatemend(args: &[&str]) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_gatemend"))
        .args(args)
        .output()?)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Six records: a finding, decision and action on web-7 (incident f-1) at 03:12, a host going
/// offline and back, a policy reload by an operator.
async fn fixture(url: &str) -> Result<Vec<Record>> {
    let base = 1_763_694_720_000; // 2025-11-21T03:12:00Z
    let audit = Audit::open(url).await?;
    let records = vec![
        NewRecord::new(base, Kind::Finding, "controller")
            .host("web-7")
            .incident("f-1")
            .body(json!({"cause": "php_fpm_down", "evidence": ["connect() failed (111)"]})),
        NewRecord::new(base + 10, Kind::Decision, "controller")
            .host("web-7")
            .incident("f-1")
            .policy("php-fpm-down", "sha256:abcd")
            .body(json!({"decision": "restart_unit"})),
        NewRecord::new(base + 20, Kind::ActionResult, "controller")
            .host("web-7")
            .incident("f-1")
            .body(json!({"result": "ok"})),
        NewRecord::new(base + 60_000, Kind::HostOffline, "controller").host("web-8"),
        NewRecord::new(base + 120_000, Kind::HostOnline, "controller").host("web-8"),
        NewRecord::new(base + 180_000, Kind::PolicyReloaded, "alice")
            .body(json!({"files": 3, "digest": "sha256:ef01"})),
    ];
    let mut out = Vec::new();
    for r in records {
        out.push(audit.append(r).await?);
    }
    audit.close().await;
    Ok(out)
}

fn json_lines(text: &str) -> Result<Vec<serde_json::Value>> {
    text.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

fn seqs(lines: &[serde_json::Value]) -> Vec<i64> {
    lines.iter().filter_map(|v| v["seq"].as_i64()).collect()
}

#[tokio::test]
async fn list_filters_and_prints_a_table_or_json_lines() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    fixture(&url).await?;

    let out = gatemend(&["audit", "list", "--db", &url])?;
    assert!(out.status.success());
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 7, "{table}");
    assert!(lines[0].contains("SEQ") && lines[0].contains("KIND") && lines[0].contains("HOST"));
    assert!(lines[2].contains("2025-11-21T03:12:00.010Z"), "{table}");
    assert!(
        lines[2].contains("decision") && lines[2].contains("php-fpm-down"),
        "{table}"
    );

    let out = gatemend(&["audit", "list", "--db", &url, "--host", "web-7", "--json"])?;
    assert_eq!(seqs(&json_lines(&stdout(&out))?), vec![1, 2, 3]);

    let out = gatemend(&[
        "audit",
        "list",
        "--db",
        &url,
        "--incident",
        "f-1",
        "--kind",
        "decision",
        "--json",
    ])?;
    let lines = json_lines(&stdout(&out))?;
    assert_eq!(seqs(&lines), vec![2]);
    assert_eq!(lines[0]["policy_digest"], "sha256:abcd");
    assert_eq!(lines[0]["body"]["decision"], "restart_unit");

    let out = gatemend(&[
        "audit",
        "list",
        "--db",
        &url,
        "--since",
        "2025-11-21T03:13:00Z",
        "--until",
        "1763694900000",
        "--json",
    ])?;
    assert_eq!(seqs(&json_lines(&stdout(&out))?), vec![4, 5]);

    let out = gatemend(&["audit", "list", "--db", &url, "--limit", "2", "--json"])?;
    assert_eq!(seqs(&json_lines(&stdout(&out))?), vec![1, 2]);

    let out = gatemend(&["audit", "list", "--db", &url, "--kind", "no_such_kind"])?;
    assert_eq!(out.status.code(), Some(2));
    let out = gatemend(&["audit", "list", "--db", &url, "--since", "last tuesday"])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since last tuesday"));
    Ok(())
}

#[tokio::test]
async fn show_prints_one_record_and_exits_1_when_there_is_none() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let records = fixture(&url).await?;

    let out = gatemend(&["audit", "show", "2", "--db", &url])?;
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("kind:          decision"), "{text}");
    assert!(
        text.contains(&format!("hash:          {}", records[1].hash)),
        "{text}"
    );
    assert!(text.contains("\"decision\": \"restart_unit\""), "{text}");

    let out = gatemend(&["audit", "show", "6", "--db", &url, "--json"])?;
    let value: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(value["actor"], "alice");
    assert_eq!(value["kind"], "policy_reloaded");

    let out = gatemend(&["audit", "show", "7", "--db", &url])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no audit record 7"));
    Ok(())
}

#[tokio::test]
async fn export_writes_every_field_and_the_records_read_back() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let records = fixture(&url).await?;

    let out = gatemend(&["audit", "export", "--db", &url, "--json"])?;
    assert!(out.status.success());
    let lines = json_lines(&stdout(&out))?;
    assert_eq!(lines.len(), records.len());
    for (line, record) in lines.into_iter().zip(&records) {
        assert!(line["at_rfc3339"].is_string());
        let back: Record = serde_json::from_value(line)?;
        assert_eq!(&back, record);
    }

    let out = gatemend(&["audit", "export", "--db", &url, "--host", "web-8"])?;
    let table = stdout(&out);
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.contains("PREV_HASH") && h.contains("HASH"))
    );
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(table.contains(&records[3].hash[..16]), "{table}");
    Ok(())
}
