//! Figures, not a pass/fail test: the time from a php-fpm fault to recovery, with gatemend and
//! with Monit, on real hosts in the same run (BENCHMARKS.md, "Time to recovery (#8)"). Run by
//! hand:
//!
//! ```text
//! cargo build --workspace --bins && \
//!   cargo test -p gatemend-tests --test recovery_bench -- --ignored --nocapture
//! ```
//!
//! `RECOVERY_BENCH_RUNS` (default 5) sets the runs per case, `RECOVERY_BENCH_CASES` a comma
//! list of the cases to run (`gatemend-stop,gatemend-kill,monit1-stop,monit1-kill,monit120-kill,
//! monit120-stop`, all by default; the 120 s ones take about 11 minutes each). `apt-get download monit` must work on the outer machine.
//!
//! Two hosts: one runs the gatemend stack (controller outside, agent inside through the deploy
//! unit), the other Debian's monit and no agent. Per run:
//! - `t0` is taken just before the fault command (`systemctl stop php8.2-fpm` or
//!   `systemctl kill --signal=SIGKILL php8.2-fpm`) is run in the host; `t1` when it returned
//!   (`systemctl stop` waits for php-fpm to exit, about 100 ms; `kill` returns at once).
//! - "GET 200" is when the first `GET /index.php` answered 200 after one failed: a request
//!   from outside starts every 10 ms, from just before `t0`, for both systems.
//! - "verified" (gatemend only) is the time stamp of the controller's "Action succeeded and
//!   verified." line: the agent saw the unit active and its socket accepting.
//!
//! gatemend runs with the shipped policies plus one that is `restart-when-service-down` with its
//! guards opened (cooldown, max attempts, storm), so the same host can be broken five times in
//! a row; detection, decision, action and verification are the shipped ones.
//!
//! Monit checks once per cycle, so where in its cycle a fault lands decides most of its time.
//! The faults are spread evenly over the cycle: run `i` of `n` lands at `(i + 0.5) / n` of it,
//! the cycle's start estimated from Monit's (re)start or the previous recovery.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use gatemend_tests::stack::{LogLine, Stack, StackSpec};
use gatemend_tests::testbed::{Fleet, Host, HostSpec, http};

const STOP: &str = "systemctl stop php8.2-fpm";
const KILL: &str = "systemctl kill --signal=SIGKILL php8.2-fpm";
const MONIT_DEBS_INSIDE: &str = "/opt/monit-deb";

/// How an operator watches php-fpm with Monit on Debian.
const MONIT_PHP_FPM: &str = r#"check process php-fpm with pidfile /run/php/php8.2-fpm.pid
  start program = "/usr/bin/systemctl start php8.2-fpm" with timeout 60 seconds
  stop program = "/usr/bin/systemctl stop php8.2-fpm"
  if failed unixsocket /run/php/php8.2-fpm.sock then restart
"#;

/// `restart-when-service-down` (policies/restart.yaml) with guards that let one host be
/// broken again and again; it outranks the shipped one.
const BENCH_POLICY: &str = r#"policies:
  - name: bench-restart-when-service-down
    description: restart-when-service-down, guards opened for the recovery benchmark.
    priority: 1000
    match:
      cause: [upstream_refused, upstream_socket_missing, no_live_upstreams, upstream_connect_timeout, upstream_reset, upstream_premature_close]
      root_cause: [service_down]
    mode: auto
    actions: [restart_unit]
    verify: { timeout: 20s }
    guards:
      cooldown: 1s
      max_attempts: 1000
      attempts_window: 1s
      fleet: { max_concurrent: 2, max_percent: 100 }
"#;

/// One fault and what was seen after it.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Just before the fault command.
    t0: SystemTime,
    /// When the fault command returned.
    t1: SystemTime,
    /// The controller's verified line (gatemend only).
    verified: Option<SystemTime>,
    /// The first 200 after a failure.
    get_200: SystemTime,
    /// gatemend escalated the finding after its verified restart. Counted, not asserted: it
    /// happens in about 1 run of 5 (BENCHMARKS.md, "Time to recovery (#8)") and does not
    /// change the times.
    escalated: bool,
}

fn since(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from)
        .map_or_else(|e| -e.duration().as_secs_f64(), |d| d.as_secs_f64())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// `GET /index.php` every 10 ms from outside, recording when each answer came and its status
/// (0: no HTTP answer).
struct Poller {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(SystemTime, u16)>>>,
    thread: JoinHandle<()>,
}

