//! Audit log figures (issue 7): append throughput and latency (p50/p99) on SQLite (a file on
//! disk, WAL, synchronous=FULL) and on PostgreSQL (a throwaway server this benchmark starts,
//! fsync on), with one writer and with eight concurrent writers; then `verify` over 1,000,000
//! records (the API, then `gatemend audit verify` with its peak RSS, via /usr/bin/time). A
//! benchmark measures; it passes or fails on nothing but errors.
//!
//! `cargo bench -p gatemend-controller --bench audit` (as root, PostgreSQL installed by
//! tests/setup-host.sh). Knobs: AUDIT_BENCH_APPENDS (default 2000 per run),
//! AUDIT_BENCH_VERIFY_RECORDS (default 1000000), AUDIT_BENCH_PG=0 to skip PostgreSQL.

// `psql` is for the tests only.
#[allow(dead_code)]
#[path = "../tests/audit_support/pg_cluster.rs"]
mod pg_cluster;

use std::time::{Duration, Instant};

use anyhow::Result;
use gatemend_controller::audit::{Audit, Kind, NewRecord, Verification};
use serde_json::json;

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A decision-sized record (~400 bytes of body).
fn record(i: u64) -> NewRecord {
    NewRecord::now(Kind::Decision, "controller")
        .host(format!("web-{}", i % 50))
        .incident(format!("f-{:016x}", i / 4))
        .policy("php-fpm-down", "sha256:9f2c4e0b7a1d3e5f6a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f")
        .body(json!({
            "decision": "restart_unit",
            "unit": "php8.2-fpm.service",
            "cause": "php_fpm_down",
            "evidence": ["connect() to unix:/run/php/php8.2-fpm.sock failed (111: Connection refused)"],
            "guards": {"cooldown": "ok", "attempts": 1, "max_concurrent": "1/2", "storm": "none"},
            "seq": i,
        }))
}

async fn appends(label: &str, audit: &Audit, total: u64, writers: u64) -> Result<()> {
    let per = total / writers;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let audit = audit.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(usize::try_from(per).unwrap_or(0));
            for i in 0..per {
                let t = Instant::now();
                audit.append(record(w * per + i)).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies: Vec<Duration> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let pick = |q: f64| {
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies.get(i).copied().unwrap_or_default()
    };
    println!(
        "{label:<34} {writers} writer(s) {:>6} appends  {:>8.0} appends/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pick(0.50).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        pick(1.0).as_secs_f64() * 1e3,
    );
    Ok(())
}

async fn verify_large(label: &str, audit: &Audit, records: u64) -> Result<()> {
    let load = Instant::now();
    let batch = 10_000u64;
    let mut done = 0;
    while done < records {
        let n = batch.min(records - done);
        audit
            .append_many((done..done + n).map(record).collect())
            .await?;
        done += n;
    }
    let loaded = load.elapsed();
    let started = Instant::now();
    let outcome = audit.verify().await?;
    let took = started.elapsed();
    let Verification::Intact { records: n } = outcome else {
        anyhow::bail!("verify of a fresh chain failed: {outcome:?}");
    };
    println!(
        "{label:<34} verify {n} records: {:.2} s ({:.0} records/s; loading them in batches of {batch} took {:.1} s)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        loaded.as_secs_f64()
    );
    Ok(())
}

async fn run() -> Result<()> {
    let total = env_or("AUDIT_BENCH_APPENDS", 2000);
    let verify_records = env_or("AUDIT_BENCH_VERIFY_RECORDS", 1_000_000);

    // On disk (not tmpfs): the fsync at each commit is what an append costs.
    let dir = tempfile::Builder::new()
        .prefix("gatemend-audit-bench-")
        .tempdir_in("/var/tmp")?;
    let url = format!("sqlite://{}", dir.path().join("append.db").display());
    let audit = Audit::open(&url).await?;
    appends("sqlite (WAL, synchronous=FULL)", &audit, total, 1).await?;
    appends("sqlite (WAL, synchronous=FULL)", &audit, total, 8).await?;
    audit.close().await;

    if env_or("AUDIT_BENCH_PG", 1) != 0 {
        let pg = pg_cluster::PgCluster::start(true)?;
        let url = pg.create_db("bench")?;
        let audit = Audit::open(&url).await?;
        appends("postgresql (fsync on, loopback TCP)", &audit, total, 1).await?;
        appends("postgresql (fsync on, loopback TCP)", &audit, total, 8).await?;
        // Eight writers in eight pools: the head row lock across connections, as with several
        // controllers.
        let pools = futures_util::future::try_join_all((0..8).map(|_| Audit::open(&url))).await?;
        let started = Instant::now();
        let per = total / 8;
        let mut tasks = tokio::task::JoinSet::new();
        for (w, audit) in pools.into_iter().enumerate() {
            tasks.spawn(async move {
                for i in 0..per {
                    audit.append(record(w as u64 * per + i)).await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        println!(
            "{:<34} 8 pools     {:>6} appends  {:>8.0} appends/s",
            "postgresql (fsync on, loopback TCP)",
            per * 8,
            (per * 8) as f64 / started.elapsed().as_secs_f64()
        );
        let big = pg.create_db("verify")?;
        let audit = Audit::open(&big).await?;
        verify_large("postgresql", &audit, verify_records).await?;
    }

    let url = format!("sqlite://{}", dir.path().join("verify.db").display());
    let audit = Audit::open(&url).await?;
    verify_large("sqlite", &audit, verify_records).await?;
    audit.close().await;
    cli_verify(&url)?;
    Ok(())
}

/// `gatemend audit verify` on the same file, as an operator runs it: wall time and peak RSS
/// (from GNU time), which shows the rows are streamed, not loaded.
fn cli_verify(url: &str) -> Result<()> {
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "%e s, max RSS %M KiB"])
        .arg(env!("CARGO_BIN_EXE_gatemend"))
        .args(["audit", "verify", "--db", url])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "gatemend audit verify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "{:<34} `gatemend audit verify`: {} -> {}",
        "sqlite",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}
