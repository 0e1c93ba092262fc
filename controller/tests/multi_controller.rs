//! Several controllers on one PostgreSQL database (issue 9), as real processes: the controller
//! binary started two or three times on a throwaway PostgreSQL server (tests/setup-host.sh
//! installs it; without it these tests fail, they do not skip), raw gRPC streams posing as
//! agents spread over the controllers, the audit read back with the real `gatemend audit`.
//!
//! - the fleet guard counts the actions in flight over the whole fleet, whichever controller
//!   decided them;
//! - one approval approved at once through two controllers is dispatched once;
//! - while PostgreSQL is down no controller decides (their /healthz says so), and the findings
//!   that waited are decided, acted on and audited once when it returns.
//!
//! The figures of BENCHMARKS.md ("Several controllers on one PostgreSQL") come from the ignored
//! test at the end.

// Test helpers panic by design: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// `psql` is for the audit tests only.
#[allow(dead_code)]
#[path = "audit_support/pg_cluster.rs"]
mod pg_cluster;
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gatemend_proto::v1::{ActionRequest, AgentMessage};
use pg_cluster::PgCluster;
use support::{Agent, Controller, Launch, fpm_down};

/// Restart php-fpm when it is down, at most two hosts of the fleet at a time. The verify
/// timeout keeps unanswered actions in flight for the whole test (they expire 30 s after it).
const RESTART_TWO_AT_A_TIME: &str = "policies:
  - name: restart
    match: { cause: [upstream_socket_missing], root_cause: [service_down], unit: ['php*-fpm.service'] }
    mode: auto
    actions: [restart_unit]
    verify: { timeout: 60s }
    guards: { fleet: { max_concurrent: 2, max_percent: 100 } }
";

/// The same without the fleet limit that matters here (the cooldown keeps its default).
const RESTART: &str = "policies:
  - name: restart
    match: { cause: [upstream_socket_missing], root_cause: [service_down], unit: ['php*-fpm.service'] }
    mode: auto
    actions: [restart_unit]
    verify: { timeout: 60s }
    guards: { fleet: { max_concurrent: 50, max_percent: 100 } }
";

/// `n` controllers on database `db`, each with its own id, ports, operators and log.
fn controllers(db: &str, n: usize, policy: &str) -> Vec<Controller> {
    (0..n)
        .map(|i| {
            let id = format!("ctl-{i}");
            Controller::launch(&Launch {
                db: Some(db),
                policy,
                args: &["--controller-id", &id],
                ..Launch::default()
            })
        })
        .collect()
}

/// Every controller's log, for failure messages.
fn logs(ctls: &[Controller]) -> String {
    ctls.iter()
        .enumerate()
        .map(|(i, c)| format!("--- ctl-{i} ---\n{}", c.log_text()))
        .collect()
}

/// A host's stand-in agent and the controller it is connected to.
struct Host {
    name: String,
    controller: usize,
    agent: Agent,
}

/// Hosts named `{prefix}{i}`, i from 1, connected to the controllers in turn.
async fn hosts(prefix: &str, n: usize, ctls: &[Controller]) -> Vec<Host> {
    let mut hosts = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("{prefix}{}", i + 1);
        let controller = i % ctls.len();
        let agent = Agent::connect(ctls[controller].grpc, &name).await;
        hosts.push(Host {
            name,
            controller,
            agent,
        });
    }
    hosts
}

/// Every action request that reached any of `hosts` within `wait`, with its host's index.
/// All streams are read at once; what arrived before the call counts too.
async fn requests(hosts: &mut [Host], wait: Duration) -> Vec<(usize, ActionRequest)> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut got = Vec::new();
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let round = futures_util::future::join_all(
            hosts.iter_mut().map(|h| h.agent.next_request(remaining)),
        )
        .await;
        let before = got.len();
        got.extend(
            round
                .into_iter()
                .enumerate()
                .filter_map(|(i, r)| r.map(|r| (i, r))),
        );
        // A round after the deadline still takes what is already there.
        if got.len() == before {
            return got;
        }
    }
}