impl Poller {
    fn start(host: &Host) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (flag, out) = (Arc::clone(&stop), Arc::clone(&samples));
        let addr = SocketAddr::from((host.host_addr(), 80));
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let next = Instant::now() + Duration::from_millis(10);
                let status = http::get(addr, "/index.php").map_or(0, |r| r.status);
                out.lock().unwrap().push((SystemTime::now(), status));
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        });
        Poller {
            stop,
            samples,
            thread,
        }
    }

    /// The first 200 after a failed answer at or after `t0`.
    fn recovered_at(&self, t0: SystemTime) -> Option<SystemTime> {
        let samples = self.samples.lock().unwrap();
        let failed = samples.iter().position(|&(t, s)| t >= t0 && s != 200)?;
        samples[failed..]
            .iter()
            .find(|&&(_, s)| s == 200)
            .map(|&(t, _)| t)
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
    }
}

/// Waits until `done` says yes or the deadline passes.
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Runs `fault` in `host` while polling; returns the run once a 200 came back after a failure
/// and `also_done` agrees.
fn play(host: &Host, fault: &str, timeout: Duration, mut also_done: impl FnMut() -> bool) -> Run {
    let poller = Poller::start(host);
    // Let the poller's first request go out, so the fault meets traffic at once.
    std::thread::sleep(Duration::from_millis(20));
    let t0 = SystemTime::now();
    host.sh(fault).unwrap();
    let t1 = SystemTime::now();
    let back = wait_until(timeout, || poller.recovered_at(t0).is_some() && also_done());
    let get_200 = poller.recovered_at(t0);
    poller.stop();
    assert!(
        back,
        "{}: PHP not served again within {timeout:?}",
        host.name()
    );
    Run {
        t0,
        t1,
        verified: None,
        get_200: get_200.expect("recovered"),
        escalated: false,
    }
}

fn gatemend_runs(stack: &Stack, fault: &str, runs: usize) -> Vec<Run> {
    let host = &stack.hosts()[0];
    let name = host.name();
    let controller = stack.controller().unwrap();
    (0..runs)
        .map(|i| {
            let from = controller.log().lines().count();
            let find = |what: &str| {
                controller
                    .log()
                    .lines()
                    .skip(from)
                    .map(LogLine::new)
                    .find(|l| l.says(what) && l.field("host").as_deref() == Some(name.as_str()))
                    .map(|l| l.time().expect("a time stamp"))
            };
            let mut run = play(host, fault, Duration::from_secs(60), || {
                find("Action succeeded and verified.").is_some()
            });
            run.verified = find("Action succeeded and verified.");
            // The next fault must be a new finding: wait until this one is resolved.
            assert!(
                wait_until(Duration::from_secs(60), || find("Finding resolved.")
                    .is_some()),
                "run {i}: finding not resolved; controller log:\n{}",
                controller.log()
            );
            run.escalated = find("Escalated to a human.").is_some();
            std::thread::sleep(Duration::from_secs(1));
            run
        })
        .collect()
}

/// Debian's monit package, downloaded on the outer machine (the hosts have no network).
fn download_monit(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let status = Command::new("apt-get")
        .args(["download", "monit"])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "apt-get download monit: {status}");
    dir.to_path_buf()
}

fn install_monit(host: &Host) {
    host.sh(&format!(
        "DEBIAN_FRONTEND=noninteractive dpkg -i {MONIT_DEBS_INSIDE}/*.deb"
    ))
    .unwrap();
    host.write("/etc/monit/conf.d/php-fpm", MONIT_PHP_FPM)
        .unwrap();
}

/// Sets Monit's cycle and restarts it; returns when it (re)started, which is when its first
/// check runs.
fn restart_monit(host: &Host, cycle_secs: u64) -> SystemTime {
    host.sh(&format!(
        "sed -i 's/^set daemon .*/set daemon {cycle_secs}/' /etc/monit/monitrc && monit -t && systemctl restart monit"
    ))
    .unwrap();
    let at = SystemTime::now();
    assert_eq!(
        host.unit_property("monit.service", "ActiveState").unwrap(),
        "active"
    );
    at
}

