//! Figures, not a pass/fail test: the time from request received to verified for each action
//! on a real host, median of 10 (BENCHMARKS.md, "Actions (#6)"). Run by hand:
//!
//! ```text
//! cargo build -p gatemend-agent && \
//!   cargo test -p gatemend-tests --test act_bench -- --ignored --nocapture
//! ```
//!
//! The time is the agent's own (`elapsed_ms` in `gatemend-agent act`'s output): from the
//! request entering the runner to its verified outcome, process start-up excluded.

mod act_support;

use act_support::{PHP_SOCKET, PHP_UNIT, act, boot};

const RUNS: usize = 10;

#[test]
#[ignore = "a benchmark: run by hand with --ignored --nocapture"]
fn time_from_request_to_verified_per_action() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    let mut rows = Vec::new();
    let mut measure = |name: &str, args: &[&str], before: &dyn Fn()| {
        let mut times: Vec<u64> = (0..RUNS)
            .map(|_| {
                before();
                let acted = act(host, args);
                assert_eq!(acted.status(), "succeeded", "{acted}");
                acted.json["elapsed_ms"].as_u64().unwrap()
            })
            .collect();
        times.sort_unstable();
        let median = (times[RUNS / 2 - 1] + times[RUNS / 2]) as f64 / 2.0;
        rows.push(format!(
            "| {name} | {median:.1} | {} | {} |",
            times[0],
            times[RUNS - 1]
        ));
    };
    // systemd's start limit (5 starts in 10 s) would stop the tenth start; reset it between
    // runs, outside the measured time.
    let reset = || {
        host.exec(&["systemctl", "reset-failed", PHP_UNIT]).unwrap();
    };
    measure(
        "restart_unit php8.2-fpm",
        &["restart_unit", "--unit", PHP_UNIT],
        &reset,
    );
    measure(
        "start_unit php8.2-fpm (stopped)",
        &["start_unit", "--unit", PHP_UNIT],
        &|| {
            reset();
            host.exec(&["systemctl", "stop", PHP_UNIT]).unwrap();
        },
    );
    measure(
        "fix_socket_ownership (root:root 0600)",
        &["fix_socket_ownership", "--socket", PHP_SOCKET],
        &|| {
            host.sh(&format!(
                "chown root:root {PHP_SOCKET} && chmod 600 {PHP_SOCKET}"
            ))
            .unwrap();
        },
    );
    measure("reload_nginx", &["reload_nginx"], &|| {});
    measure("escalate", &["escalate"], &|| {});
    println!("| action | median ms | min ms | max ms |");
    println!("| --- | --- | --- | --- |");
    for row in rows {
        println!("{row}");
    }
}