/// The whole audit log, oldest first, as `gatemend audit list --json` prints it.
async fn audit(db: &str) -> Vec<serde_json::Value> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatemend"))
        .args(["audit", "list", "--json", "--db", db])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "gatemend audit list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn of_kind<'a>(records: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    records.iter().filter(|r| r["kind"] == kind).collect()
}

/// Waits until the audit holds at least `n` records of `kind`; returns the whole log.
async fn wait_audit(db: &str, kind: &str, n: usize, ctls: &[Controller]) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let records = audit(db).await;
        let have = of_kind(&records, kind).len();
        if have >= n {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "the audit holds {have} {kind} records, not {n}; the controllers' logs:\n{}",
            logs(ctls)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `gatemend audit verify` on `db`: passes, or the test fails with its output.
async fn assert_verifies(db: &str) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatemend"))
        .args(["audit", "verify", "--db", db])
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "audit verify: {text}");
    assert!(text.contains("intact"), "{text}");
}

/// Waits until a controller's log has `needle`.
async fn wait_log(ctl: &Controller, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ctl.log_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "the controller never logged `{needle}`; its log:\n{}",
            ctl.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every controller's /healthz answers `status` with `deciding`.
async fn wait_health(ctls: &[Controller], status: u16, deciding: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, ctl) in ctls.iter().enumerate() {
        loop {
            let (got, body) = ctl.healthz().await;
            if got == status && body["deciding"] == deciding {
                if !deciding {
                    assert!(
                        body["why"].as_str().is_some_and(|w| !w.is_empty()),
                        "a controller that stopped deciding says why: {body}"
                    );
                }
                break;
            }
            assert!(
                Instant::now() < deadline,
                "ctl-{i} /healthz stayed {got} {body}, not {status} deciding={deciding}; its log:\n{}",
                ctl.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_controllers_hold_the_fleet_to_max_concurrent_actions_in_flight() {
    let pg = PgCluster::start(false).unwrap();
    let db = pg.create_db("fleet").unwrap();
    let ctls = controllers(&db, 3, RESTART_TWO_AT_A_TIME);
    let mut fleet = hosts("web", 9, &ctls).await;
    for h in &fleet {
        h.agent
            .send(fpm_down(&h.name, &format!("{}/f", h.name), 1))
            .await;
    }
    // Every finding decided (each controller decided its three), then a moment for any
    // request that would still be on its way.
    let records = wait_audit(&db, "decision", 9, &ctls).await;
    let sent = requests(&mut fleet, Duration::from_secs(3)).await;
    let on: Vec<&str> = sent.iter().map(|(i, _)| fleet[*i].name.as_str()).collect();
    assert_eq!(
        sent.len(),
        2,
        "action requests reached {on:?}; the controllers' logs:\n{}",
        logs(&ctls)
    );
    let records = if of_kind(&records, "action_dispatched").len() < 2 {
        wait_audit(&db, "action_dispatched", 2, &ctls).await
    } else {
        records
    };
    let dispatched = of_kind(&records, "action_dispatched");
    assert_eq!(dispatched.len(), 2, "{dispatched:?}");
    let decisions: Vec<(String, String)> = of_kind(&records, "decision")
        .iter()
        .map(|r| {
            (
                r["body"]["decision"].as_str().unwrap().to_owned(),
                r["body"]["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let count = |d: &str| decisions.iter().filter(|(x, _)| x == d).count();
    assert_eq!((count("execute"), count("held")), (2, 7), "{decisions:?}");
    assert!(
        decisions
            .iter()
            .filter(|(d, _)| d == "held")
            .all(|(_, detail)| detail.starts_with("held by fleet")),
        "{decisions:?}"
    );

    // One action ends: its slot is free for the whole fleet. The held hosts report again;
    // exactly one of them, whichever controller it talks to, gets the slot.
    let (done, request) = &sent[0];
    let done_host = fleet[*done].name.clone();
    fleet[*done]
        .agent
        .succeed(&done_host, request, "Restart php8.2-fpm.service: done")
        .await;
    wait_log(
        &ctls[fleet[*done].controller],
        "Every action of the policy succeeded.",
    )
    .await;
    let busy: Vec<String> = sent.iter().map(|(i, _)| fleet[*i].name.clone()).collect();
    for h in fleet.iter().filter(|h| !busy.contains(&h.name)) {
        h.agent
            .send(fpm_down(&h.name, &format!("{}/f", h.name), 2))
            .await;
    }
    let records = wait_audit(&db, "decision", 9 + 7, &ctls).await;
    let more = requests(&mut fleet, Duration::from_secs(3)).await;
    let on: Vec<&str> = more.iter().map(|(i, _)| fleet[*i].name.as_str()).collect();
    assert_eq!(
        more.len(),
        1,
        "after one action ended, requests reached {on:?}; the controllers' logs:\n{}",
        logs(&ctls)
    );
    assert!(!busy.contains(&fleet[more[0].0].name));
    let records = if of_kind(&records, "action_dispatched").len() < 3 {
        wait_audit(&db, "action_dispatched", 3, &ctls).await
    } else {
        records
    };
    assert_eq!(of_kind(&records, "action_dispatched").len(), 3);
    assert_verifies(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_approval_approved_through_two_controllers_at_once_is_dispatched_once() {
    let pg = PgCluster::start(false).unwrap();
    let db = pg.create_db("approvals").unwrap();
    // The support's default policy: restart php-fpm after an operator approves.
    let ctls = controllers(&db, 2, support::APPROVE_RESTART);
    let (a, b) = (&ctls[0], &ctls[1]);
    let mut agent = Agent::connect(a.grpc, "web1").await;
    agent.report_fpm_down("web1", "web1/f1").await;
    let id = a.pending_approval().await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // B sees the same approval: it is in the shared database.
    let (status, seen) = b.get(&b.vera, &format!("/api/v1/approvals/{id}")).await;
    assert_eq!((status, seen["state"].as_str()), (200, Some("pending")));

    let path = format!("/api/v1/approvals/{id}/approve");
    let ((sa, ba), (sb, bb)) = tokio::join!(
        a.post(
            &a.alice,
            &path,
            serde_json::json!({ "reason": "approved on A" })
        ),
        b.post(
            &b.alice,
            &path,
            serde_json::json!({ "reason": "approved on B" })
        ),
    );
    let mut statuses = [sa, sb];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "A: {sa} {ba}; B: {sb} {bb}");

    let request = agent
        .next_request(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("nothing dispatched; the logs:\n{}", logs(&ctls)));
    assert_eq!(request.unit, "php8.2-fpm.service");
    assert_eq!(
        agent.next_request(Duration::from_secs(3)).await,
        None,
        "dispatched twice; the logs:\n{}",
        logs(&ctls)
    );
    let records = wait_audit(&db, "action_dispatched", 1, &ctls).await;
    assert_eq!(of_kind(&records, "action_dispatched").len(), 1);
    let approved = of_kind(&records, "approved");
    assert_eq!(approved.len(), 1, "{approved:?}");
    let winner = if sa == 200 {
        "approved on A"
    } else {
        "approved on B"
    };
    assert_eq!(approved[0]["body"]["reason"], winner);
    assert_verifies(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_down_no_controller_decides_and_nothing_is_lost_when_it_returns() {
    let pg = PgCluster::start(false).unwrap();
    let db = pg.create_db("restart").unwrap();
    let ctls = controllers(&db, 3, RESTART);
    wait_health(&ctls, 200, true).await;
    // Three hosts mended before the outage; then they keep reporting (new revisions, held by
    // the cooldown), the load that goes on through the outage.
    let mut early = hosts("early", 3, &ctls).await;
    for h in &early {
        h.agent
            .send(fpm_down(&h.name, &format!("{}/f", h.name), 1))
            .await;
    }
    let mut mended = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while mended < early.len() {
        assert!(
            Instant::now() < deadline,
            "the early hosts were not all mended; the logs:\n{}",
            logs(&ctls)
        );
        for (i, request) in requests(&mut early, Duration::from_secs(1)).await {
            let host = early[i].name.clone();
            early[i].agent.succeed(&host, &request, "done").await;
            mended += 1;
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = early
        .iter()
        .map(|h| {
            let (tx, host, stop) = (h.agent.sender(), h.name.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                // The last revision sent; a send waits while the controller does not read.
                let mut revision = 1;
                while !stop.load(Ordering::Relaxed) {
                    let finding = fpm_down(&host, &format!("{host}/f"), revision + 1);
                    if tx
                        .send(AgentMessage {
                            body: Some(finding),
                        })
                        .await
                        .is_err()
                    {
                        break;
                    }
                    revision += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (host, revision)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Three more hosts, connected now; their findings, which would be acted on at once, are
    // sent while no controller can decide.
    let mut late = hosts("late", 3, &ctls).await;
    pg.stop().unwrap();
    wait_health(&ctls, 503, false).await;
    for h in &late {
        h.agent
            .send(fpm_down(&h.name, &format!("{}/f", h.name), 1))
            .await;
    }
    let mut everyone: Vec<Host> = early.drain(..).chain(late.drain(..)).collect();
    let acted = requests(&mut everyone, Duration::from_secs(4)).await;
    assert!(
        acted.is_empty(),
        "an action was sent while the database was down: {acted:?}; the logs:\n{}",
        logs(&ctls)
    );
    for (i, ctl) in ctls.iter().enumerate() {
        let (status, body) = ctl.healthz().await;
        assert_eq!(status, 503, "ctl-{i} {body}");
    }

    pg.start_again().unwrap();
    wait_health(&ctls, 200, true).await;
    let mut acted = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acted.len() < 3 && Instant::now() < deadline {
        acted.extend(requests(&mut everyone, Duration::from_secs(1)).await);
    }
    let mut on: Vec<&str> = acted
        .iter()
        .map(|(i, _)| everyone[*i].name.as_str())
        .collect();
    on.sort_unstable();
    assert_eq!(
        on,
        ["late1", "late2", "late3"],
        "the findings that waited were acted on once each; the logs:\n{}",
        logs(&ctls)
    );
    stop.store(true, Ordering::Relaxed);
    let mut sent: BTreeMap<String, u64> = BTreeMap::new();
    for task in load {
        let (host, last) = task.await.unwrap();
        sent.insert(format!("{host}/f"), last);
    }
    for h in &everyone[3..] {
        sent.insert(format!("{}/f", h.name), 1);
    }

    // Every finding revision sent is in the audit exactly once, and decided.
    let total: u64 = sent.values().sum();
    let records = wait_audit(&db, "decision", usize::try_from(total).unwrap(), &ctls).await;
    let mut seen: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for r in of_kind(&records, "finding") {
        let key = (
            r["incident"].as_str().unwrap().to_owned(),
            r["body"]["revision"].as_u64().unwrap(),
        );
        *seen.entry(key).or_default() += 1;
    }
    let expected: BTreeMap<(String, u64), usize> = sent
        .iter()
        .flat_map(|(id, last)| (1..=*last).map(move |rev| ((id.clone(), rev), 1)))
        .collect();
    assert_eq!(seen, expected, "finding records by (incident, revision)");
    assert_eq!(
        of_kind(&records, "decision").len(),
        usize::try_from(total).unwrap()
    );
    assert_eq!(of_kind(&records, "action_dispatched").len(), 6);
    assert!(
        !sent.is_empty() && sent.values().filter(|last| **last > 1).count() == 3,
        "the early hosts kept reporting: {sent:?}"
    );
    assert_verifies(&db).await;
}

/// Escalate once per host, then hold every finding by the cooldown: every finding goes through
/// the guards (shared state in the database), is audited and decided; nothing is sent to the
/// simulated agents.
const BENCH_POLICY: &str = "policies:
  - name: bench-refused
    match: { cause: [upstream_refused] }
    mode: auto
    actions: [escalate]
    guards: { cooldown: 1h }
";

/// The decision latency histogram and the dispatcher's batches, summed over controllers.
#[derive(Debug, Default)]
struct Metrics {
    /// (upper bound in seconds, cumulative count), ascending, `+Inf` last.
    buckets: Vec<(f64, f64)>,
    count: f64,
    sum: f64,
    /// Audit appends by the dispatchers: one per batch of decisions.
    batches: f64,
    /// Their time, seconds.
    batch_audit_sum: f64,
}

impl Metrics {
    fn of(samples: &[BTreeMap<String, f64>]) -> Metrics {
        let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        let mut h = Metrics::default();
        for s in samples {
            for (series, value) in s {
                if let Some(le) = series
                    .strip_prefix("gatemend_decision_seconds_bucket{le=\"")
                    .and_then(|r| r.strip_suffix("\"}"))
                {
                    let bound = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap()
                    };
                    buckets.entry(bound.to_bits()).or_insert((bound, 0.0)).1 += value;
                }
            }
            h.count += s["gatemend_decision_seconds_count"];
            h.sum += s["gatemend_decision_seconds_sum"];
            h.batches += s["gatemend_audit_write_seconds_count"];
            h.batch_audit_sum += s["gatemend_audit_write_seconds_sum"];
        }
        h.buckets = buckets.into_values().collect();
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        h
    }

    /// The q-quantile of the observations since `before`, interpolated within its bucket as
    /// Prometheus's histogram_quantile does; infinite above the largest finite bucket.
    fn quantile_since(&self, before: &Metrics, q: f64) -> f64 {
        let rank = q * (self.count - before.count);
        let mut lower = (0.0, 0.0);
        for (le, n) in &self.buckets {
            let was = before
                .buckets
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, n)| *n);
            let n = n - was;
            if n >= rank {
                if le.is_infinite() {
                    return f64::INFINITY;
                }
                let within = (rank - lower.1) / (n - lower.1).max(f64::MIN_POSITIVE);
                return lower.0 + (le - lower.0) * within;
            }
            lower = (*le, n);
        }
        f64::NAN
    }

    /// The mean of the observations since `before`, seconds.
    fn mean_since(&self, before: &Metrics) -> f64 {
        (self.sum - before.sum) / (self.count - before.count)
    }
}

async fn snapshot(ctls: &[Controller]) -> Metrics {
    let mut samples = Vec::new();
    for c in ctls {
        samples.push(c.metrics().await);
    }
    Metrics::of(&samples)
}

/// Waits until the controllers have decided everything they were sent (the count stops rising).
async fn settle(ctls: &[Controller]) -> Metrics {
    let mut last = snapshot(ctls).await;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = snapshot(ctls).await;
        if now.count == last.count {
            return now;
        }
        last = now;
    }
}

/// Seconds as milliseconds, or "> N ms" past the largest bucket.
fn ms(seconds: f64, largest: f64) -> String {
    if seconds.is_infinite() {
        format!("> {:.0} ms", largest * 1000.0)
    } else {
        format!("{:.2} ms", seconds * 1000.0)
    }
}

/// CPU time so far, in clock ticks: the machine's (all cores) and PostgreSQL's processes'.
#[derive(Debug)]
struct CpuTicks {
    busy: u64,
    idle: u64,
    postgres: u64,
    cores: usize,
}

impl CpuTicks {
    /// Every core's ticks between two readings.
    fn total_since(&self, before: &CpuTicks) -> f64 {
        (self.busy + self.idle - before.busy - before.idle) as f64
    }
}

fn cpu_ticks() -> CpuTicks {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    // cpu  user nice system idle iowait irq softirq steal ...
    let all: Vec<u64> = stat.lines().next().unwrap()[3..]
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let idle = all[3] + all[4];
    let busy = all[..8].iter().sum::<u64>() - idle;
    let cores = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    let postgres = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|s| s.contains(" (postgres) "))
        .map(|s| {
            // utime and stime, the 14th and 15th fields, counted after the command name.
            let f: Vec<u64> = s
                .rsplit_once(')')
                .unwrap()
                .1
                .split_whitespace()
                .skip(11)
                .take(2)
                .map(|v| v.parse().unwrap())
                .collect();
            f.iter().sum::<u64>()
        })
        .sum();
    CpuTicks {
        busy,
        idle,
        postgres,
        cores,
    }
}

/// One loadgen run against `ctls`: its report, then the findings decided per second while it
/// ran (from its 3rd second to the end of sending) and the decision latency of the run.
async fn run_load(ctls: &[Controller], args: &[&str], duration: u64) -> String {
    let before = settle(ctls).await;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatemend-loadgen"));
    for c in ctls {
        command
            .args(["--target", &c.grpc.to_string()])
            .args(["--controller-pid", &c.pid().to_string()]);
    }
    command
        .args(args)
        .args(["--duration", &duration.to_string()])
        .stdout(std::process::Stdio::piped());
    let child = command.spawn().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (from, t0, cpu0) = (snapshot(ctls).await.count, Instant::now(), cpu_ticks());
    tokio::time::sleep(Duration::from_secs(duration.saturating_sub(3).max(1))).await;
    let (to, t1, cpu1) = (snapshot(ctls).await.count, Instant::now(), cpu_ticks());
    let out = child.wait_with_output().await.unwrap();
    let after = settle(ctls).await;
    let largest = after
        .buckets
        .iter()
        .map(|(le, _)| *le)
        .filter(|le| le.is_finite())
        .fold(0.0, f64::max);
    let busy =
        |f: fn(&CpuTicks) -> u64| 100.0 * (f(&cpu1) - f(&cpu0)) as f64 / cpu1.total_since(&cpu0);
    format!(
        "{}machine CPU busy:   {:.0}% of {} cores, PostgreSQL server {:.0}% of them (3rd second to end of sending)\n\
         decided:            {:.0} in the run, {:.0}/s (3rd second to end of sending)\n\
         decision latency:   p50 {}, p99 {}, mean {} (gatemend_decision_seconds, p50/p99 bucket-interpolated)\n\
         batches:            {:.0}, {:.1} findings each, their audit append {} on average (gatemend_audit_write_seconds)\n",
        String::from_utf8_lossy(&out.stdout),
        busy(|c| c.busy),
        cpu1.cores,
        busy(|c| c.postgres),
        after.count - before.count,
        (to - from) / (t1 - t0).as_secs_f64(),
        ms(after.quantile_since(&before, 0.50), largest),
        ms(after.quantile_since(&before, 0.99), largest),
        ms(after.mean_since(&before), f64::INFINITY),
        after.batches - before.batches,
        (after.count - before.count) / (after.batches - before.batches),
        ms(
            (after.batch_audit_sum - before.batch_audit_sum) / (after.batches - before.batches),
            f64::INFINITY
        ),
    )
}

/// The figures of BENCHMARKS.md, "Several controllers on one PostgreSQL":
/// `cargo test --release -p gatemend-controller --test multi_controller -- --ignored --nocapture`
/// (MULTI_BENCH_RATES: the paced runs' findings/s, default "500,2000"; MULTI_BENCH_AGENTS:
/// default 100; MULTI_BENCH_OPEN: each agent's open findings, updated in turn, default 1; 0
/// makes every finding a new one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it with --ignored --nocapture, in release"]
async fn figures_findings_per_second_and_decision_latency_with_one_and_three_controllers() {
    let rates = std::env::var("MULTI_BENCH_RATES").unwrap_or_else(|_| "500,2000".into());
    let agents = std::env::var("MULTI_BENCH_AGENTS").unwrap_or_else(|_| "100".into());
    let open = std::env::var("MULTI_BENCH_OPEN").unwrap_or_else(|_| "1".into());
    let duration = 15;
    let common = [
        "--agents",
        agents.as_str(),
        "--open-findings",
        open.as_str(),
    ];
    let mut runs = vec![common.to_vec()];
    for rate in rates.split(',') {
        runs.push([&common[..], &["--rate", rate]].concat());
    }
    for n in [1, 3] {
        let pg = PgCluster::start(true).unwrap();
        let db = pg.create_db("bench").unwrap();
        let ctls: Vec<Controller> = (0..n)
            .map(|i| {
                let id = format!("bench-{i}");
                Controller::launch(&Launch {
                    db: Some(&db),
                    policy: BENCH_POLICY,
                    args: &[
                        "--controller-id",
                        &id,
                        "--rate-limit",
                        "1000000",
                        "--rate-burst",
                        "1000000",
                        "--heartbeat-timeout",
                        "300",
                    ],
                    log_level: "warn",
                    tls_dir: None,
                })
            })
            .collect();
        for args in &runs {
            let report = run_load(&ctls, args, duration).await;
            println!(
                "== {n} controller(s) on one PostgreSQL (fsync on), gatemend-loadgen {} --duration {duration}:\n{report}",
                args.join(" ")
            );
        }
        assert_verifies(&db).await;
    }
}