fn monit_runs(host: &Host, cycle_secs: u64, fault: &str, runs: usize) -> Vec<Run> {
    let cycle = Duration::from_secs(cycle_secs);
    // php-fpm settles for at least this long between a recovery and the next fault.
    let settle = Duration::from_secs(3);
    let mut cycle_start = restart_monit(host, cycle_secs);
    (0..runs)
        .map(|i| {
            let phase = cycle.mul_f64((i as f64 + 0.5) / runs as f64);
            let mut at = cycle_start + phase;
            while at < cycle_start + settle {
                at += cycle;
            }
            if let Ok(wait) = at.duration_since(SystemTime::now()) {
                std::thread::sleep(wait);
            }
            let run = play(host, fault, cycle * 2 + Duration::from_secs(60), || true);
            eprintln!(
                "  monit {cycle_secs}s {fault}: run {i}: fault at {:.2} of the cycle, GET 200 after {:.3} s",
                phase.as_secs_f64() / cycle.as_secs_f64(),
                since(run.t0, run.get_200)
            );
            // Monit's next cycle starts about when it finished the restart.
            cycle_start = run.get_200;
            run
        })
        .collect()
}

fn row(case: &str, runs: &[Run]) -> String {
    let col = |f: &dyn Fn(&Run) -> Option<f64>| {
        let v: Vec<f64> = runs.iter().filter_map(f).collect();
        if v.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.3}", median(v))
        }
    };
    let each: Vec<String> = runs
        .iter()
        .map(|r| format!("{:.3}", since(r.t0, r.get_200)))
        .collect();
    let escalated = if runs.iter().any(|r| r.verified.is_some()) {
        format!(
            "{}/{}",
            runs.iter().filter(|r| r.escalated).count(),
            runs.len()
        )
    } else {
        "-".to_owned()
    };
    format!(
        "| {case} | {} | {} | {} | {} | {} | {} | {} | {escalated} |",
        runs.len(),
        col(&|r| Some(since(r.t0, r.t1))),
        col(&|r| r.verified.map(|v| since(r.t0, v))),
        col(&|r| r.verified.map(|v| since(r.t1, v))),
        col(&|r| Some(since(r.t0, r.get_200))),
        col(&|r| Some(since(r.t1, r.get_200))),
        each.join(", ")
    )
}

#[test]
#[ignore = "a benchmark: run by hand with --ignored --nocapture"]
fn time_from_php_fpm_fault_to_recovery_gatemend_and_monit() {
    let runs: usize = std::env::var("RECOVERY_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let cases = std::env::var("RECOVERY_BENCH_CASES").unwrap_or_else(|_| {
        "gatemend-stop,gatemend-kill,monit1-stop,monit1-kill,monit120-kill,monit120-stop".to_owned()
    });
    let wanted = |case: &str| cases.split(',').any(|c| c.trim() == case);
    let scratch =
        std::env::temp_dir().join(format!("gatemend-recovery-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);

    // The shipped policies plus the benchmark's.
    let policies = scratch.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, policies.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(policies.join("zz-bench.yaml"), BENCH_POLICY).unwrap();

    let mut rows = Vec::new();
    if wanted("gatemend-stop") || wanted("gatemend-kill") {
        let mut spec = StackSpec::shipped(1);
        spec.policies = policies.clone();
        let stack = Stack::start(&spec).unwrap();
        for (case, fault) in [("gatemend-stop", STOP), ("gatemend-kill", KILL)] {
            if wanted(case) {
                let r = gatemend_runs(&stack, fault, runs);
                rows.push(row(&format!("gatemend, `{fault}`"), &r));
                eprintln!("{}", rows.last().unwrap());
            }
        }
    }
    let monit_cases = [
        ("monit1-stop", 1, STOP),
        ("monit1-kill", 1, KILL),
        ("monit120-kill", 120, KILL),
        ("monit120-stop", 120, STOP),
    ];
    if monit_cases.iter().any(|(c, _, _)| wanted(c)) {
        let debs = download_monit(&scratch.join("debs"));
        let fleet = Fleet::boot(1, &HostSpec::default().bind_ro(debs, MONIT_DEBS_INSIDE)).unwrap();
        let host = &fleet.hosts()[0];
        install_monit(host);
        for (case, cycle, fault) in monit_cases {
            if wanted(case) {
                let r = monit_runs(host, cycle, fault, runs);
                rows.push(row(&format!("Monit `set daemon {cycle}`, `{fault}`"), &r));
                eprintln!("{}", rows.last().unwrap());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);

    println!();
    println!("Medians in seconds. t0: just before the fault command; t1: when it returned.");
    println!();
    println!(
        "| case | runs | command took | t0 -> verified | t1 -> verified | t0 -> GET 200 | t1 -> GET 200 | each run, t0 -> GET 200 | escalated after verified |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for row in &rows {
        println!("{row}");
    }
    assert!(
        !rows.is_empty(),
        "no case selected by RECOVERY_BENCH_CASES={cases}"
    );
}
